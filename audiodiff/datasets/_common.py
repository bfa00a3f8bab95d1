"""What the dataset modules share.

All of them (sc09, ljspeech, nsynth, folder, digits, notes, drums): the error type, atomic
writes of text/jsonl/json, the integer check and the command line (`run_cli`: cli's one-line
parser, errors and Ctrl-C as one line). Manifests are read with audiodiff.manifest.load_manifest.

The offline builders (digits, notes, drums) also share the machinery around their audio: the
build record in OUT/build.json that makes a rerun a no-op and refuses a folder made otherwise
(`finished_build`, `start_build`, `finish_build`) and drops a killed build's partial files,
atomic 16-bit WAV writes, the 80/10/10 cut, the split manifests, checks of seed and worker
count and the process pool's start method.

Standard library only at import: building manifests reads file trees and headers, never loads
torch (`write_wav` imports soundfile when it is called).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from ..atomic import write_text_atomic
from ..cli import OneLineParser, UsageError
from ..install import InstallError

SPLITS = ("train", "valid", "test")


class DatasetError(Exception):
    """A one-line, user-facing reason the manifests cannot be made (CLI: exit 2)."""


def is_count(value, low: int = 0) -> bool:
    """True for a plain int >= low (a bool is not a count, although Python says it is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# ----------------------------------------------------------------------------- files

def write_jsonl(path: Path, rows, ensure_ascii: bool = False) -> None:
    """One JSON object a line, written atomically. Non-ASCII is kept as is unless ensure_ascii
    (the offline builders' manifests escape it, as they always have: same bytes)."""
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=ensure_ascii) + "\n" for row in rows))


def write_json(path: Path, obj) -> None:
    """An indented JSON file (labels.json, info.json), written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


def write_wav(path: Path, pcm, sample_rate: int) -> None:
    """int16 samples as a mono 16-bit PCM WAV, written atomically."""
    import soundfile as sf

    buffer = io.BytesIO()  # encode in memory: soundfile fsyncs a real file on close, which costs more
    sf.write(buffer, pcm, sample_rate, subtype="PCM_16", format="WAV")
    write_text_atomic(path, buffer.getvalue(), fsync=False)  # a clip is rebuilt from its seed if lost


# ----------------------------------------------------------------------------- build record
#
# An offline build writes OUT/build.json twice: its parameters with "complete": false before it
# writes anything else, and the full record (counts and so on, "complete": true) last. A rerun
# with the same parameters is then a no-op, or a resume after a kill; other parameters, or a
# folder that no such build made, are refused rather than mixed or overwritten.

_RECORD = "build.json"


def finished_build(out: Path, params: dict, error: type[Exception],
                   describe: Callable[[dict], str]) -> dict | None:
    """The record of a complete earlier build in out with these params (nothing to do), or None
    (out is new or empty, or holds an unfinished build with these params: build or resume).

    params: what decides the output, with "builder" (the module's name). describe(theirs): how an
    earlier build's params read in the refusal, after "holds a digits build " (e.g. "with
    per_digit=3 seed=0"). Raises error when out is a file, a non-empty folder that no build of
    this builder made, or a build with other params.
    """
    kind = params["builder"].rsplit(".", 1)[-1]
    if out.exists() and not out.is_dir():
        raise error(f"--out {out} is a file; give a directory")
    if not (out.is_dir() and any(out.iterdir())):
        return None
    try:
        record = json.loads((out / _RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("builder") != params["builder"]:
        raise error(f"--out {out} is a non-empty directory that no {kind} build made; "
                    "give a new or empty directory")
    theirs = {k: record.get(k) for k in params}
    if theirs != params:
        raise error(f"--out {out} holds a {kind} build {describe(theirs)}; give a new directory "
                    "or delete that one")
    return record if record.get("complete") else None


def start_build(out: Path, params: dict) -> None:
    """Make out and mark it as this (unfinished) build before anything else is written.

    A killed build may have left *.tmp files: they are dropped. Its finished files were renamed
    into place (write_text_atomic), so they are whole and kept for the builder to reuse.
    """
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob("*.tmp"):
        stale.unlink()
    finish_build(out, {**params, "complete": False})


def finish_build(out: Path, record: dict) -> None:
    """Write the build record (params, "complete", counts...) to out/build.json."""
    write_text_atomic(out / _RECORD, json.dumps(record, indent=2) + "\n")


# ----------------------------------------------------------------------------- splits

def split_sizes(n: int, share: float = 0.1) -> tuple[int, int, int]:
    """(train, valid, test) sizes for n items: valid and test `share` each, but at least one
    each once there are enough (valid from 2 items, test from 3), train the rest."""
    n_valid = max(1, round(share * n)) if n >= 2 else 0
    n_test = max(1, round(share * n)) if n >= 3 else 0
    return n - n_valid - n_test, n_valid, n_test


def write_splits(out: Path, clips: Iterable[dict], order: Callable[[dict], tuple],
                 row: Callable[[dict], dict]) -> dict:
    """out/{train,valid,test}.jsonl: row(clip) for each clip of the split (clip["split"]), sorted
    by order(clip), non-ASCII escaped; return the clips per split."""
    clips = list(clips)
    counts = {}
    for split in SPLITS:
        rows = sorted((c for c in clips if c["split"] == split), key=order)
        counts[split] = len(rows)
        write_jsonl(out / f"{split}.jsonl", (row(c) for c in rows), ensure_ascii=True)
    return counts


# ----------------------------------------------------------------------------- arguments

def check_seed(seed, error: type[Exception]) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise error(f"seed must be a whole number, got {seed!r}")


def check_workers(workers, error: type[Exception]) -> int:
    """workers, or every CPU this process may use when None; error unless a whole number >= 1."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not is_count(workers, 1):
        raise error(f"workers must be a whole number >= 1, got {workers!r}")
    return workers


def pool_context():
    """The multiprocessing context for a render pool: fork where there is one (quick, and works
    when __main__ cannot be re-imported: stdin, some notebooks), else spawn."""
    import multiprocessing

    fork = "fork" in multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if fork else "spawn")


def package_version(dist: str) -> str:
    """The installed version of a distribution, for a build record ("unknown" when not found)."""
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return "unknown"


# ----------------------------------------------------------------------------- CLI

def build_parser(module: str, description: str) -> OneLineParser:
    """The CLI of an offline builder, `python -m audiodiff.datasets.MODULE --out DIR ...`."""
    parser = OneLineParser(prog=f"python -m audiodiff.datasets.{module}", description=description)
    parser.add_argument("--out", required=True, help="output directory (new, empty, or an earlier build)")
    return parser


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None, build: Callable[[argparse.Namespace], object],
            interrupted: str = "run the same command again") -> int:
    """Parse argv and call build(args): a mistake in the arguments (UsageError) or a DatasetError
    becomes one line on stderr and exit 2, an InstallError exit 1, Ctrl-C one line (interrupted: what
    to do next) and exit 130; else 0."""
    try:
        build(parser.parse_args(argv))
    except (UsageError, DatasetError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except InstallError as exc:  # torch or torchaudio cannot load: the machine, not the arguments
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted; {interrupted}\n")
    return 0
