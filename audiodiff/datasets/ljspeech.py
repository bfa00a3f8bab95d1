"""LJSpeech 1.1 (Ito & Johnson 2017) as manifests: one speaker, 13,100 clips, 22,050 Hz.

    python -m audiodiff.datasets.ljspeech --data-dir LJSpeech-1.1 --out data/ljspeech

DATA_DIR is an unpacked LJSpeech-1.1.tar.bz2: metadata.csv ("<id>|<text>|<normalised text>" a
line, no header, not CSV-quoted) and wavs/<id>.wav.

The split is fixed and needs no list file: clips are ordered by sha1("<seed>/<id>") and the
first `num_test` are test, the next `num_valid` valid, the rest train (defaults: 100, 100,
seed 1234, so 12,900 / 100 / 100). The order depends on the ids alone, not on the Python
version, the file system or the line order of metadata.csv.

OUT gets train.jsonl valid.jsonl test.jsonl (sorted by id), one JSON object a line:
    {"path": absolute path, "id": "LJ001-0001", "text": normalised transcript,
     "speaker": "LJ", "chapter": "LJ001"}
and info.json (counts, seed). No labels: the recipe trains unconditionally.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from ..cli import OneLineParser
from ._common import DatasetError, is_count, run_cli, write_json, write_jsonl

__all__ = ["SPLITS", "LJSpeechError", "split_ids", "make_manifests", "main"]

SPLITS = ("train", "valid", "test")
URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"


class LJSpeechError(DatasetError):
    """A one-line, user-facing reason the manifests cannot be made (CLI: exit 2)."""


def split_ids(ids, *, num_valid: int = 100, num_test: int = 100, seed: int = 1234) -> dict:
    """{"train", "valid", "test"}: sorted id lists; held-out ids are the first by sha1("<seed>/<id>")."""
    order = sorted(ids, key=lambda i: hashlib.sha1(f"{seed}/{i}".encode()).hexdigest())
    held = num_valid + num_test
    if held >= len(order):
        raise LJSpeechError(f"num_valid + num_test = {held} leaves no training clips of {len(order)}; "
                            "lower --num-valid / --num-test")
    return {"test": sorted(order[:num_test]), "valid": sorted(order[num_test:held]),
            "train": sorted(order[held:])}


def read_metadata(data_dir: Path) -> dict:
    """id -> normalised text, from metadata.csv (split on '|': its quotes are not CSV quoting)."""
    path = data_dir / "metadata.csv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LJSpeechError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    texts = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2 or not parts[0].strip():
            raise LJSpeechError(f"{path}:{n}: expected '<id>|<text>|<normalised text>', got {line[:60]!r}")
        key = parts[0].strip()
        if key in texts:
            raise LJSpeechError(f"{path}:{n}: id {key} appears twice")
        texts[key] = (parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]).strip()
    if not texts:
        raise LJSpeechError(f"{path} lists no clips")
    return texts


def make_manifests(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, num_valid: int = 100,
                   num_test: int = 100, seed: int = 1234, max_train: int = 0, verbose: bool = False) -> dict:
    """Write OUT/{train,valid,test}.jsonl and info.json from an unpacked LJSpeech-1.1.

    max_train > 0 keeps only the first `max_train` training clips by id (smoke runs); the
    held-out clips do not change with it. Returns info.json's content.
    Raises LJSpeechError (one line) for a folder that is not LJSpeech or a wav that is missing.
    """
    for name, value, low in (("num_valid", num_valid, 1), ("num_test", num_test, 1), ("max_train", max_train, 0)):
        if not is_count(value, low):
            raise LJSpeechError(f"{name}={value!r} must be an integer >= {low}")
    data_dir, out_dir = Path(data_dir).expanduser().absolute(), Path(out_dir)
    hint = f"is it an unpacked LJSpeech-1.1 ({URL})?"
    if not data_dir.is_dir():
        raise LJSpeechError(f"--data-dir {data_dir} is not a folder; pass the LJSpeech-1.1 folder of the archive")
    for name, is_ok in (("metadata.csv", Path.is_file), ("wavs", Path.is_dir)):
        if not is_ok(data_dir / name):
            raise LJSpeechError(f"--data-dir {data_dir} has no {name}{'/' if name == 'wavs' else ''}; {hint}")
    texts = read_metadata(data_dir)
    on_disk = set(os.listdir(data_dir / "wavs"))
    missing = [k for k in texts if f"{k}.wav" not in on_disk]
    if missing:
        raise LJSpeechError(f"{len(missing)} of {len(texts)} clips in metadata.csv have no wav under "
                            f"{data_dir / 'wavs'} (first: {missing[0]}.wav); is the copy complete?")
    splits = split_ids(texts, num_valid=num_valid, num_test=num_test, seed=seed)
    if max_train:
        splits["train"] = splits["train"][:max_train]
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = [{"path": str(data_dir / "wavs" / f"{k}.wav"), "id": k, "text": texts[k], "speaker": "LJ",
                 "chapter": k.split("-")[0]} for k in splits[split]]
        write_jsonl(out_dir / f"{split}.jsonl", rows)
    info: dict[str, Any] = {"dataset": "ljspeech", "source": str(data_dir), "seed": seed, "max_train": max_train,
                            "counts": {s: len(splits[s]) for s in SPLITS}}
    write_json(out_dir / "info.json", info)
    if verbose:
        print(f"ljspeech: {', '.join(f'{s} {n}' for s, n in info['counts'].items())} -> {out_dir}")
    return info


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m audiodiff.datasets.ljspeech",
                      description="Train/valid/test manifests of an unpacked LJSpeech-1.1.")
    p.add_argument("--data-dir", required=True, help="the LJSpeech-1.1 folder (metadata.csv, wavs/)")
    p.add_argument("--out", required=True, help="output folder for the manifests")
    p.add_argument("--num-valid", type=int, default=100, help="held-out validation clips (default 100)")
    p.add_argument("--num-test", type=int, default=100, help="held-out test clips (default 100)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the held-out choice (default 1234)")
    p.add_argument("--max-train", type=int, default=0, help="keep the first N training clips (default 0: all)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    return run_cli(p, argv, lambda args: make_manifests(
        args.data_dir, args.out, num_valid=args.num_valid, num_test=args.num_test, seed=args.seed,
        max_train=args.max_train, verbose=not args.quiet))


if __name__ == "__main__":
    sys.exit(main())
