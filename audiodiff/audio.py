"""The one audio definition: file I/O, mono mixdown, resampling, the mel spectrogram.

Data, training, vocoders and evaluation all import this module; nothing else computes
a mel. The default `AudioConfig` is the standard HiFi-GAN mel (22,050 Hz, n_fft 1024,
hop 256, window 1024, 80 Slaney mels, fmin 0, fmax 8000, natural log with floor 1e-5),
so pretrained HiFi-GAN vocoders apply without retraining.

Frame count: `MelSpec` uses a centred STFT with reflect padding (as librosa and
torchaudio do by default), so a waveform of T samples gives F = 1 + T // hop_length
frames for an even n_fft (`AudioConfig.num_frames(T)`, which also covers odd ones: 1 + (T - 1)
// hop_length), and F frames come back as (F - 1) * hop_length
samples from an STFT inverse (`AudioConfig.num_samples(F)`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn

from .install import torchaudio_functional

NORMALIZATIONS = ("minmax", "none")


class AudioConfigError(ValueError):
    """An AudioConfig field broke one of its rules; the message names field, value and rule."""


@dataclass(frozen=True)
class AudioConfig:
    """Sample rate, STFT, mel and normalisation settings; stored in every checkpoint.

    normalization="minmax" maps log-mel values from [log(log_floor), log_max] to [-1, 1]
    (silence is -1), the scale diffusion models like; "none" keeps natural-log values.
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5
    normalization: str = "minmax"
    log_max: float = 2.5

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> None:
            raise AudioConfigError(
                f"AudioConfig.{name}={getattr(self, name)!r} is invalid: {rule}")

        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                bad(name, "must be an integer")
            if value <= 0:
                bad(name, "must be > 0")
        if self.win_length > self.n_fft:
            bad("win_length", f"must be <= n_fft ({self.n_fft})")
        if self.n_mels > self.n_fft // 2 + 1:
            bad("n_mels", f"must be <= n_fft // 2 + 1 ({self.n_fft // 2 + 1}) frequency bins")
        if not (isinstance(self.fmin, (int, float)) and math.isfinite(self.fmin)) or self.fmin < 0:
            bad("fmin", "must be a finite number >= 0")
        nyquist = self.sample_rate / 2
        if not (isinstance(self.fmax, (int, float)) and math.isfinite(self.fmax)):
            bad("fmax", "must be a finite number")
        if self.fmax > nyquist:
            bad("fmax", f"must be <= Nyquist (sample_rate / 2 = {nyquist:g})")
        if self.fmax <= self.fmin:
            bad("fmax", f"must be > fmin ({self.fmin:g})")
        if not (isinstance(self.log_floor, (int, float)) and 0 < self.log_floor < 1):
            bad("log_floor", "must be in (0, 1), e.g. 1e-5")
        if self.normalization not in NORMALIZATIONS:
            bad("normalization", f"must be one of {', '.join(NORMALIZATIONS)}")
        if not (isinstance(self.log_max, (int, float)) and self.log_max > math.log(self.log_floor)):
            bad("log_max", f"must be > log(log_floor) = {math.log(self.log_floor):.3f}")

    @classmethod
    def from_dict(cls, values: dict) -> "AudioConfig":
        """Build from a plain dict (a Hydra group or a stored config); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"_target_"})
        if unknown:
            raise AudioConfigError(
                f"unknown AudioConfig key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """A short stable hash: feature caches made with another config are invalid."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def num_frames(self, num_samples: int) -> int:
        """Mel frames F for T samples: F = 1 + T // hop_length (centred STFT; for an odd
        n_fft, whose centring pads n_fft - 1 samples, F = 1 + (T - 1) // hop_length)."""
        return 1 + (int(num_samples) - self.n_fft % 2) // self.hop_length

    def num_samples(self, num_frames: int) -> int:
        """Samples a vocoder gives back for F frames: F * hop_length."""
        return int(num_frames) * self.hop_length

    @property
    def data_range(self) -> tuple[float, float]:
        """The range normalised log-mels lie in: [-1, 1] for minmax, [log(log_floor), log_max] for none."""
        return (-1.0, 1.0) if self.normalization == "minmax" else (math.log(self.log_floor), self.log_max)

    @property
    def silence(self) -> float:
        """The normalised log-mel value of silence (what padding uses): the low end of data_range."""
        return self.data_range[0]

    def describe_mismatch(self, other: "AudioConfig", ours: str = "model", theirs: str = "vocoder") -> str | None:
        """None when the mel definitions agree, else a one-line description naming both values."""
        diffs = [f"{f.name}: {ours} {getattr(self, f.name)!r} vs {theirs} {getattr(other, f.name)!r}"
                 for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]
        return "; ".join(diffs) if diffs else None


