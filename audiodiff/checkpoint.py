"""Checkpoints that survive kills, full disks and hostile files.

- Written atomically: a temporary file in the same folder, flushed and fsync'ed, then
  renamed over the final name; a kill at any point leaves either the old set of
  checkpoints or the new one, never a truncated file under a checkpoint's name.
- Each checkpoint has a sidecar `<name>.sha256`; loading checks it and, when a file is
  damaged, falls back to the previous checkpoint, saying so.
- Loaded with `torch.load(weights_only=True)` only: a pickle that would run code is
  refused, never executed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import torch

log = logging.getLogger("audiodiff")
CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message is one line."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj, path: Path) -> str:
    """torch.save to `path` atomically; returns the sha256 of the bytes written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        digest = _sha256(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return digest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, folder: Path, step: int, keep: int = 3) -> Path:
    """Write `folder/step_XXXXXXXX.pt` (+ .sha256) atomically and prune older ones.

    A full disk or any other OSError raises CheckpointError; the previous checkpoints
    are untouched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    side = path.with_name(path.name + ".sha256")
    try:
        digest = atomic_torch_save(state, path)
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(digest + "\n")
        os.replace(tmp, side)
    except OSError as e:
        path.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path} ({e.strerror or e}); the previous checkpoint is kept. "
            "Free disk space and re-run the same command to resume") from None
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in `folder`, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if CKPT_RE.match(p.name))


def safe_load(path: Path, map_location="cpu"):
    """torch.load with weights_only=True; a file that needs arbitrary code is refused."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:
        text = str(e).strip().splitlines()
        reason = text[0] if text else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            reason = "it contains pickled code or objects other than tensors and plain data; refused to load"
        raise CheckpointError(f"{path}: cannot load checkpoint ({reason})") from None


def verify(path: Path) -> str | None:
    """None when `path` matches its sidecar checksum, else the reason it does not."""
    side = path.with_name(path.name + ".sha256")
    if not side.exists():
        return "no .sha256 file beside it (the write was interrupted)"
    expected = side.read_text().strip()
    actual = _sha256(path)
    if actual != expected:
        return f"checksum mismatch (file damaged: {path.stat().st_size} bytes)"
    return None


def load_latest(folder: Path, map_location="cpu") -> tuple[dict | None, Path | None]:
    """The newest checkpoint in `folder` that verifies and loads; damaged ones are skipped
    with a warning naming the file and the reason. (None, None) when there is none."""
    for path in reversed(list_checkpoints(folder)):
        reason = verify(path)
        if reason is None:
            try:
                return safe_load(path, map_location), path
            except CheckpointError as e:
                reason = str(e)
        log.warning("skipping damaged checkpoint %s: %s; falling back to the previous one", path, reason)
    return None, None
