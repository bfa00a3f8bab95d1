"""Checkpoints that survive kills, full disks and hostile files.

- Written atomically: a temporary file in the same folder, flushed and fsync'ed, its
  sidecar `<name>.sha256` written next, then the file renamed over the final name; a kill
  at any point leaves either the old set of checkpoints or the new one, never a truncated
  file under a checkpoint's name (leftover temporaries are removed by the next save).
- Loading checks the sidecar and, when a file is damaged or has none, falls back to the
  previous checkpoint, saying so.
- A full disk (or any write error) is a one-line CheckpointError naming the reason;
  earlier checkpoints are untouched, and a checkpoint is only pruned once a newer one is
  complete.
- Loaded with `torch.load(weights_only=True)` only: a pickle that would run code is
  refused, never executed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import IO, cast

import torch
import torch.distributed as dist

from .atomic import file_sha256, write_text_atomic

log = logging.getLogger("audiodiff")
CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message is one line."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _RecordingWriter:
    """A write-only file for torch.save that remembers the OSError its file raised: torch
    reports a failed write (a full disk) as an opaque RuntimeError."""

    def __init__(self, file) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def _write_temporary(obj, tmp: Path) -> str:
    """torch.save `obj` to `tmp`, fsync'ed; returns its sha256. OSError on a failed write."""
    with open(tmp, "wb") as f:
        writer = _RecordingWriter(f)
        try:
            torch.save(obj, cast(IO[bytes], writer))  # a duck-typed file: write and flush suffice
        except Exception:
            if writer.error is not None:
                raise writer.error from None
            raise
        f.flush()
        os.fsync(f.fileno())
    return file_sha256(tmp)


def atomic_torch_save(obj, path: Path) -> str:
    """torch.save to `path` atomically; returns the sha256 of the bytes written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        digest = _write_temporary(obj, tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return digest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, folder: Path, step: int, keep: int = 3) -> Path:
    """Write `folder/step_XXXXXXXX.pt` (+ .sha256) atomically and prune older ones.

    Order: the temporary file, then the sidecar, then the rename; so a checkpoint under its
    final name always has its sidecar. A full disk or any other OSError raises
    CheckpointError; the previous checkpoints are untouched.
    """
    folder = Path(folder)
    path = folder / f"step_{step:08d}.pt"
    side = path.with_name(path.name + ".sha256")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(folder)
        digest = _write_temporary(state, tmp)
        write_text_atomic(side, digest + "\n")
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if not path.exists():
            side.unlink(missing_ok=True)
        elif verify(path) is not None:  # the sidecar was replaced but the file was not
            side.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path} ({e.strerror or e}); the previous checkpoint is kept. "
            "Free disk space and re-run the same command to resume") from None
    if keep > 0:  # prune only checkpoints older than this one: a newer name may be a damaged leftover
        older = [p for p in list_checkpoints(folder) if p.name < path.name]
        for old in older[:max(0, len(older) - (keep - 1))]:
            old.unlink(missing_ok=True)
            old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def _remove_leftovers(folder: Path) -> None:
    """Temporaries of writes that were killed, and sidecars whose checkpoint never landed."""
    for p in folder.iterdir():
        name = p.name
        if name.startswith(".step_") and ".tmp" in name:
            p.unlink(missing_ok=True)
        elif name.endswith(".pt.sha256") and CKPT_RE.match(name[:-len(".sha256")]) \
                and not p.with_name(name[:-len(".sha256")]).exists():
            p.unlink(missing_ok=True)


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
    actual = file_sha256(path)
    if actual != expected:
        return f"checksum mismatch (file damaged: {path.stat().st_size} bytes)"
    return None


def load_latest(folder: Path, map_location="cpu", skipped: list | None = None) -> tuple[dict | None, Path | None]:
    """The newest checkpoint in `folder` that verifies and loads; damaged ones are skipped
    with a warning naming the file and the reason (and appended to `skipped` as (path,
    reason) when a list is given). (None, None) when there is none."""
    for path in reversed(list_checkpoints(folder)):
        reason = verify(path)
        if reason is None:
            try:
                return safe_load(path, map_location), path
            except CheckpointError as e:
                reason = str(e).split(": cannot load checkpoint ", 1)[-1]
        log.warning("skipping damaged checkpoint %s: %s; falling back to the previous one", path, reason)
        if skipped is not None:
            skipped.append((path, reason))
    return None, None


def resume_state(ckpt_dir: Path, world: int = 1, main: bool = True) -> tuple[dict | None, Path | None]:
    """(state, path) of the checkpoint to resume from, the same on every rank: rank 0 picks the
    newest one that verifies and loads, the others load that file. Damaged newer ones are renamed
    `*.damaged` (kept for inspection, out of the way of pruning). A run whose checkpoints all
    fail to load is refused rather than silently restarted from step 0."""
    state = path = error = None
    if main:
        skipped: list = []
        state, path = load_latest(ckpt_dir, skipped=skipped)
        if state is None and skipped:
            first, why = skipped[0]
            error = (f"{ckpt_dir}: none of its {len(skipped)} checkpoint(s) loads ({first.name}: {why}); "
                     "move the folder away to start over, or use another run_dir")
        elif state is not None:
            for bad, _ in skipped:
                bad.rename(bad.with_name(bad.name + ".damaged"))
                log.warning("renamed %s to %s.damaged", bad.name, bad.name)
    if world > 1:
        shared = [str(path) if path is not None else None, error]
        dist.broadcast_object_list(shared, src=0)
        if not main:
            path, error = (Path(shared[0]) if shared[0] else None), shared[1]
            state = safe_load(path) if path is not None else None
    if error is not None:
        raise CheckpointError(error if main else f"rank 0 refused to resume: {error}")
    return state, path
