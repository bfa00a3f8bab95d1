"""espeak-ng through ctypes, from the espeakng-loader wheel's library and voices (no apt, no
subprocess): one synchronous synthesiser per process, its output collected by a callback."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME_PARAM, _PITCH, _RANGE = 1, 2, 3, 4
# int (*)(short *wav, int numsamples, espeak_EVENT *events); the events are not needed
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)



def _load_unused(lib_path: str) -> ctypes.CDLL:
    """The espeak-ng library with static state nobody has touched in this process.

    A process forked from one that already used espeak-ng (a notebook, a test) shares that
    instance and its state; a copy under another file name is a separate instance.
    """
    if hasattr(os, "RTLD_NOLOAD"):
        try:
            ctypes.CDLL(lib_path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        except OSError:
            return ctypes.CDLL(lib_path)  # not loaded yet: the usual case
        with tempfile.TemporaryDirectory(prefix="audiodiff-espeak-") as tmp:
            private = Path(tmp) / Path(lib_path).name
            shutil.copyfile(lib_path, private)
            return ctypes.CDLL(str(private))  # stays mapped after the file is removed
    return ctypes.CDLL(lib_path)


class Espeak:
    """espeak-ng in synchronous mode; its state is process-global, so one per process."""

    def __init__(self, lib_path: str, data_path: str, sample_rate: int = 22050, volume: int = 60) -> None:
        lib = _load_unused(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
                                     _INITIALIZE_DONT_EXIT)
        if rate != sample_rate:
            raise RuntimeError(f"espeak_Initialize({data_path}) returned {rate}, "
                               f"expected the sample rate {sample_rate}")
        self.lib, self.volume = lib, int(volume)
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference or ctypes frees it
        lib.espeak_SetSynthCallback(self._callback)
        try:  # some espeak-ng builds draw breath noise from libc rand(); seed it too
            self._srand: Callable[[int], object] | None = ctypes.CDLL(None).srand
        except (OSError, AttributeError):
            self._srand = None

    def _collect(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, 2 * numsamples))
        return 0  # 0 = go on

    def say(self, word: str, voice: str, rate: int, pitch: int, pitch_range: int,
            noise_seed: int) -> np.ndarray:
        """int16 samples of `word`, with espeak's own leading and trailing silence."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_RATE, rate), (_VOLUME_PARAM, self.volume), (_PITCH, pitch),
                             (_RANGE, pitch_range)):
            lib.espeak_SetParameter(param, int(value), 0)
        lib.espeak_ng_SetRandSeed(noise_seed)
        if self._srand is not None:
            self._srand(noise_seed)
        self._chunks = []
        text = word.encode()
        err = lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth({word!r}, voice {voice!r}) failed with code {err}")
        lib.espeak_Synchronize()
        return np.frombuffer(b"".join(self._chunks), dtype=np.int16)
