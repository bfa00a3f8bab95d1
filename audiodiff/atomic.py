"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or folder or the
whole new one, never a part. Standard library only, so the torch-free dataset builders use it too;
checkpoint.py adds checksummed torch files on top.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def write_text_atomic(path: Path, data: str | bytes, fsync: bool = True) -> None:
    """Write text (UTF-8, "\\n" line ends) or bytes to `path` through a temporary file beside it
    (flushed to disk first unless fsync=False) and a rename: a reader sees the old file or the whole
    new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj, indent: int = 2) -> None:
    """`obj` as JSON at `path`, atomically (parent folders made); NumPy and torch scalars become numbers,
    other objects strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=indent, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    write_text_atomic(path, text + "\n")


def replace_dir(tmp: Path, dest: Path, fsync: bool = False) -> None:
    """Move the finished folder `tmp` to `dest` by a rename (same file system), replacing an empty or
    earlier `dest`; the earlier one is moved aside first and put back if the rename fails, so `dest`
    is never half-written. fsync: flush every file in `tmp` to disk first."""
    tmp, dest = Path(tmp), Path(dest)
    if fsync:
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = None
    if dest.exists():
        if any(dest.iterdir()):
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        else:
            dest.rmdir()
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
