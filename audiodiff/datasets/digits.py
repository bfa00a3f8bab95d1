"""Spoken digits: an offline SC09 analogue, "zero".."nine" spoken by espeak-ng.

    python -m audiodiff.datasets.digits --out data/digits --per-digit 2000 --seed 0

Layout of DIR:

    build.json                       parameters and counts; a rerun with the same ones is a no-op
    train.jsonl valid.jsonl test.jsonl
                                     {"path", "label", "word", "speaker"} per line; "path" is
                                     relative to DIR (audiodiff.manifest.load_manifest resolves it)
    wavs/<split>/<label>/<speaker>_<k>.wav
                                     1 s, 22,050 Hz, mono, 16-bit PCM, the word centred

A speaker is an English espeak-ng voice plus a voice variant ("en-us+f3") with its own base
rate, pitch and pitch range; each clip jitters those a little. Splits are disjoint in speakers
(about 80/10/10). Same --per-digit and --seed give the same bytes for any --workers.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from ._common import (SPLITS, DatasetError, build_parser, check_seed, check_workers, finish_build, finished_build,
                      is_count, package_version, pool_context, run_cli, split_sizes, start_build,
                      write_splits, write_wav)
from .espeak import Espeak

__all__ = ["DIGITS", "SAMPLE_RATE", "CLIP_SAMPLES", "VOICES", "VARIANTS", "SPLITS",
           "DigitsError", "build_digits", "main"]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 22050  # espeak-ng's native rate, which is also the project's default audio rate
CLIP_SAMPLES = SAMPLE_RATE  # exactly 1 s, as in SC09

# English accents shipped with espeak-ng (espeak-ng-data/lang/gmw/).
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
          "en-029", "en-us-nyc")
# Variants (espeak-ng-data/voices/!v/) that still sound like a person saying a digit. Left out:
# the robotic, long-echo and "demonic" ones (robosoft*, UniRobot, anikaRobot, RicishayMax*,
# Marco, Demonic, Lee, kaukovalta, norbert, announcer, david), whose digits a template matcher
# confused far more often, the test variant "fast", and "Mr serious" (a space in its name).
VARIANTS = (
    # formant synthesiser, lower pitch
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Andy", "AnxiousAndy", "Denis",
    "Diogo", "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Mario", "Michael", "Mike", "Nguyen",
    "Storm", "Tweaky", "antonio", "boris", "croak", "ed", "grandpa", "gustave", "iven", "iven2",
    "iven3", "iven4", "john", "marcelo", "max", "michel", "miguel", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "sandro", "shelby", "travis", "victor", "zac",
    # formant synthesiser, higher pitch
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda",
    "grandma", "linda", "steph", "steph2", "steph3",
    # Klatt synthesiser
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "Reed", "adam", "benjamin",
    "caleb", "edward", "edward2", "mike2",
    # whispered
    "whisper", "whisperf",
)

FORMAT_VERSION = 2  # bump when the same parameters would give different audio (2: noise floor)
_BUILDER = "audiodiff.datasets.digits"

# espeak-ng parameter ranges (speak_lib.h): rate in words per minute 80..450, pitch and
# range 0..100 around the variant's own (50 = unchanged, each end one octave away).
_BASE_RATE = (135.0, 195.0)
_BASE_PITCH = (30.0, 70.0)
_BASE_RANGE = (25.0, 80.0)
_JITTER_RATE = 0.08  # relative, per clip
_JITTER_PITCH = 4.0
_JITTER_RANGE = 6.0
_PEAK_DBFS = (-7.0, -1.0)  # peak level after normalising, drawn per clip
# A faint background noise floor (RMS in dBFS, drawn per clip), as every real recording has:
# SC09's clips carry room and microphone noise. Without it 60% of samples would be exact
# digital zeros, where log-domain measures (log-mel, MR-STFT, LSD) only compare floors.
_NOISE_DBFS = (-70.0, -55.0)
_VOLUME = 60  # below espeak's 100, whose louder variants clip inside the synthesiser

_MAX_SPEECH = int(0.95 * CLIP_SAMPLES)  # leave some silence on both sides
_TRIM_DB = -45.0  # frames this far below the loudest frame are silence
_TRIM_HOP = 128
_TRIM_PAD = 110  # ~5 ms kept on each side of the speech
_FADE = 441  # 20 ms fade-out when a word must be cropped
_MAX_TRIES = 3  # re-syntheses at a faster rate before cropping


class DigitsError(DatasetError):
    """A one-line, user-facing reason the digits build cannot go on."""


# ----------------------------------------------------------------------------- espeak-ng

def _espeak_paths() -> tuple[str, str]:
    """(shared library, espeak-ng-data) from the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise DigitsError('espeakng-loader is not installed; run: pip install -e ".[digits]"') from None
    lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    if not Path(lib).is_file():
        raise DigitsError(f"espeakng-loader has no espeak-ng library at {lib}; reinstall it: "
                          'pip install --force-reinstall -e ".[digits]"')
    # espeak_SetVoiceByName ignores an unknown variant silently, so check them here: a missing
    # one would otherwise give clips labelled with a speaker that did not say them.
    missing = [v for v in VARIANTS if not (Path(data) / "voices" / "!v" / v).is_file()]
    if missing:
        raise DigitsError(f"espeak-ng data at {data} lacks voice variants {missing}; "
                          'upgrade it: pip install -U -e ".[digits]"')
    return lib, data


