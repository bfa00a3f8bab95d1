"""SC09: the spoken digits "zero".."nine" of Speech Commands v0.02 (Warden 2018), as manifests.

    python -m audiodiff.datasets.sc09 --data-dir speech_commands_v0.02 --out data/sc09

DATA_DIR is an unpacked speech_commands_v0.02.tar.gz: one folder per word holding
`<speaker>_nohash_<n>.wav` (16 kHz, mono, at most 1 s), plus validation_list.txt and
testing_list.txt (paths like `zero/0a2b400e_nohash_0.wav`). The split is the dataset's own:
listed files are valid / test, every other clip of the ten digit words is train. That gives
the SC09 used by WaveGAN and DiffWave (31,158 training clips, about 3,600 valid, 4,100 test). Other
words (yes, no, ..., _background_noise_) are ignored.

OUT gets train.jsonl valid.jsonl test.jsonl, one JSON object a line:
    {"path": absolute path, "id": "zero/0a2b400e_nohash_0", "label": 0..9, "word": "zero",
     "speaker": "0a2b400e"}
in sorted path order, labels.json ({"zero": 0, ..., "nine": 9}) and info.json (counts).
Only the file tree is read, never audio: `python -m audiodiff.prepare` checks the clips.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..cli import OneLineParser
from ._common import DatasetError, is_count, run_cli, write_json, write_jsonl

__all__ = ["DIGITS", "SPLITS", "SC09Error", "make_manifests", "main"]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "valid", "test")
LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}
URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"


class SC09Error(DatasetError):
    """A one-line, user-facing reason the manifests cannot be made (CLI: exit 2)."""


def _read_list(path: Path) -> set[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SC09Error(f"cannot read {path}: {e.strerror or e}") from None
    return {line.strip().replace("\\", "/") for line in lines if line.strip()}


def _check_data_dir(data_dir: Path, words) -> None:
    hint = f"is it an unpacked Speech Commands v0.02 ({URL})?"
    if not data_dir.is_dir():
        raise SC09Error(f"--data-dir {data_dir} is not a folder; pass the folder that "
                        f"speech_commands_v0.02.tar.gz unpacks into")
    for name in LISTS.values():
        if not (data_dir / name).is_file():
            raise SC09Error(f"--data-dir {data_dir} has no {name}; {hint}")
    for word in words:
        if not (data_dir / word).is_dir():
            raise SC09Error(f"--data-dir {data_dir} has no folder {word}/; {hint}")


def make_manifests(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, per_label: int = 0,
                   words=DIGITS, verbose: bool = False) -> dict:
    """Write OUT/{train,valid,test}.jsonl, labels.json and info.json from an unpacked Speech Commands.

    per_label > 0 keeps only the first `per_label` clips (sorted by path) of each word in each
    split (smoke runs on the real data); 0 keeps all. words: the label names, label = index.
    Returns info.json's content: {"counts": {split: {word: n}}, "missing_listed": n, ...}.
    Raises SC09Error (one line) for a folder that is not Speech Commands or an empty split.
    """
    if not is_count(per_label):
        raise SC09Error(f"per_label={per_label!r} must be an integer >= 0 (0: every clip)")
    data_dir, out_dir = Path(data_dir).expanduser().absolute(), Path(out_dir)
    _check_data_dir(data_dir, words)
    listed = {split: _read_list(data_dir / name) for split, name in LISTS.items()}
    both = listed["valid"] & listed["test"]
    if both:
        raise SC09Error(f"{sorted(both)[0]} is in both {LISTS['valid']} and {LISTS['test']}; "
                        "the lists look damaged, re-download the archive")
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    found = set()
    for label, word in enumerate(words):
        names = sorted(n for n in os.listdir(data_dir / word) if n.lower().endswith(".wav"))
        for name in names:
            rel = f"{word}/{name}"
            found.add(rel)
            split = "valid" if rel in listed["valid"] else "test" if rel in listed["test"] else "train"
            rows[split].append({"path": str(data_dir / word / name), "id": rel[:-len(".wav")],
                                "label": label, "word": word, "speaker": name.split("_nohash_")[0]})
    # Listed digit files that are not on disk: a partial copy. Count them rather than fail.
    word_set = set(words)
    missing = sorted(rel for lst in listed.values() for rel in lst
                     if rel.split("/")[0] in word_set and rel not in found)
    counts = {}
    for split in SPLITS:
        if per_label:
            kept: list[dict] = []
            seen: dict[int, int] = {}  # label -> clips kept so far
            for row in rows[split]:
                seen[row["label"]] = seen.get(row["label"], 0) + 1
                if seen[row["label"]] <= per_label:
                    kept.append(row)
            rows[split] = kept
        if not rows[split]:
            raise SC09Error(f"no {split} clips of {', '.join(words)} in {data_dir} (the split follows "
                            f"{LISTS.get(split, 'the files not in either list')}); is the copy complete?")
        counts[split] = {w: sum(r["word"] == w for r in rows[split]) for w in words}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", rows[split])
    write_json(out_dir / "labels.json", {w: i for i, w in enumerate(words)})
    info: dict[str, Any] = {"dataset": "sc09", "source": str(data_dir), "per_label": per_label, "counts": counts,
                            "speakers": {s: len({r["speaker"] for r in rows[s]}) for s in SPLITS},
                            "missing_listed": len(missing)}
    write_json(out_dir / "info.json", info)
    if verbose:
        totals = ", ".join(f"{s} {sum(counts[s].values())} ({info['speakers'][s]} speakers)" for s in SPLITS)
        print(f"sc09: {totals} -> {out_dir}")
        if missing:
            print(f"sc09: warning: {len(missing)} listed digit clip(s) are not on disk (first: {missing[0]})",
                  file=sys.stderr)
    return info


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m audiodiff.datasets.sc09",
                      description="Train/valid/test manifests of SC09 from an unpacked Speech Commands v0.02.")
    p.add_argument("--data-dir", required=True, help="the unpacked speech_commands_v0.02.tar.gz")
    p.add_argument("--out", required=True, help="output folder for the manifests")
    p.add_argument("--per-label", type=int, default=0,
                   help="keep the first N clips of each digit in each split (default 0: all)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    return run_cli(p, argv, lambda args: make_manifests(args.data_dir, args.out, per_label=args.per_label,
                                                        verbose=not args.quiet))


if __name__ == "__main__":
    sys.exit(main())
