"""Instrument notes: an offline NSynth analogue, General MIDI notes rendered from a SoundFont.

    python -m audiodiff.datasets.notes --out data/notes --seed 0 --per-class 1500

Every clip is one note of one General MIDI program: note-on at 0 s, note-off (release) at
1.5 s, 2 s in all at 22,050 Hz (NSynth: 3 s held of 4 s at 16 kHz; shorter here to keep
features and training cheap, and at the project's audio rate). Notes are rendered with
TinySoundFont (the `tinysoundfont` wheel) from the TimGM6mb SoundFont that ships inside the
`pretty_midi` wheel, or from --soundfont PATH.

Classes are instrument families: GM program groups of eight (FAMILIES below, NSynth's
eleven families in GM terms). A family's notes are drawn without replacement from all its
(program, pitch, velocity) triples: eight programs, the family's pitch range (MIDI numbers),
and NSynth's five velocities. Renders whose peak is below -60 dBFS are dropped and counted
(TimGM6mb has no sample for some programs at some pitches: those render as silence).
Levels are not normalised, so velocity stays audible: every note gets the same gain
(GAIN_DB) and the few that would still clip are scaled down to just under full scale.

Layout of DIR:

    build.json                       parameters and counts; a rerun with the same ones is a no-op
    train.jsonl valid.jsonl test.jsonl
                                     {"path", "label", "family", "program", "instrument",
                                     "pitch", "velocity"} per line; "path" is relative to DIR
    wavs/<split>/<family>/<program>-<pitch>-<velocity>.wav
                                     2 s, 22,050 Hz, mono, 16-bit PCM

Splits are random and stratified: each family's drawn notes are shuffled and cut 80/10/10,
so every split has every family, and no (program, pitch, velocity) is in two splits
(NSynth instead keeps instruments disjoint; with eight programs a family that would leave one
program to test on). Same --per-class, --seed and SoundFont give the same bytes for any
--workers: every note gets a fresh TinySoundFont synthesiser, which draws no random numbers.

TinySoundFont's wheel declares a dependency on PyAudio (used only for live playback), which
builds only where PortAudio's headers are installed; rendering does not need it, so install
it without dependencies: `pip install -e ".[notes]" && pip install --no-deps tinysoundfont`.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import file_sha256
from ._common import (SPLITS, DatasetError, build_parser, check_seed, check_workers, finish_build, finished_build,
                      is_count, package_version, pool_context, run_cli, split_sizes, start_build,
                      write_splits, write_wav)

__all__ = ["FAMILIES", "VELOCITIES", "SAMPLE_RATE", "CLIP_SAMPLES", "NOTE_OFF_SAMPLES", "SPLITS",
           "NotesError", "build_notes", "default_soundfont", "main"]

SAMPLE_RATE = 22050  # the project's default audio rate
CLIP_SECONDS = 2.0
NOTE_OFF_SECONDS = 1.5  # then 0.5 s of release, NSynth's 3:1 proportion
CLIP_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)
NOTE_OFF_SAMPLES = int(NOTE_OFF_SECONDS * SAMPLE_RATE)
VELOCITIES = (25, 50, 75, 100, 127)  # NSynth's
GAIN_DB = -3.0  # TimGM6mb's loudest notes (bass, brass at velocity 127) peak near +2.4 dBFS
SILENT_PEAK = 1e-3  # -60 dBFS
LIMIT_PEAK = 0.999


@dataclass(frozen=True)
class Family:
    name: str
    first_program: int  # GM programs first_program .. first_program + 7 (0-based)
    lowest: int  # MIDI pitch range played, inclusive: the family's usual range
    highest: int

    @property
    def programs(self) -> range:
        return range(self.first_program, self.first_program + 8)


# GM program groups that match NSynth's families (keyboard, mallet, organ, guitar, bass,
# string, brass, reed, flute, synth_lead, vocal ~ ensemble's choirs). Left out: synth pad
# (slow swells), synth effects, ethnic, percussive and sound effects (not pitched notes).
FAMILIES = (
    Family("piano", 0, 21, 108),
    Family("chromatic_percussion", 8, 36, 96),
    Family("organ", 16, 36, 96),
    Family("guitar", 24, 40, 88),
    Family("bass", 32, 28, 67),
    Family("strings", 40, 36, 96),
    Family("ensemble", 48, 36, 96),
    Family("brass", 56, 40, 84),
    Family("reed", 64, 40, 84),
    Family("pipe", 72, 55, 96),
    Family("synth_lead", 80, 36, 96),
)

FORMAT_VERSION = 1  # bump when the same parameters would give different audio
_BUILDER = "audiodiff.datasets.notes"
_INSTALL = 'pip install -e ".[notes]" && pip install --no-deps tinysoundfont'


class NotesError(DatasetError):
    """A one-line, user-facing reason the notes build cannot go on."""


# ----------------------------------------------------------------------------- synthesis

def default_soundfont() -> Path:
    """TimGM6mb.sf2 inside the installed pretty_midi package (found without importing it)."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise NotesError(f"pretty_midi (which ships the TimGM6mb SoundFont) is not installed; run: {_INSTALL}")
    path = Path(spec.origin).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise NotesError(f"pretty_midi at {path.parent} has no TimGM6mb.sf2; reinstall it "
                         "(pip install --force-reinstall pretty_midi) or pass --soundfont PATH")
    return path