# --------------------------------------------------------------------------- file I/O

class AudioFileError(ValueError):
    """A file could not be used as audio; the message is one line naming the file and why."""


def _os_path(path: Path) -> bytes:
    """The file name as bytes: soundfile encodes str names strictly, so names that are not
    valid UTF-8 (held as surrogate escapes) would fail to open."""
    return os.fsencode(path)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file without reading samples (raises AudioFileError)."""
    path = Path(path)
    try:
        return sf.info(_os_path(path))
    except Exception as e:  # soundfile raises several types for broken files
        raise AudioFileError(f"{path}: cannot decode audio ({_one_line(e)})") from None


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


# torchaudio's resampler builds a [new, orig + 2 * width] kernel from the reduced rates: quadratic,
# so a file at 22,051 Hz -> 22,050 Hz would take 8 GB. Above this many kernel entries, use a
# polyphase FIR (scipy's resample_poly), linear in the rates.
MAX_SINC_KERNEL = 4_000_000


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis: torchaudio's windowed-sinc resampler, or
    for rates whose ratio reduces to large numbers (e.g. 22,051 -> 22,050 Hz) a Kaiser-window
    polyphase filter. T samples become ceil(T * new_rate / orig_rate)."""
    if orig_rate == new_rate:
        return wave
    g = math.gcd(int(orig_rate), int(new_rate))
    down, up = int(orig_rate) // g, int(new_rate) // g
    if up * (down + 2 * 6 * down // min(up, down) + 1) <= MAX_SINC_KERNEL:
        AF = torchaudio_functional()

        return AF.resample(wave, down, up)
    from scipy.signal import resample_poly

    out = resample_poly(wave.detach().cpu().double().numpy(), up, down, axis=-1)
    return torch.from_numpy(out).to(device=wave.device, dtype=wave.dtype)


def fit_wave(wave, sample_rate: int, config: AudioConfig) -> torch.Tensor:
    """A waveform (any shape, flattened) as MelSpec(config) takes it: float32 [T] at config.sample_rate,
    zero-padded to n_fft samples when too short for one STFT frame."""
    wave = torch.as_tensor(wave).float().reshape(-1)
    if sample_rate != config.sample_rate:
        wave = resample(wave, sample_rate, config.sample_rate)
    if wave.shape[-1] <= config.n_fft // 2:
        wave = torch.nn.functional.pad(wave, (0, config.n_fft - wave.shape[-1]))
    return wave


def load_audio(path: str | Path, sample_rate: int | None = None, *,
               max_seconds: float | None = None) -> torch.Tensor:
    """Read a file as a mono float32 waveform [T] in [-1, 1], resampled to `sample_rate`.

    Any channel count is averaged to mono; integer PCM is scaled by soundfile. Long files
    are read in blocks and mixed down block by block, so a multi-channel hour is never
    held twice in memory. `max_seconds` reads only the beginning.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    info = audio_info(path)
    if info.frames <= 0:
        raise AudioFileError(f"{path}: no samples")
    frames = info.frames if max_seconds is None else min(info.frames, int(max_seconds * info.samplerate))
    out = np.empty(frames, dtype=np.float32)
    pos = 0
    try:
        with sf.SoundFile(_os_path(path)) as f:
            for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True, frames=frames):
                n = block.shape[0]
                out[pos:pos + n] = block.mean(axis=1)
                pos += n
    except Exception as e:
        raise AudioFileError(f"{path}: cannot decode audio ({_one_line(e)})") from None
    if pos == 0:
        raise AudioFileError(f"{path}: no samples could be read (truncated data?)")
    wave = torch.from_numpy(out[:pos])
    if sample_rate is not None and info.samplerate != sample_rate:
        wave = resample(wave, info.samplerate, sample_rate)
    return wave


def save_audio(path: str | Path, wave: torch.Tensor | np.ndarray, sample_rate: int,
               *, subtype: str | None = None) -> Path:
    """Write a mono [T] (or [C, T]) waveform; the format follows the suffix (wav, flac, ogg).

    Never clips silently: a peak above full scale is scaled down to 0.99 with a warning.
    Written to a temporary file and renamed, so a crash never leaves a half-written clip.
    """
    path = Path(path)
    data = wave.detach().float().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave, np.float32)
    if data.ndim == 2:
        data = data.T  # soundfile wants [T, C]
    elif data.ndim != 1:
        raise ValueError(f"save_audio({path}): wave must be [T] or [C, T], got shape {tuple(data.shape)}")
    if not np.isfinite(data).all():
        raise ValueError(f"save_audio({path}): wave has NaN or Inf samples; refusing to write")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 1.0:
        warnings.warn(f"{path}: peak {peak:.3f} exceeds full scale; scaled down to 0.99 instead of clipping")
        data = data * (0.99 / peak)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_audio({path}): unknown suffix {path.suffix!r}; use .wav, .flac or .ogg")
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), data, sample_rate, format=fmt, subtype=subtype)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- mel spectrogram

def loudness(waves) -> dict:
    """Level statistics of clips ([T] tensors or arrays, or [B, T]) as they are, before any scaling:
    over_full_scale, the share of clips whose peak exceeds 1.0; peak_db and rms_db, the mean per-clip
    peak and RMS in dBFS (the loudness checks of egs/digits, generated against real clips)."""
    peaks, rms = [], []
    for w in waves:
        w = torch.as_tensor(w).double().reshape(-1)
        peaks.append(float(w.abs().max()) if w.numel() else 0.0)
        rms.append(float(w.pow(2).mean().sqrt()) if w.numel() else 0.0)
    if not peaks:
        return {"over_full_scale": None, "peak_db": None, "rms_db": None}

    def db(v: float) -> float:
        return 20 * math.log10(max(v, 1e-10))
    return {"over_full_scale": sum(p > 1.0 for p in peaks) / len(peaks),
            "peak_db": sum(db(p) for p in peaks) / len(peaks), "rms_db": sum(db(r) for r in rms) / len(rms)}


def mel_filterbank(config: AudioConfig) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised mel filters [n_mels, n_fft // 2 + 1] (librosa's default)."""
    AF = torchaudio_functional()

    fb = AF.melscale_fbanks(config.n_fft // 2 + 1, float(config.fmin), float(config.fmax),
                            config.n_mels, config.sample_rate, norm="slaney", mel_scale="slaney")
    return fb.T.contiguous()  # [n_mels, n_freq]


class MelSpec(nn.Module):
    """waveform [B, T] -> normalised log-mel [B, n_mels, F], F = 1 + T // hop_length.

    Magnitude (power 1) STFT with a Hann window, centred with reflect padding, Slaney
    mel filters, natural log with a floor, then the config's normalisation. Runs on any
    device and dtype-safe: the STFT is always computed in float32.
    """

    window: torch.Tensor  # buffers, registered in __init__
    mel_basis: torch.Tensor
    mel_pinv: torch.Tensor

    def __init__(self, config: AudioConfig | None = None) -> None:
        super().__init__()
        self.config = config or AudioConfig()
        c = self.config
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
        fb = mel_filterbank(c)
        self.register_buffer("mel_basis", fb, persistent=False)  # [n_mels, n_freq]
        self.register_buffer("mel_pinv", torch.linalg.pinv(fb), persistent=False)  # [n_freq, n_mels]
        self.log_min = math.log(c.log_floor)

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        """Linear magnitude spectrogram [B, n_freq, F]."""
        c = self.config
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"MelSpec expects a waveform [B, T] or [T], got shape {tuple(wave.shape)}")
        if wave.shape[-1] <= c.n_fft // 2:
            raise ValueError(f"MelSpec: a waveform of {wave.shape[-1]} samples is too short for "
                             f"n_fft={c.n_fft} (needs more than n_fft // 2 = {c.n_fft // 2} samples)")
        spec = torch.stft(wave.float(), c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                          window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return spec.abs()  # [B, n_freq, F]

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Natural-log mel [B, n_mels, F] before normalisation."""
        mel = torch.matmul(self.mel_basis, self.magnitude(wave))  # [B, n_mels, F]
        return torch.log(torch.clamp(mel, min=self.config.log_floor))

    def normalize(self, log_mel: torch.Tensor) -> torch.Tensor:
        if self.config.normalization == "none":
            return log_mel
        return 2.0 * (log_mel - self.log_min) / (self.config.log_max - self.log_min) - 1.0

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel -> natural-log mel (what HiFi-GAN takes)."""
        if self.config.normalization == "none":
            return mel
        return (mel + 1.0) * 0.5 * (self.config.log_max - self.log_min) + self.log_min

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.log_mel(wave))  # [B, n_mels, F]

    def inverse_magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel [B, n_mels, F] -> linear magnitude [B, n_freq, F] for Griffin-Lim.

        Uses the pseudo-inverse of the filterbank, clamped at zero: about 4x faster than
        torchaudio's least-squares InverseMelScale at similar Griffin-Lim quality.
        """
        linear_mel = torch.exp(self.denormalize(mel.float()))
        return torch.clamp(torch.matmul(self.mel_pinv, linear_mel), min=0.0)
