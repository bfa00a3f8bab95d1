"""Drum one-shots: real recorded drum samples from Hydrogen's drum kits, cut to 1 s at the onset.

    python -m audiodiff.datasets.drums --out data/drums [--kits-dir /usr/share/hydrogen/data/drumkits]

The kits come from Debian's packages (`apt-get install hydrogen-drumkits hydrogen-drumkits-effects`):
one folder per kit with a drumkit.xml (its instruments and, for each, the sample files of its
velocity layers) and the samples (.flac, .wav, .aiff). Any folder of that shape works.

Every sample file becomes one clip: decoded, mixed to mono and resampled to 22,050 Hz with
`audiodiff.audio.load_audio`; cut from ONSET_PRE_ROLL_MS before its onset (the first sample
within ONSET_DB of the file's peak), 1 s long (zero-padded; a sound still ringing at 1 s is faded
out over the last FADE_OUT_MS); peak-normalised to PEAK_DBFS. Recording levels differ a lot between
kits, so velocity layers are kept as separate clips (their layer range is in the manifest) but
not as loudness.

Labels (LABELS): kick, snare, hihat, tom, cymbal, other (hand percussion, claps, sticks, bells,
effects), from the drumkit.xml instrument name, or from the file name when the instrument
name says nothing (`label_for`). Files neither names places in a class are dropped and counted
("unlabelled": e.g. a guitar-strum kit's chords, "Sample: beats_06-45"), as are silent files
(peak below -60 dBFS: Hydrogen's emptySample.flac), unreadable ones, and files that drumkit.xml
names but the kit lacks. A file that several instruments use is one clip (the first instrument's).

Splits are by kit, so no kit is heard in two splits: kits are ordered by how many classes they
cover (most first; ties by a hash of the kit name, which is stable and arbitrary), then test takes
kits until it holds 10% of the clips, valid likewise, and the rest is train. With fewer than three
usable kits the split is by clip instead (each clip's place fixed by a hash of its path), and
build.json says so ("split_by").

Layout of DIR:

    build.json                       parameters, kits per split, counts and drops; a rerun is a no-op
    train.jsonl valid.jsonl test.jsonl
                                     {"path", "label", "label_name", "kit", "instrument", "source",
                                     "velocity", "onset_seconds"} per line; "path" is relative to DIR,
                                     "source" to the kits folder, "velocity" is the drumkit.xml
                                     layer's [min, max] (or null)
    wavs/<split>/<label_name>/<kit>__<file>.wav
                                     1 s, 22,050 Hz, mono, 16-bit PCM

The build is deterministic: no random numbers; the same kit files give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ._common import (SPLITS, DatasetError, build_parser, finish_build, finished_build, run_cli,
                      split_sizes, start_build, write_splits, write_wav)

__all__ = ["LABELS", "SAMPLE_RATE", "CLIP_SAMPLES", "SPLITS", "DEFAULT_KITS_DIR", "DrumsError",
           "build_drums", "find_kits", "label_for", "main"]

SAMPLE_RATE = 22050
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
LABELS = ("kick", "snare", "hihat", "tom", "cymbal", "other")
DEFAULT_KITS_DIR = "/usr/share/hydrogen/data/drumkits"
AUDIO_SUFFIXES = (".flac", ".wav", ".aiff", ".aif", ".ogg")

ONSET_DB = -30.0  # onset: the first sample within this of the file's peak (after mono mixdown)
ONSET_PRE_ROLL_MS = 5.0  # kept before the onset, so the attack's first rise is not cut
FADE_IN_MS = 1.0  # over the pre-roll's start: no step where the cut lands on a little noise
FADE_OUT_MS = 50.0  # when the sound is still ringing at 1 s
RINGING_DB = -50.0  # "still ringing": the last 50 ms peak above this, relative to the clip's peak
PEAK_DBFS = -3.0
SILENT_PEAK = 1e-3  # -60 dBFS
MAX_READ_SECONDS = 4.0  # onsets come early; the rest of a long file is not needed
TARGET_SHARE = 0.1  # of the clips, for each of valid and test

FORMAT_VERSION = 1  # bump when the same kits would give different audio or labels
_BUILDER = "audiodiff.datasets.drums"
_APT = "apt-get install hydrogen-drumkits hydrogen-drumkits-effects"

# Ordered: the first class whose pattern matches the normalised name wins. "other" goes first so
# that a cowbell is not a cymbal's bell and a side stick not a snare; hi-hats before cymbals so
# that "Sabian Hat" is a hi-hat. Names are normalised by _normalise ("closehihat3" -> "closehihat 3").
_RULES = (
    ("other", r"cowbell|clap|snap|stick|rim ?click|click|tambourin|conga|bongo|cajon|djembe|sangban|"
              r"dununba|kenkeni|agogo|clave|wood ?block|maraca|shak|waterglass|whistle|triangle|guiro|"
              r"cabasa|timbale|\bzap\b|\bfx\b|\bperc"),
    ("hihat", r"hi ?hat|hat\b|\b[cop]?hh\b"),
    ("cymbal", r"crash|ride|splash|china|cymbal|\bcym|\bcy\b|paiste|zildjian|sabian"),
    ("kick", r"kick|bass ?drum|\bbd\b|\bkd\b|\bkik\b"),
    ("snare", r"snare|rimshot|\bsd\b|\bsn\b|\bsnr\b"),
    ("tom", r"\btom"),
)
_COMPILED = tuple((label, re.compile(pattern)) for label, pattern in _RULES)


class DrumsError(DatasetError):
    """A one-line, user-facing reason the drums build cannot go on."""


# ----------------------------------------------------------------------------- labels

def _normalise(name: str) -> str:
    name = re.sub(r"([a-z])([0-9])|([0-9])([a-z])", r"\1\3 \2\4", name.lower())
    return " ".join(re.split(r"[^a-z0-9]+", name)).strip()


def label_for(instrument: str | None, filename: str | None = None) -> str | None:
    """The class of a sample from its instrument name, else its file name; None when neither says."""
    for text in (instrument, Path(filename).stem if filename else None):
        if text:
            norm = _normalise(text)
            for label, pattern in _COMPILED:
                if pattern.search(norm):
                    return label
    return None


# ----------------------------------------------------------------------------- kits

def _children(element, ns: str, tag: str):
    return element.iter(ns + tag)


def _parse_kit(kit_dir: Path) -> tuple[str, list[dict]]:
    """(kit name, [{"file", "instrument", "velocity"}]) from drumkit.xml, in document order."""
    root = ET.parse(kit_dir / "drumkit.xml").getroot()
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    name = (root.findtext(ns + "name") or kit_dir.name).strip()
    samples = []
    for instrument in _children(root, ns, "instrument"):
        inst_name = (instrument.findtext(ns + "name") or "").strip()
        layers = list(_children(instrument, ns, "layer"))
        if layers:
            for layer in layers:
                filename = (layer.findtext(ns + "filename") or "").strip()
                try:
                    velocity = [round(float(layer.findtext(ns + "min")), 4),
                                round(float(layer.findtext(ns + "max")), 4)]
                except (TypeError, ValueError):
                    velocity = None
                if filename:
                    samples.append({"file": filename, "instrument": inst_name, "velocity": velocity})
        else:  # old format: <filename> straight under <instrument>
            filename = (instrument.findtext(ns + "filename") or "").strip()
            if filename:
                samples.append({"file": filename, "instrument": inst_name, "velocity": None})
    return name, samples


def find_kits(kits_dir: str | os.PathLike) -> list[Path]:
    """Kit folders (with a drumkit.xml) under kits_dir, sorted by name."""
    kits_dir = Path(kits_dir)
    return sorted((p.parent for p in kits_dir.glob("*/drumkit.xml")), key=lambda p: p.name)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


def _inventory(kits: list[Path], kits_dir: Path) -> tuple[list[dict], dict]:
    """Every candidate sample with its label, and counts of what was dropped before decoding."""
    candidates, dropped = [], {"unlabelled": 0, "missing": 0, "bad_xml": 0}
    problems = []
    for kit_dir in kits:
        try:
            kit_name, samples = _parse_kit(kit_dir)
        except (ET.ParseError, OSError) as exc:
            dropped["bad_xml"] += 1
            problems.append(f"{kit_dir.name}/drumkit.xml: {exc}")
            continue
        on_disk = {p.name: p for p in kit_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES}
        seen = set()
        # Files drumkit.xml names first (their instrument names label them), then any others.
        entries = samples + [{"file": f, "instrument": None, "velocity": None}
                             for f in sorted(on_disk) if f not in {s["file"] for s in samples}]
        for entry in entries:
            file = entry["file"]
            if file in seen:
                continue
            seen.add(file)
            path = kit_dir / file
            if not path.is_file():
                dropped["missing"] += 1
                continue
            label = label_for(entry["instrument"], file)
            if label is None:
                dropped["unlabelled"] += 1
                continue
            candidates.append({"kit": kit_dir.name, "kit_name": kit_name, "instrument": entry["instrument"],
                               "file": file, "source": str(path.relative_to(kits_dir)), "path_in": str(path),
                               "velocity": entry["velocity"], "label_name": label,
                               "label": LABELS.index(label)})
    return candidates, {**dropped, "problems": problems}


def _fingerprint(kits: list[Path], kits_dir: Path) -> str:
    """A hash of every kit file's relative path and size: a changed kit means a new build."""
    digest = hashlib.sha256()
    for kit_dir in kits:
        for path in sorted(kit_dir.iterdir()):
            if path.is_file():
                digest.update(f"{path.relative_to(kits_dir)}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- one clip

def _cut(wave: np.ndarray) -> tuple[np.ndarray | None, dict]:
    """Onset-aligned, 1 s, peak-normalised float64 clip (None when silent) and what was done."""
    x = wave.astype(np.float64)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if not np.isfinite(peak) or peak < SILENT_PEAK:
        return None, {"silent": True}
    onset = int(np.argmax(np.abs(x) >= peak * 10 ** (ONSET_DB / 20)))
    start = max(0, onset - round(ONSET_PRE_ROLL_MS * SAMPLE_RATE / 1000))
    clip = np.zeros(CLIP_SAMPLES)
    piece = x[start:start + CLIP_SAMPLES]
    clip[:len(piece)] = piece
    if start > 0:
        n = round(FADE_IN_MS * SAMPLE_RATE / 1000)
        clip[:n] *= np.linspace(0.0, 1.0, n, endpoint=False)
    n = round(FADE_OUT_MS * SAMPLE_RATE / 1000)
    ringing = float(np.abs(clip[-n:]).max()) > peak * 10 ** (RINGING_DB / 20)
    if ringing:
        clip[-n:] *= np.linspace(1.0, 0.0, n)
    clip *= 10 ** (PEAK_DBFS / 20) / np.abs(clip).max()
    return clip, {"silent": False, "onset_seconds": round(onset / SAMPLE_RATE, 4), "faded": ringing,
                  "source_peak_dbfs": round(20 * np.log10(peak), 2)}


def _pcm16(clip: np.ndarray) -> np.ndarray:
    return np.round(clip * 32767).astype(np.int16)


# ----------------------------------------------------------------------------- splits

def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _assign_splits(clips: list[dict]) -> str:
    """Set clip["split"] for every clip; return how ("kit" or "clip")."""
    kits = sorted({c["kit"] for c in clips})
    if len(kits) >= 3:
        classes = {k: len({c["label"] for c in clips if c["kit"] == k}) for k in kits}
        size = {k: sum(c["kit"] == k for c in clips) for k in kits}
        order = sorted(kits, key=lambda k: (-classes[k], _hash(k)))
        target = TARGET_SHARE * len(clips)
        split_of, i = {}, 0
        # test, then valid, take kits until they hold `target` clips, always leaving at least
        # one kit for each split after them
        for split, keep_after in (("test", 2), ("valid", 1)):
            held = 0
            while i < len(order) - keep_after and held < target:
                split_of[order[i]] = split
                held += size[order[i]]
                i += 1
        for kit in order[i:]:
            split_of[kit] = "train"
        for c in clips:
            c["split"] = split_of[c["kit"]]
        return "kit"
    order = sorted(clips, key=lambda c: _hash(c["source"]))
    _, n_valid, n_test = split_sizes(len(order), TARGET_SHARE)
    for i, c in enumerate(order):
        c["split"] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return "clip"


# ----------------------------------------------------------------------------- build

def _cut_all(candidates: list[dict], load_audio, decode_error, verbose: bool):
    """(clips, int16 audio by source, silent count, unreadable reasons): each labelled file read and
    cut at its onset (_cut); the audio is held until the splits are known."""
    from tqdm import tqdm

    clips, audio, silent, unreadable = [], {}, 0, []
    for c in tqdm(candidates, unit="file", desc="drums", disable=not verbose):
        try:
            wave = load_audio(c["path_in"], SAMPLE_RATE, max_seconds=MAX_READ_SECONDS).numpy()
        except decode_error as exc:
            unreadable.append(str(exc))
            continue
        clip, info = _cut(wave)
        if clip is None:
            silent += 1
            continue
        c.update(info)
        audio[c["source"]] = _pcm16(clip)
        clips.append(c)
    return clips, audio, silent, unreadable


def _write_clips(out: Path, clips: list[dict], audio: dict) -> None:
    """wavs/<split>/<label>/<kit>__<file>.wav for every clip (its "relpath"), names made unique."""
    taken = set()
    for c in sorted(clips, key=lambda c: c["source"]):
        base = f"wavs/{c['split']}/{c['label_name']}/{_slug(c['kit'])}__{_slug(Path(c['file']).stem)}"
        relpath, k = f"{base}.wav", 1
        while relpath in taken:  # two names that slug alike ("a b.wav", "a_b.wav")
            k += 1
            relpath = f"{base}_{k}.wav"
        taken.add(relpath)
        c["relpath"] = relpath
        path = out / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, audio[c["source"]], SAMPLE_RATE)