def _tinysoundfont():
    try:
        from tinysoundfont import _tinysoundfont
    except ImportError:
        raise NotesError(f"tinysoundfont is not installed; run: {_INSTALL} "
                         "(--no-deps: its PyAudio dependency is for playback only and needs "
                         "PortAudio's headers to build)") from None
    return _tinysoundfont


class _Renderer:
    """One SoundFont in TinySoundFont, mono at SAMPLE_RATE."""

    def __init__(self, soundfont: str) -> None:
        self.tsf = _tinysoundfont()
        try:
            self.base = self.tsf.SoundFont(soundfont)
        except Exception as exc:  # TinySoundFont raises a bare Exception for a bad file
            raise NotesError(f"cannot load SoundFont {soundfont}: {exc}") from None

    def preset_name(self, program: int) -> str | None:
        return self.base.get_preset_name(0, program)

    def note(self, program: int, pitch: int, velocity: int) -> np.ndarray:
        """float32 [CLIP_SAMPLES]: note-on at 0, note-off at NOTE_OFF_SAMPLES."""
        # A fresh synthesiser per note (tsf_copy: shares the samples, costs ~0.1 ms): tsf_reset
        # only fades voices out over 10 ms, so the previous note would leak into this one.
        synth = self.tsf.SoundFont(self.base)
        synth.set_output(self.tsf.OutputMode.Mono, SAMPLE_RATE, 0.0)
        synth.channel_set_preset_number(0, program, False)
        synth.channel_note_on(0, pitch, velocity / 127.0)
        held = bytearray(4 * NOTE_OFF_SAMPLES)
        synth.render(memoryview(held), False)
        synth.channel_note_off(0, pitch)
        released = bytearray(4 * (CLIP_SAMPLES - NOTE_OFF_SAMPLES))
        synth.render(memoryview(released), False)
        return np.frombuffer(bytes(held + released), dtype=np.float32)


def _render_clip(renderer: _Renderer, clip: dict) -> dict:
    """Render one note into clip["path"] (atomically) unless it is silent; say which.

    A wav already there (from a killed build) is kept, but its note is still rendered, so the
    counts come out the same as a build in one go (a note costs about a millisecond).
    """
    x = renderer.note(clip["program"], clip["pitch"], clip["velocity"]).astype(np.float64)
    x *= 10 ** (GAIN_DB / 20)
    peak = float(np.abs(x).max())
    if not np.isfinite(peak) or peak < SILENT_PEAK:
        return {"silent": True, "limited": False, "written": False}
    limited = peak > LIMIT_PEAK
    if limited:
        x *= LIMIT_PEAK / peak
    path = Path(clip["path"])
    if path.is_file():
        return {"silent": False, "limited": limited, "written": False}
    write_wav(path, np.round(x * 32767).astype(np.int16), SAMPLE_RATE)
    return {"silent": False, "limited": limited, "written": True}


