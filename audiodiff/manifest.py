"""Lists of audio files: manifests (jsonl, Kaldi wav.scp), prepared folders and folder scans.

The data-directory contract (ESPnet's data dirs): `load_manifest` reads what users write,
`scan_folder` finds audio under a folder without ever following a loop or opening a FIFO, and
`read_prepared` reads what `python -m audiodiff.prepare` writes (manifest.jsonl + cache.json) and
`check_prepared_audio` says when its mel is not the one wanted; `resolve_audio_files` turns any of
these (or a list) into audio files.

Standard library only: the dataset builders read manifests without loading torch.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from .cli import UsageError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au")


class ManifestError(ValueError):
    """A manifest line is unusable; the message names the file and line number."""


def load_manifest(path: str | Path) -> list[dict]:
    """Read a jsonl manifest ({"path", ...} a line) or a Kaldi wav.scp ("<id> <path>" a line).

    Returns one dict per entry with "path" made absolute (relative paths are resolved
    against the manifest's folder), "id" (given, else the path as written) and "_line" (its
    line number). "label", when present, must be an int >= 0 or a name (str). Blank lines
    are skipped. Raises ManifestError naming file:line for anything else, and for
    duplicate paths or ids.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e})") from None
    scp = path.suffix != ".jsonl" and path.name.endswith(".scp")
    base = path.resolve().parent
    entries: list[dict] = []
    seen_paths: dict[str, int] = {}  # path -> its first line
    seen_ids: dict[str, int] = {}  # id -> its first line
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if scp:
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise ManifestError(f"{where}: expected '<id> <path>', got {line.strip()[:80]!r}")
            if parts[1].rstrip().endswith("|"):
                raise ManifestError(f"{where}: piped commands are not supported; decode to audio files first")
            entry: dict[str, Any] = {"id": parts[0], "path": parts[1].strip()}
        else:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            except ValueError as e:  # valid JSON that Python refuses, e.g. an integer of 5,000 digits
                raise ManifestError(f"{where}: unreadable JSON ({' '.join(str(e).split())[:120]})") from None
            if not isinstance(entry, dict):
                raise ManifestError(f"{where}: expected a JSON object like {{\"path\": \"a.wav\"}}, "
                                    f"got {type(entry).__name__}")
        p = entry.get("path")
        if not isinstance(p, str) or not p:
            raise ManifestError(f"{where}: missing \"path\" (a non-empty string); every line needs one")
        label = entry.get("label")
        if label is not None and not (isinstance(label, str) or
                                      (isinstance(label, int) and not isinstance(label, bool) and label >= 0)):
            raise ManifestError(f"{where}: label {label!r} must be an integer >= 0 or a name (string)")
        if "id" in entry and not isinstance(entry["id"], str):
            entry["id"] = str(entry["id"])
        entry.setdefault("id", p)
        full = os.path.normpath(os.path.join(base, os.path.expanduser(p)))
        if full in seen_paths:
            raise ManifestError(f"{where}: duplicate path {p!r} (first on line {seen_paths[full]})")
        if entry["id"] in seen_ids:
            raise ManifestError(f"{where}: duplicate id {entry['id']!r} (first on line {seen_ids[entry['id']]})")
        seen_paths[full], seen_ids[entry["id"]] = n, n
        entry["path"], entry["_line"] = full, n
        entries.append(entry)
    return entries


def read_prepared(prepared_dir: str | Path) -> tuple[list[dict], dict]:
    """(manifest entries, cache.json) of a folder written by audiodiff.prepare, checked to agree."""
    d = Path(prepared_dir)
    manifest, cache_path = d / "manifest.jsonl", d / "cache.json"
    if not manifest.is_file() or not cache_path.is_file():
        raise FileNotFoundError(f"{d} is not a prepared folder (needs manifest.jsonl and cache.json); "
                                f"run: python -m audiodiff.prepare AUDIO_DIR --out {d}")
    try:
        cache = json.loads(cache_path.read_text())
        entries = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    except ValueError as err:
        raise ValueError(f"{d}: damaged manifest.jsonl or cache.json ({err}); re-run python -m audiodiff.prepare "
                         f"AUDIO_DIR --out {d}") from None
    key = cache.get("key")
    for e in entries:
        if not e.get("feats", "").startswith(f"feats/{key}/"):
            raise ValueError(f"{d}: manifest.jsonl and cache.json disagree ({e.get('feats')!r} is not under "
                             f"feats/{key}/); an interrupted prepare? Re-run python -m audiodiff.prepare")
    return entries, cache


def check_prepared_audio(data_dir, prepared, wanted, whose: str = "",
                         fix: str = "re-run prepare with this config or set audio.* to match") -> None:
    """UsageError when the mel a folder was prepared with (`prepared`, an AudioConfig) is not the one
    `wanted` (the run's config, or `whose`'s: "the classifier's"), naming both values and `fix`."""
    mismatch = prepared.describe_mismatch(wanted, "data", whose.removeprefix("the ").removesuffix("'s") or "config")
    if mismatch:
        than = f" than {whose}" if whose else ""
        raise UsageError(f"{data_dir} was prepared with another audio config{than} ({mismatch}); {fix}")