def build_drums(out_dir: str | os.PathLike, kits_dir: str | os.PathLike = DEFAULT_KITS_DIR,
                verbose: bool = True) -> dict:
    """Build (or confirm) the drum one-shot set in out_dir from the kits under kits_dir."""
    kits_dir = Path(kits_dir)
    say = print if verbose else (lambda *a, **k: None)
    if not kits_dir.is_dir():
        raise DrumsError(f"no drum kits at {kits_dir}; install Hydrogen's kits with: {_APT} "
                         "(or pass --kits-dir DIR, a folder of kit folders with drumkit.xml)")
    kits = find_kits(kits_dir)
    if not kits:
        raise DrumsError(f"{kits_dir} has no kit folders with a drumkit.xml; install Hydrogen's kits "
                         f"with: {_APT} (or pass --kits-dir DIR)")
    kits_dir = kits_dir.resolve()
    kits = [k.resolve() for k in kits]
    out = Path(out_dir)
    params = {"builder": _BUILDER, "format": FORMAT_VERSION, "kits_fingerprint": _fingerprint(kits, kits_dir)}

    done = finished_build(out, params, DrumsError,
                          lambda theirs: f"from other kit files (or format {theirs['format']})")
    if done:
        counts = done["counts"]
        say(f"{out}: already built from {kits_dir} ({', '.join(f'{s} {counts[s]}' for s in SPLITS)}); "
            "nothing to do")
        return counts

    from ..audio import AudioFileError, load_audio

    started = time.time()
    candidates, dropped = _inventory(kits, kits_dir)
    start_build(out, params)

    clips, audio, silent, unreadable = _cut_all(candidates, load_audio, AudioFileError, verbose)
    if not clips:
        raise DrumsError(f"no usable drum samples under {kits_dir} ({len(candidates)} labelled files: "
                         f"{silent} silent, {len(unreadable)} unreadable; {dropped['unlabelled']} unlabelled)")
    split_by = _assign_splits(clips)

    _write_clips(out, clips, audio)

    counts = write_splits(
        out, clips, order=lambda c: (c["label"], c["kit"], c["source"]),
        row=lambda c: {"path": c["relpath"], "label": c["label"], "label_name": c["label_name"],
                       "kit": c["kit"], "instrument": c["instrument"], "source": c["source"],
                       "velocity": c["velocity"], "onset_seconds": c["onset_seconds"]})
    kits_of = {split: sorted({c["kit"] for c in clips if c["split"] == split}) for split in SPLITS}
    per_class = {split: {name: sum(c["label_name"] == name for c in clips if c["split"] == split)
                         for name in LABELS} for split in SPLITS}
    record = {**params, "complete": True, "kits_dir": str(kits_dir), "sample_rate": SAMPLE_RATE,
              "clip_samples": CLIP_SAMPLES, "classes": list(LABELS), "split_by": split_by,
              "counts": counts, "clips_per_class": per_class, "kits": kits_of,
              "dropped": {"unlabelled": dropped["unlabelled"], "silent": silent,
                          "unreadable": len(unreadable), "missing": dropped["missing"],
                          "bad_xml": dropped["bad_xml"]},
              "faded_at_1s": sum(c["faded"] for c in clips),
              "problems": dropped["problems"] + unreadable, "paths": "relative to this directory"}
    finish_build(out, record)

    seconds = time.time() - started
    d = record["dropped"]
    say(f"{out}: {', '.join(f'{s} {counts[s]} clips/{len(kits_of[s])} kits' for s in SPLITS)} "
        f"(split by {split_by}) in {seconds:.1f} s; dropped {d['unlabelled']} unlabelled, {d['silent']} silent, "
        f"{d['unreadable']} unreadable, {d['missing']} missing")
    return counts


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = build_parser("drums", "Build the drum one-shot set from Hydrogen drum kits.")
    parser.add_argument("--kits-dir", default=DEFAULT_KITS_DIR,
                        help=f"folder of kit folders with drumkit.xml (default {DEFAULT_KITS_DIR}, "
                             f"from: {_APT})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return run_cli(parser, argv, lambda args: build_drums(args.out, args.kits_dir, verbose=not args.quiet))


if __name__ == "__main__":
    sys.exit(main())