_RENDERER: _Renderer | None = None
_CHUNK = 64  # notes per task of a worker process


def _init_worker(soundfont: str | _Renderer) -> None:
    global _RENDERER
    _RENDERER = soundfont if isinstance(soundfont, _Renderer) else _Renderer(soundfont)


def _render_chunk(clips: list[dict]) -> list[tuple[str, dict]]:
    assert _RENDERER is not None  # set by _init_worker
    return [(c["relpath"], _render_clip(_RENDERER, c)) for c in clips]


# ----------------------------------------------------------------------------- plan

def _plan(per_class: int, seed: int) -> list[dict]:
    """Every note to render with its split, drawn here (Python's `random`, stable streams)."""
    rng = random.Random(seed)
    clips = []
    for label, family in enumerate(FAMILIES):
        triples = [(program, pitch, velocity) for program in family.programs
                   for pitch in range(family.lowest, family.highest + 1) for velocity in VELOCITIES]
        chosen = rng.sample(triples, per_class)  # a random order, so the cut below is a random split
        n_train, n_valid, _ = split_sizes(len(chosen))
        for i, (program, pitch, velocity) in enumerate(chosen):
            split = SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_valid else SPLITS[2]
            clips.append({
                "split": split, "label": label, "family": family.name, "program": program,
                "pitch": pitch, "velocity": velocity,
                "relpath": f"wavs/{split}/{family.name}/{program:03d}-{pitch:03d}-{velocity:03d}.wav",
            })
    return clips


def max_per_class() -> int:
    """The most notes per class: the smallest family's count of distinct triples."""
    return min(8 * (f.highest - f.lowest + 1) * len(VELOCITIES) for f in FAMILIES)


# ----------------------------------------------------------------------------- build

def _check_args(per_class, seed, workers) -> int:
    top = max_per_class()
    if not is_count(per_class, 1) or per_class > top:
        raise NotesError(f"per_class must be a whole number from 1 to {top} (the distinct notes of the "
                         f"smallest family), got {per_class!r}; 1500 is the full recipe, 3 a smoke test")
    check_seed(seed, NotesError)
    return check_workers(workers, NotesError)