# --------------------------------------------------------------------------- dataset


def _has_audio_ext(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


def scan_folder(root: str | Path, exclude: str | Path | None = None):
    """Audio files under `root`, recursively, sorted; symlinks followed, loops never.

    Returns (entries [{"path", "id"}], skipped [(path, reason)], ignored count).
    Broken symlinks, symlink loops, directories named like audio, unreadable directories
    and non-regular files (FIFOs would hang a reader) are skipped with a reason.
    """
    root = os.path.abspath(os.fspath(root))
    exclude = os.path.abspath(os.fspath(exclude)) if exclude is not None else None
    entries, skipped, ignored = [], [], 0
    visited: dict = {}  # (dev, inode) -> the path it was searched as; marked when walked (depth-first)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as e:
            skipped.append((folder, f"unreadable directory: {e.strerror or e}"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            skipped.append((folder, f"symlink loop: directory already searched as {visited[key]!r}"))
            continue
        visited[key] = folder
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append((folder, f"unreadable directory: {e.strerror or e}"))
            continue
        subdirs = []
        for child in children:
            path = child.path
            if exclude is not None and path == exclude:
                continue
            try:
                st = os.stat(path)  # follows symlinks
            except OSError as e:
                if child.is_symlink():
                    if e.errno == errno.ELOOP:
                        skipped.append((path, "symlink loop: the link resolves to itself"))
                    else:
                        skipped.append((path, f"broken symlink: target {os.readlink(path)!r} does not exist"))
                else:
                    skipped.append((path, f"unreadable: {e.strerror or e}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if _has_audio_ext(child.name):
                    skipped.append((path, "not a file: a directory named like audio (searched inside)"))
                subdirs.append(path)
            elif _has_audio_ext(child.name):
                if not stat.S_ISREG(st.st_mode):
                    skipped.append((path, "not a regular file (FIFO, socket or device)"))
                    continue
                entries.append({"path": path, "id": os.path.relpath(path, root).replace(os.sep, "/")})
            else:
                ignored += 1
        stack.extend(reversed(subdirs))
    entries.sort(key=lambda e: os.fsencode(e["path"]))
    return entries, skipped, ignored


def resolve_audio_files(data, split: str | None = None) -> list[Path]:
    """Audio files from a prepared folder, a plain folder, a manifest (.jsonl/.scp), one file or a list."""
    if isinstance(data, (list, tuple)):
        files = [Path(p) for p in data]
    else:
        path = Path(data)
        if path.is_dir() and (path / "manifest.jsonl").is_file() and (path / "cache.json").is_file():
            entries, _ = read_prepared(path)
            if split is not None:
                entries = [e for e in entries if e.get("split") == split]
            files = [Path(e["path"]) for e in entries]
        elif path.is_dir():
            files = [Path(e["path"]) for e in scan_folder(path)[0]]  # sorted; no loops, no FIFOs
        elif path.is_file() and (path.suffix == ".jsonl" or path.name.endswith(".scp")):
            entries = load_manifest(path)
            if split is not None:
                entries = [e for e in entries if e.get("split") == split]
            files = [Path(e["path"]) for e in entries]
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"vocoder data {str(data)!r} does not exist; give a prepared folder, "
                                    "an audio folder, a .jsonl or wav.scp manifest, or a list of files")
    if not files:
        raise ValueError(f"vocoder data {str(data)!r} has no audio files"
                         + (f" with split={split!r}" if split else "") + f" ({', '.join(AUDIO_EXTENSIONS)})")
    return files


def gather_inputs(paths, pattern: str | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files, [(path, reason)] skipped) from command-line INPUTs: files, folders searched recursively
    (scan_folder; with `pattern`, a glob of the folder instead) and manifests (.jsonl rows with "path",
    or generate's clips.jsonl with "file" beside it). UsageError for a missing INPUT or no files at all."""
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            if pattern:
                files += sorted(path.glob(pattern))
                continue
            entries, bad, _ = scan_folder(path)
            files += [Path(e["path"]) for e in entries]
            skipped += bad
        elif path.suffix == ".jsonl" and path.is_file():
            try:
                files += _clips_files(path) or [Path(r["path"]) for r in load_manifest(path)]
            except ValueError as e:
                raise UsageError(str(e).splitlines()[0]) from None
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"INPUT {path} does not exist; give audio files, folders or a clips.jsonl")
    if not files:
        what = pattern or f"audio files ({', '.join(AUDIO_EXTENSIONS)})"
        raise UsageError(f"no {what} found in {' '.join(map(str, paths))}")
    return files, skipped


def _clips_files(path: Path) -> list[Path]:
    """The clips of generate's clips.jsonl ({"file": "clip_0000.wav", ...} beside it), or [] for another manifest."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not rows or not all(isinstance(r, dict) and isinstance(r.get("file"), str) and "path" not in r for r in rows):
        return []
    return [path.parent / r["file"] for r in rows]