# ----------------------------------------------------------------------------- one clip

def _speech_span(wave: np.ndarray) -> tuple[int, int]:
    """[start, end) of the part louder than _TRIM_DB below the loudest frame, padded."""
    x = wave.astype(np.float64)
    n_frames = max(1, math.ceil(len(x) / _TRIM_HOP))
    x = np.pad(x, (0, n_frames * _TRIM_HOP - len(x)))
    energy = (x.reshape(n_frames, _TRIM_HOP) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (_TRIM_DB / 10))
    if energy.max() == 0 or len(loud) == 0:
        return 0, 0
    start = max(0, loud[0] * _TRIM_HOP - _TRIM_PAD)
    end = min(len(wave), (loud[-1] + 1) * _TRIM_HOP + _TRIM_PAD)
    return start, end


def _render_clip(engine: Espeak, clip: dict) -> dict:
    """Synthesise one clip into clip["path"] (atomically); return what happened."""
    rate = clip["rate"]
    for attempt in range(_MAX_TRIES + 1):
        raw = engine.say(clip["word"], clip["speaker"], rate, clip["pitch"], clip["range"],
                         clip["noise_seed"])
        start, end = _speech_span(raw)
        speech = raw[start:end].astype(np.float64)
        if len(speech) <= _MAX_SPEECH or attempt == _MAX_TRIES or rate >= 450:
            break
        # Too long for 1 s: say it faster rather than cut the word.
        rate = min(450, math.ceil(rate * len(speech) / _MAX_SPEECH * 1.05))
    if len(speech) == 0:
        raise RuntimeError(f"espeak-ng gave silence for {clip['word']!r} with voice {clip['speaker']!r}")
    cropped = len(speech) > _MAX_SPEECH
    if cropped:  # keep the start of the word, which carries its identity, and fade out
        speech = speech[:_MAX_SPEECH]
        speech[-_FADE:] *= np.linspace(1.0, 0.0, _FADE)
    out = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    offset = (CLIP_SAMPLES - len(speech)) // 2
    out[offset:offset + len(speech)] = speech
    out *= 10 ** (clip["peak_dbfs"] / 20) / np.abs(out).max()
    out += 10 ** (clip["noise_dbfs"] / 20) * np.random.default_rng(clip["noise_seed"]).standard_normal(CLIP_SAMPLES)
    pcm = np.round(out * 32767).astype(np.int16)

    write_wav(Path(clip["path"]), pcm, SAMPLE_RATE)
    return {"resynthesised": rate != clip["rate"], "cropped": cropped}


# ----------------------------------------------------------------------------- workers
#
# espeak-ng carries hidden state from one utterance to the next (glottal phase, pitch flutter,
# filter memories), so the same parameters give different samples depending on what was said
# before in that process. Each speaker is therefore rendered, clips in plan order, by a process
# whose espeak-ng has never spoken: a child forked from a worker that only initialised it, or
# (without fork) a fresh pool process. That makes the bytes independent of --workers.