def _render_all(todo: list[dict], renderer, soundfont: Path, workers: int, verbose: bool) -> dict:
    """{relpath: outcome} of every note, rendered in chunks here (one worker) or in a process pool."""
    from tqdm import tqdm

    outcome: dict = {}
    chunks = [todo[i:i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
    with tqdm(total=len(todo), unit="note", desc="notes", disable=not verbose) as bar:
        if workers == 1 or len(chunks) == 1:
            _init_worker(renderer)
            for result in map(_render_chunk, chunks):
                outcome.update(result)
                bar.update(len(result))
        else:
            with pool_context().Pool(min(workers, len(chunks)), initializer=_init_worker,
                                     initargs=(str(soundfont),)) as pool:
                for result in pool.imap_unordered(_render_chunk, chunks):
                    outcome.update(result)
                    bar.update(len(result))
    return outcome


def build_notes(out_dir: str | os.PathLike, per_class: int = 1500, seed: int = 0,
                soundfont: str | os.PathLike | None = None, workers: int | None = None,
                verbose: bool = True) -> dict:
    """Build (or resume, or confirm) the notes set in out_dir; return clips per split."""
    workers = _check_args(per_class, seed, workers)
    soundfont = Path(soundfont) if soundfont is not None else default_soundfont()
    if not soundfont.is_file():
        raise NotesError(f"--soundfont {soundfont} is not a file; give an .sf2 file or leave it out "
                         "for TimGM6mb from pretty_midi")
    out = Path(out_dir)
    params = {"builder": _BUILDER, "format": FORMAT_VERSION, "per_class": per_class, "seed": seed,
              "soundfont_sha256": file_sha256(soundfont)}
    say = print if verbose else (lambda *a, **k: None)

    done = finished_build(out, params, NotesError, lambda theirs: "with " + ", ".join(
        f"{k}={theirs[k]}" for k in params if theirs[k] != params[k]))
    if done:
        counts = done["counts"]
        say(f"{out}: already built with per_class={per_class} seed={seed} "
            f"({', '.join(f'{s} {counts[s]}' for s in SPLITS)}); nothing to do")
        return counts

    renderer = _Renderer(str(soundfont))  # fails early, in one line, on a missing module or bad file
    instruments = {p: renderer.preset_name(p) for f in FAMILIES for p in f.programs}
    missing = sorted(p for p, name in instruments.items() if name is None)
    if missing:
        raise NotesError(f"SoundFont {soundfont} has no bank-0 preset for GM programs {missing}; "
                         "use a General MIDI SoundFont")
    started = time.time()
    clips = _plan(per_class, seed)
    start_build(out, params)  # keeps a killed build's finished wavs: _render_clip skips them

    wav_root = out / "wavs"
    for split in SPLITS:
        for family in FAMILIES:
            (wav_root / split / family.name).mkdir(parents=True, exist_ok=True)
    outcome = _render_all([{**c, "path": str(out / c["relpath"])} for c in clips], renderer, soundfont,
                          workers, verbose)

    kept = [c for c in clips if not outcome[c["relpath"]]["silent"]]
    counts = write_splits(
        out, kept, order=lambda c: (c["label"], c["program"], c["pitch"], c["velocity"]),
        row=lambda c: {"path": c["relpath"], "label": c["label"], "family": c["family"],
                       "program": c["program"], "instrument": instruments[c["program"]],
                       "pitch": c["pitch"], "velocity": c["velocity"]})
    per_family, silent = {}, {}
    for family in FAMILIES:
        per_family[family.name] = sum(c["family"] == family.name for c in kept)
        silent[family.name] = sum(c["family"] == family.name for c in clips) - per_family[family.name]
    n_silent = sum(silent.values())
    n_limited = sum(o["limited"] for o in outcome.values())
    n_written = sum(o["written"] for o in outcome.values())
    record = {**params, "complete": True, "sample_rate": SAMPLE_RATE, "clip_seconds": CLIP_SECONDS,
              "note_off_seconds": NOTE_OFF_SECONDS, "gain_db": GAIN_DB, "velocities": list(VELOCITIES),
              "classes": [f.name for f in FAMILIES],
              "families": {f.name: {"label": i, "programs": [f.programs.start, f.programs.stop - 1],
                                    "pitches": [f.lowest, f.highest]} for i, f in enumerate(FAMILIES)},
              "counts": counts, "clips_per_class": per_family, "silent_dropped": silent,
              "silent_dropped_total": n_silent, "limited": n_limited, "soundfont": soundfont.name,
              "tinysoundfont": package_version("tinysoundfont"), "paths": "relative to this directory"}
    finish_build(out, record)

    seconds = time.time() - started
    say(f"{out}: {', '.join(f'{s} {counts[s]}' for s in SPLITS)} notes in {len(FAMILIES)} families; "
        f"{n_written} written in {seconds:.1f} s, {n_silent} silent dropped, "
        f"{n_limited} scaled down to avoid clipping")
    return counts


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = build_parser("notes", "Build the instrument-notes set (an NSynth analogue) from a SoundFont.")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--per-class", type=int, default=1500,
                        help=f"notes drawn per family, before silent ones are dropped "
                             f"(default 1500, at most {max_per_class()})")
    parser.add_argument("--soundfont", default=None,
                        help="General MIDI .sf2 (default: TimGM6mb.sf2 from the pretty_midi package)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all CPU cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    # Call through the imported module, not __main__, so worker processes can find the functions.
    from audiodiff.datasets import notes

    # Ctrl-C keeps the finished wavs; the same command picks up from them.
    return run_cli(parser, argv, lambda args: notes.build_notes(args.out, args.per_class, args.seed, args.soundfont,
                                                                args.workers, verbose=not args.quiet),
                   interrupted="run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
