"""NSynth (Engel et al. 2017) as manifests: 4 s musical notes at 16 kHz, labelled by instrument family.

    python -m audiodiff.datasets.nsynth --data-dir nsynth --out data/nsynth --pitch-min 24 --pitch-max 84

DATA_DIR holds the unpacked json/wav archives, one folder per split:
    nsynth-{train,valid,test}/examples.json   {note_str: {"pitch", "velocity", "instrument_str",
                                               "instrument_family", "instrument_family_str",
                                               "instrument_source_str", "qualities_str", ...}}
    nsynth-{train,valid,test}/audio/<note_str>.wav
The split is the dataset's own (289,205 / 12,678 / 4,096 notes; instruments do not overlap
between train and valid/test).

Label = instrument family, NSynth's own index (FAMILIES below, 11 classes), for
class-conditional training; pitch (MIDI), velocity, instrument and source are kept in each line
for filtering and analysis. Filters: a MIDI pitch range (GANSynth trains on 24..84) and
instrument sources (acoustic, electronic, synthetic). Families with no notes after filtering
simply have none (synth_lead has none outside train).

OUT gets train.jsonl valid.jsonl test.jsonl (sorted by note), one JSON object a line:
    {"path": absolute path, "id": "guitar_acoustic_001-082-050", "label": 3, "family": "guitar",
     "pitch": 82, "velocity": 50, "instrument": "guitar_acoustic_001", "source": "acoustic",
     "qualities": ["bright"], "speaker": instrument}
labels.json (family -> index) and info.json (counts per split and family).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..cli import OneLineParser
from ._common import DatasetError, is_count, run_cli, write_json, write_jsonl

__all__ = ["FAMILIES", "SOURCES", "SPLITS", "NSynthError", "make_manifests", "main"]

FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
            "synth_lead", "vocal")
SOURCES = ("acoustic", "electronic", "synthetic")
SPLITS = ("train", "valid", "test")
URL = "http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-{split}.jsonwav.tar.gz"


class NSynthError(DatasetError):
    """A one-line, user-facing reason the manifests cannot be made (CLI: exit 2)."""


def _read_examples(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            examples = json.load(f)
    except OSError as e:
        raise NSynthError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise NSynthError(f"{path} is not valid JSON ({e}); re-download the archive") from None
    if not isinstance(examples, dict):
        raise NSynthError(f"{path}: expected an object note_str -> note, got {type(examples).__name__}")
    return examples


def _row(audio_dir: Path, key: str, note: dict, where: str) -> dict:
    try:
        family = int(note["instrument_family"])
        pitch = int(note["pitch"])
        row = {"path": str(audio_dir / f"{key}.wav"), "id": key, "label": family,
               "family": note.get("instrument_family_str", FAMILIES[family] if family < len(FAMILIES) else ""),
               "pitch": pitch, "velocity": int(note.get("velocity", 0)),
               "instrument": note.get("instrument_str", ""),
               "source": note.get("instrument_source_str", ""),
               "qualities": list(note.get("qualities_str", []))}
    except (KeyError, TypeError, ValueError) as e:
        raise NSynthError(f"{where}: note {key!r} lacks a usable {e} field") from None
    if not 0 <= family < len(FAMILIES):
        raise NSynthError(f"{where}: note {key!r} has instrument_family {family}, expected 0..{len(FAMILIES) - 1}")
    row["speaker"] = row["instrument"]  # the unit that splits are disjoint in
    return row


def make_manifests(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, splits=SPLITS,
                   pitch_min: int = 0, pitch_max: int = 127, sources=SOURCES, per_label: int = 0,
                   verbose: bool = False) -> dict:
    """Write OUT/<split>.jsonl, labels.json and info.json from unpacked NSynth json/wav archives.

    Keeps notes with pitch_min <= pitch <= pitch_max whose source is in `sources`. per_label > 0
    keeps the first N notes (by note name) of each family in each split (smoke runs).
    Returns info.json's content. Raises NSynthError (one line) for a folder that is not NSynth
    (naming the missing file), a missing wav, or a split left empty by the filters.
    """
    splits, sources = _names(splits, SPLITS, "split"), _names(sources, SOURCES, "source")
    for name, value in (("pitch_min", pitch_min), ("pitch_max", pitch_max), ("per_label", per_label)):
        if not is_count(value):
            raise NSynthError(f"{name}={value!r} must be an integer >= 0")
    if pitch_min > pitch_max:
        raise NSynthError(f"pitch_min={pitch_min} is above pitch_max={pitch_max}")
    data_dir, out_dir = Path(data_dir).expanduser().absolute(), Path(out_dir)
    if not data_dir.is_dir():
        raise NSynthError(f"--data-dir {data_dir} is not a folder; pass the folder holding nsynth-train/ "
                          "nsynth-valid/ nsynth-test/")
    for split in splits:  # check every split before the slow json reads
        for rel in (f"nsynth-{split}/examples.json", f"nsynth-{split}/audio"):
            if not (data_dir / rel).exists():
                raise NSynthError(f"--data-dir {data_dir} has no {rel}; unpack {URL.format(split=split)} there "
                                  f"(or pass --splits with the splits you have)")
    rows, counts = {}, {}
    for split in splits:
        folder = data_dir / f"nsynth-{split}"
        examples = _read_examples(folder / "examples.json")
        on_disk = set(os.listdir(folder / "audio"))
        missing = [k for k in examples if f"{k}.wav" not in on_disk]
        if missing:
            raise NSynthError(f"{len(missing)} of {len(examples)} notes in {folder / 'examples.json'} have no "
                              f"wav under {folder / 'audio'} (first: {missing[0]}.wav); is the copy complete?")
        kept: list[dict] = []
        seen: dict[int, int] = {}  # label -> notes so far
        for key in sorted(examples):
            row = _row(folder / "audio", key, examples[key], str(folder / "examples.json"))
            if not pitch_min <= row["pitch"] <= pitch_max or row["source"] not in sources:
                continue
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            if per_label and seen[row["label"]] > per_label:
                continue
            kept.append(row)
        if not kept:
            raise NSynthError(f"no {split} notes left with pitch {pitch_min}..{pitch_max} and sources "
                              f"{', '.join(sources)} (of {len(examples)}); widen the filters")
        rows[split] = kept
        counts[split] = {f: sum(r["label"] == i for r in kept) for i, f in enumerate(FAMILIES)}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        write_jsonl(out_dir / f"{split}.jsonl", rows[split])
    write_json(out_dir / "labels.json", {f: i for i, f in enumerate(FAMILIES)})
    info = {"dataset": "nsynth", "source": str(data_dir), "pitch_min": pitch_min, "pitch_max": pitch_max,
            "sources": list(sources), "per_label": per_label, "counts": counts}
    write_json(out_dir / "info.json", info)
    if verbose:
        print(f"nsynth: {', '.join(f'{s} {sum(c.values())}' for s, c in counts.items())} notes "
              f"(pitch {pitch_min}..{pitch_max}, {'+'.join(sources)}) -> {out_dir}")
    return info


def _names(values, valid, what) -> tuple:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    values = tuple(v.strip() for v in values)
    bad = [v for v in values if v not in valid]
    if bad or not values:
        raise NSynthError(f"{what} {bad[0] if bad else '(none)'!r} is not one of {', '.join(valid)}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m audiodiff.datasets.nsynth",
                      description="Manifests of NSynth (json/wav archives), labelled by instrument family.")
    p.add_argument("--data-dir", required=True, help="folder holding nsynth-train/ nsynth-valid/ nsynth-test/")
    p.add_argument("--out", required=True, help="output folder for the manifests")
    p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated (default train,valid,test)")
    p.add_argument("--pitch-min", type=int, default=0, help="lowest MIDI pitch kept (default 0)")
    p.add_argument("--pitch-max", type=int, default=127, help="highest MIDI pitch kept (default 127)")
    p.add_argument("--sources", default=",".join(SOURCES), help="instrument sources kept (default all three)")
    p.add_argument("--per-label", type=int, default=0,
                   help="keep the first N notes of each family in each split (default 0: all)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    return run_cli(p, argv, lambda args: make_manifests(
        args.data_dir, args.out, splits=args.splits, pitch_min=args.pitch_min, pitch_max=args.pitch_max,
        sources=args.sources, per_label=args.per_label, verbose=not args.quiet))


if __name__ == "__main__":
    sys.exit(main())