_ENGINE: Espeak | None = None
_ESPEAK_PATHS: tuple[str, str] | None = None


def _init_worker(lib_path: str, data_path: str) -> None:
    global _ENGINE, _ESPEAK_PATHS
    _ESPEAK_PATHS = (lib_path, data_path)
    if hasattr(os, "fork"):
        _ENGINE = Espeak(lib_path, data_path, SAMPLE_RATE, _VOLUME)  # initialised, unused here: children speak


def _render_speaker_here(clips: list[dict]) -> dict:
    assert _ESPEAK_PATHS is not None  # both set by _init_worker
    engine = _ENGINE if hasattr(os, "fork") else Espeak(*_ESPEAK_PATHS, SAMPLE_RATE, _VOLUME)
    assert engine is not None
    reports = [_render_clip(engine, clip) for clip in clips]
    return {"clips": len(reports), "resynthesised": sum(r["resynthesised"] for r in reports),
            "cropped": sum(r["cropped"] for r in reports)}


def _render_speaker(clips: list[dict]) -> dict:
    """Render one speaker's clips in a process with a fresh espeak-ng; return counts."""
    if not hasattr(os, "fork"):  # the pool gives every task a new process (maxtasksperchild=1)
        return _render_speaker_here(clips)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into the pool's code
        status = 1
        try:
            os.close(read_fd)
            report = _render_speaker_here(clips)
            status = 0
        except BaseException as exc:  # noqa: BLE001 - the parent re-raises it
            report = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            os.write(write_fd, json.dumps(report).encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    report = json.loads(data) if data else {"error": f"renderer exited with status {status}"}
    if "error" in report:
        raise RuntimeError(f"speaker {clips[0]['speaker']}: {report['error']}")
    return report


# ----------------------------------------------------------------------------- plan

def _plan(per_digit: int, seed: int) -> list[dict]:
    """Every clip with all its random parameters, drawn here so workers only render.

    Speakers: min(per_digit, all voice/variant pairs), so each speaker says every digit
    (once at SC09 scale, several times when per_digit exceeds the speaker count) and every
    split has all ten digits. Uses Python's `random`, whose streams are stable across versions.
    """
    rng = random.Random(seed)
    pairs = [f"{voice}+{variant}" for voice in VOICES for variant in VARIANTS]
    rng.shuffle(pairs)
    n = min(per_digit, len(pairs))
    names = pairs[:n]
    n_train, n_valid, _ = split_sizes(n)
    split_of = {name: SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_valid else SPLITS[2]
                for i, name in enumerate(names)}
    base = {name: (rng.uniform(*_BASE_RATE), rng.uniform(*_BASE_PITCH), rng.uniform(*_BASE_RANGE))
            for name in names}

    clips = []
    for label, word in enumerate(DIGITS):
        for i in range(per_digit):
            # Train speakers come first, so they take the extra clips when n does not divide.
            speaker = names[i % n]
            rate, pitch, pitch_range = base[speaker]
            split = split_of[speaker]
            clips.append({
                "split": split, "label": label, "word": word, "speaker": speaker,
                "rate": round(rate * (1 + rng.uniform(-_JITTER_RATE, _JITTER_RATE))),
                "pitch": min(100, max(0, round(pitch + rng.uniform(-_JITTER_PITCH, _JITTER_PITCH)))),
                "range": min(100, max(0, round(pitch_range + rng.uniform(-_JITTER_RANGE, _JITTER_RANGE)))),
                "peak_dbfs": round(rng.uniform(*_PEAK_DBFS), 3),
                "noise_dbfs": round(rng.uniform(*_NOISE_DBFS), 3),
                "noise_seed": rng.randrange(1, 2**31 - 1),
                "relpath": f"wavs/{split}/{label}/{speaker}_{i // n}.wav",
            })
    return clips


# ----------------------------------------------------------------------------- build

def _check_args(per_digit, seed, workers) -> int:
    if not is_count(per_digit, 1):
        raise DigitsError(f"per_digit must be a whole number >= 1, got {per_digit!r}; "
                          "2000 matches SC09, 2-3 is enough for a smoke test")
    check_seed(seed, DigitsError)
    return check_workers(workers, DigitsError)


def build_digits(out_dir: str | os.PathLike, per_digit: int = 2000, seed: int = 0,
                 workers: int | None = None, verbose: bool = True) -> dict:
    """Build (or resume, or confirm) the spoken-digits set in out_dir; return clips per split."""
    workers = _check_args(per_digit, seed, workers)
    out = Path(out_dir)
    params = {"builder": _BUILDER, "format": FORMAT_VERSION, "per_digit": per_digit, "seed": seed}
    say = print if verbose else (lambda *a, **k: None)

    done = finished_build(out, params, DigitsError, lambda theirs: (
        f"with per_digit={theirs['per_digit']} seed={theirs['seed']} (format {theirs['format']})"))
    if done:
        counts = done["counts"]
        say(f"{out}: already built with per_digit={per_digit} seed={seed} "
            f"({', '.join(f'{s} {counts[s]}' for s in SPLITS)}); nothing to do")
        return counts

    lib_path, data_path = _espeak_paths()
    started = time.time()
    clips = _plan(per_digit, seed)
    start_build(out, params)  # keeps a killed build's finished wavs: only the rest is rendered

    wav_root = out / "wavs"
    for split in SPLITS:
        for label in range(len(DIGITS)):
            (wav_root / split / str(label)).mkdir(parents=True, exist_ok=True)
    by_speaker: dict[str, list[dict]] = {}
    for c in clips:
        by_speaker.setdefault(c["speaker"], []).append({**c, "path": str(out / c["relpath"])})
    # A speaker's clips depend on each other (see _render_speaker), so redo a speaker whole.
    todo = [group for group in by_speaker.values() if not all(Path(c["path"]).is_file() for c in group)]
    n_todo = sum(len(group) for group in todo)

    resynthesised = cropped = 0
    if todo:
        from tqdm import tqdm

        # The pool is made before tqdm so that workers fork from a process without its thread.
        context = pool_context()
        fork = context.get_start_method() == "fork"
        with context.Pool(min(workers, len(todo)), initializer=_init_worker,
                          initargs=(lib_path, data_path),
                          maxtasksperchild=None if fork else 1) as pool:
            with tqdm(total=len(clips), initial=len(clips) - n_todo, unit="clip",
                      desc="digits", disable=not verbose) as bar:
                for report in pool.imap_unordered(_render_speaker, todo):
                    bar.update(report["clips"])
                    resynthesised += report["resynthesised"]
                    cropped += report["cropped"]

    counts = write_splits(out, clips, order=lambda c: (c["label"], c["speaker"], c["relpath"]),
                          row=lambda c: {"path": c["relpath"], "label": c["label"], "word": c["word"],
                                         "speaker": c["speaker"]})
    speakers = {split: len({c["speaker"] for c in clips if c["split"] == split}) for split in SPLITS}
    record = {**params, "complete": True, "sample_rate": SAMPLE_RATE, "clip_samples": CLIP_SAMPLES,
              "counts": counts, "speakers": speakers, "espeakng_loader": package_version("espeakng-loader"),
              "paths": "relative to this directory"}
    finish_build(out, record)

    seconds = time.time() - started
    say(f"{out}: {', '.join(f'{s} {counts[s]} clips/{speakers[s]} speakers' for s in SPLITS)}; "
        f"{sum(speakers.values())} speakers, {n_todo} clips rendered in {seconds:.1f} s "
        f"({resynthesised} said faster to fit 1 s, {cropped} cropped)")
    if speakers["test"] == 0:
        say(f"note: per_digit={per_digit} gives too few speakers for a valid/test split; use >= 3")
    return counts


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = build_parser("digits", "Build the spoken-digits set (an SC09 analogue) with espeak-ng.")
    parser.add_argument("--per-digit", type=int, default=2000,
                        help="clips per digit (default 2000, about SC09's size)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all CPU cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    # Call through the imported module, not __main__, so worker processes can find the functions.
    from audiodiff.datasets import digits

    # Ctrl-C keeps the finished wavs; the same command picks up from them.
    return run_cli(parser, argv, lambda args: digits.build_digits(args.out, args.per_digit, args.seed, args.workers,
                                                                  verbose=not args.quiet),
                   interrupted="run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
