"""python -m audiodiff.prepare INPUT --out DIR: audio folder or manifest -> checked manifest + feature cache.

INPUT is a folder (searched recursively for AUDIO_EXTENSIONS, following symlinks but never
a loop) or a manifest (`.jsonl`, one {"path": ...} object a line, optional "label" (int, or a
name mapped through labels.json), "speaker", "id", "split" and any other keys, which are
kept; or a Kaldi-style `wav.scp`, "<id> <path>" a line). Relative paths are resolved against
the manifest's folder.

Every file is checked: it decodes, has samples, they are finite, not silent (peak >= 1e-4)
and long enough (`min_seconds`). Usable clips are resampled to the AudioConfig's rate and
their normalised log-mel is computed once with `audio.MelSpec` (in chunks, so a long clip
never holds a full STFT in memory; `max_seconds` keeps only the beginning of longer clips).

DIR gets:
  manifest.jsonl   usable clips in input order (folder: sorted paths), one JSON object a line:
                   {"id", "path" (absolute), "seconds", "num_frames", "feats" (relative to DIR),
                   "orig_sample_rate", "channels", ["label", "label_name", "speaker", ...],
                   ["warnings": ["dc_offset" | "clipping"]]}
  skipped.tsv      path<TAB>reason, one line each ("too short: 0.010 s < min 0.1 s"); in
                   paths, \\ tab newline and CR are backslash-escaped and non-UTF-8 bytes are
                   written as \\xNN
  feats/<key>/<sha1 of path>.npy   one array [num_frames, n_mels] (time-major, so a random
                   segment is one contiguous read; np.load(mmap_mode="r") works), float16 by
                   default; <key> names the AudioConfig hash, dtype and max_seconds
  cache.json       {"audio_config": {...}, "config_hash": AudioConfig.hash(), "feature_dtype",
                   "max_seconds", "files": {abs path: {size, mtime_ns, result}}}
  labels.json      label name -> int, when labels were given as names (or a labels.json was found)

A re-run with the same config only decodes new or changed files (size + mtime); a changed
config recomputes everything (and removes the old feats/<key>/). Outputs are written to
temporary names and renamed, so an interrupted run leaves the previous outputs intact.
Long clips: a 30-minute 22 kHz clip needs about 1 GB of memory in its worker (decoded
samples plus the resampler); use --max-seconds to cap longer material or split it first.

Exit status: 0 when at least one clip is usable, 1 when none is (or, with --strict, when any
file was skipped), 2 for a bad argument (nothing is written).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import stat
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .atomic import write_text_atomic
from .audio import (AudioConfig, AudioConfigError, AudioFileError, MelSpec, audio_info, load_audio,
                    resample)
from .cli import OneLineParser, UsageError
from .config import load_audio_config_file
from .install import InstallError
from .install import check as check_install
from .manifest import AUDIO_EXTENSIONS, ManifestError, load_manifest, scan_folder

SILENCE_PEAK = 1e-4        # peak below this: the clip is silent and skipped
DC_OFFSET = 0.2            # |mean| above this: kept, counted in a warning
CLIP_LEVEL = 0.999         # |x| at or above this counts as a clipped sample
CLIP_FRACTION = 1e-3       # kept with a "clipping" warning when more than 0.1% of samples clip
MEL_CHUNK_FRAMES = 8192    # frames per MelSpec call for long clips (bounds the STFT's memory)
FEATURE_DTYPES = ("float16", "float32")
CACHE_VERSION = 1


AUDIO_FIELDS = [f.name for f in dataclasses.fields(AudioConfig)]  # each an --option of the CLI


class EnvironmentFault(RuntimeError):
    """Every file failed the same unexpected way: the machine is at fault, not the audio."""


class PrepareArgumentError(UsageError):
    """A bad argument to prepare(); the CLI prints it on one line and exits 2."""


@dataclass
class PrepareReport:
    """What prepare() did. `skipped` is [(path, reason)]; `skipped_by_reason` counts reason kinds."""

    out_dir: Path
    usable: int = 0
    total_seconds: float = 0.0
    skipped: list = field(default_factory=list)
    skipped_by_reason: dict = field(default_factory=dict)
    computed: int = 0          # files decoded this run
    reused: int = 0            # files whose cached result was reused
    ignored: int = 0           # files without an audio extension (folder input)
    warnings: dict = field(default_factory=dict)  # "dc_offset" / "clipping" -> count of kept clips
    seconds_elapsed: float = 0.0

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.jsonl"

    @property
    def skipped_path(self) -> Path:
        return self.out_dir / "skipped.tsv"

    def summary(self) -> str:
        lines = [f"prepare: {self.usable} usable clip(s), {_hms(self.total_seconds)} "
                 f"({self.total_seconds:.1f} s); {len(self.skipped)} skipped; "
                 f"{self.computed} computed, {self.reused} reused from the cache "
                 f"({self.seconds_elapsed:.1f} s)"]
        if self.skipped_by_reason:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.skipped_by_reason.items()))
            lines.append(f"  skipped: {kinds} (see {self.skipped_path})")
        if self.warnings.get("dc_offset"):
            lines.append(f"  warning: {self.warnings['dc_offset']} kept clip(s) with a DC offset "
                         f"|mean| > {DC_OFFSET}")
        if self.warnings.get("clipping"):
            lines.append(f"  warning: {self.warnings['clipping']} kept clip(s) with clipping "
                         f"(> {CLIP_FRACTION:.1%} of samples at |x| >= {CLIP_LEVEL})")
        if self.ignored:
            lines.append(f"  ignored {self.ignored} file(s) without an audio extension "
                         f"({', '.join(AUDIO_EXTENSIONS)})")
        lines.append(f"  wrote {self.manifest_path}")
        return "\n".join(lines)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------- the mel, in chunks

def compute_mel(wave: torch.Tensor, melspec: MelSpec, chunk_frames: int = MEL_CHUNK_FRAMES) -> torch.Tensor:
    """MelSpec of a mono wave [T] -> [n_mels, F], F = 1 + T // hop, computed chunk by chunk.

    Equal to melspec(wave) (up to float rounding): each chunk is padded on both sides by
    k = ceil(n_fft / 2 / hop) frames of real signal, so every kept frame's window lies
    inside the chunk; only the two ends of the clip use MelSpec's own reflect padding.
    """
    c = melspec.config
    total = c.num_frames(wave.shape[-1])
    if total <= chunk_frames:
        return melspec(wave.unsqueeze(0))[0]
    hop, k = c.hop_length, math.ceil(c.n_fft / 2 / c.hop_length)
    out = torch.empty(c.n_mels, total)  # [n_mels, F]
    for a in range(0, total, chunk_frames):
        b = min(a + chunk_frames, total)
        first = max(0, a - k)
        start, stop = first * hop, min(wave.shape[-1], (b - 1 + k) * hop + 1)
        mel = melspec(wave[start:stop].unsqueeze(0))[0]  # [n_mels, F_chunk]
        out[:, a:b] = mel[:, a - first:b - first]
    return out


# --------------------------------------------------------------------------- one file (in a worker)

_MELSPECS: dict = {}


def _init_worker() -> None:
    torch.set_num_threads(1)  # the pool is the parallelism; threads would oversubscribe the cores


def _reason(e: Exception, path: str) -> str:
    """One-line reason from an AudioFileError, without the path (skipped.tsv has it already)."""
    text = str(e)
    for prefix in (f"{path}: ", "cannot decode audio ("):
        if text.startswith(prefix):
            text = text[len(prefix):].removesuffix(")") if prefix.endswith("(") else text[len(prefix):]
    return text.replace(f"Error opening {path!r}: ", "")


def process_file(task: dict) -> dict:
    """Check, decode, resample and featurise one file; never raises.

    task: {path, feat_path, config (dict), min_seconds, max_seconds, dtype}.
    Returns {"status": "ok", seconds, num_frames, orig_sample_rate, channels, warnings}
    or {"status": "skip", "reason", ["seconds"]}.
    """
    path = task["path"]
    try:
        return _process_file(task)
    except MemoryError:
        return {"status": "skip", "reason": "error: out of memory (use --max-seconds to cap long clips)"}
    except InstallError as e:  # the environment, not this file: prepare() stops on it
        return {"status": "install_error", "reason": str(e)}
    except Exception as e:  # one bad file never stops the run
        return {"status": "skip", "reason": f"error: {type(e).__name__}: {_reason(e, path)}"}


@contextlib.contextmanager
def _libsndfile_path(path: str):
    """A name libsndfile can open: soundfile encodes str paths strictly, so a name that is not
    valid in the file system encoding (bytes on Linux) is opened through a temporary symlink."""
    try:
        path.encode(sys.getfilesystemencoding())
        yield path
        return
    except UnicodeEncodeError:
        pass
    folder = tempfile.mkdtemp(prefix="audiodiff-prepare-")
    alias = os.path.join(folder, "audio" + os.path.splitext(path)[1].encode("ascii", "replace").decode())
    try:
        os.symlink(os.path.abspath(path), alias)
        yield alias
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _process_file(task: dict) -> dict:
    with _libsndfile_path(task["path"]) as path:
        return _check_and_featurise({**task, "path": path})


def _check_and_featurise(task: dict) -> dict:
    path, min_seconds = task["path"], task["min_seconds"]
    skip = lambda reason, **kw: {"status": "skip", "reason": reason, **kw}  # noqa: E731
    try:  # a cheap probe first: permissions, directories and empty files get a plain reason
        with open(path, "rb") as f:
            head = f.read(16)
    except PermissionError:
        return skip("unreadable: permission denied")
    except IsADirectoryError:
        return skip("not a file: is a directory")
    except OSError as e:
        return skip(f"unreadable: {e.strerror or e}")
    if not head:
        return skip("empty file: 0 bytes")
    try:
        info = audio_info(path)
    except AudioFileError as e:
        return skip(f"cannot decode: {_reason(e, path)}")
    if info.frames <= 0 or info.samplerate <= 0:
        return skip("no samples: the header declares 0 frames")
    declared = info.frames / info.samplerate
    if declared < min_seconds:
        return skip(_too_short(declared, min_seconds), seconds=declared)
    try:
        wave = load_audio(path, None, max_seconds=task["max_seconds"])  # [T] at the file's own rate
    except AudioFileError as e:
        return skip(f"cannot decode: {_reason(e, path)}")
    seconds = wave.shape[0] / info.samplerate
    if seconds < min_seconds:  # truncated data: fewer samples than the header said
        return skip(_too_short(seconds, min_seconds), seconds=seconds)
    finite = torch.isfinite(wave)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        return skip(f"non-finite samples: {bad} NaN/Inf of {wave.numel()}")
    peak = float(wave.abs().max())
    if peak < SILENCE_PEAK:
        return skip(f"silent: peak {peak:.1e} < {SILENCE_PEAK:g}", seconds=seconds)
    warnings = []
    if abs(float(wave.mean())) > DC_OFFSET:
        warnings.append("dc_offset")
    if float((wave.abs() >= CLIP_LEVEL).float().mean()) > CLIP_FRACTION:
        warnings.append("clipping")

    config = AudioConfig.from_dict(task["config"])
    key = config.hash()
    melspec = _MELSPECS.get(key)
    if melspec is None:
        melspec = _MELSPECS[key] = MelSpec(config)
    wave = resample(wave, info.samplerate, config.sample_rate)  # [T']
    if wave.shape[0] <= config.n_fft // 2:
        return skip(f"too short: {wave.shape[0]} samples at {config.sample_rate} Hz, MelSpec needs "
                    f"more than n_fft // 2 = {config.n_fft // 2}", seconds=seconds)
    with torch.no_grad():
        mel = compute_mel(wave, melspec)  # [n_mels, F]
    del wave
    feats = mel.T.contiguous().numpy().astype(task["dtype"])  # [F, n_mels], time-major
    _atomic_save_npy(task["feat_path"], feats)
    return {"status": "ok", "seconds": round(seconds, 6), "num_frames": int(feats.shape[0]),
            "orig_sample_rate": int(info.samplerate), "channels": int(info.channels),
            "warnings": warnings}


def _too_short(seconds: float, min_seconds: float) -> str:
    return f"too short: {seconds:.3f} s < min {min_seconds:g} s"


def _atomic_save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- finding the files

def _escape_path(path: str) -> str:
    """A path on one TSV field: \\ tab LF CR escaped, non-UTF-8 bytes as \\xNN."""
    raw = os.fsencode(path)
    raw = raw.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return raw.decode("utf-8", errors="backslashreplace")


def _one_line(text: object) -> str:
    """One line of valid UTF-8: whitespace runs become one space, stray bytes become \\xNN."""
    text = " ".join(str(text).split())
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_labels_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PrepareArgumentError(f"{path}: cannot read labels ({_one_line(e)}); expected a JSON "
                                   'object {"name": int} or a list of names') from None
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        raw = {n: i for i, n in enumerate(raw)}
    if not (isinstance(raw, dict) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                          for v in raw.values())):
        raise PrepareArgumentError(f"{path}: labels must be a JSON object {{\"name\": int >= 0}} "
                                   "or a list of names")
    return raw


def _manifest_entries(path: Path, labels_path: Path | None):
    """Entries of an input manifest with labels resolved to ints; label map (or None)."""
    try:
        entries = load_manifest(path)
    except ManifestError as err:
        raise PrepareArgumentError(str(err)) from None
    if labels_path is None and (path.parent / "labels.json").is_file():
        labels_path = path.parent / "labels.json"
    mapping = _read_labels_json(labels_path) if labels_path is not None else None
    names = sorted({e["label"] for e in entries if isinstance(e.get("label"), str)})
    if names and mapping is None:
        given = [e for e in entries if isinstance(e.get("label"), int)]
        if given:
            raise PrepareArgumentError(
                f"{path}:{given[0]['_line']}: labels mix integers and names ({given[0]['label']!r} and "
                f"{names[0]!r}); use one kind, or give a labels.json that maps every name to its integer")
        mapping = {n: i for i, n in enumerate(names)}
    for e in entries:
        if isinstance(e.get("label"), str):
            name = e["label"]
            assert mapping is not None  # names were found, so a mapping was read or made above
            if name not in mapping:
                raise PrepareArgumentError(
                    f"{path}:{e['_line']}: label {name!r} is not in {labels_path}; add it there or "
                    f"use one of {', '.join(sorted(mapping))}")
            e["label"], e["label_name"] = mapping[name], name
    return entries, mapping


# --------------------------------------------------------------------------- the run

def _cache_key(config: AudioConfig, dtype: str, max_seconds: float | None) -> str:
    blob = json.dumps([config.hash(), dtype, max_seconds, CACHE_VERSION]).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _json_line(obj: dict) -> str:
    try:  # readable UTF-8; names that are not valid UTF-8 fall back to \\udcXX escapes
        line = json.dumps(obj, ensure_ascii=False)
        line.encode("utf-8")
        return line
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True)


def _check_args(input, out_dir, audio_config, min_seconds, max_seconds, workers, feature_dtype):
    if not isinstance(audio_config, AudioConfig):
        raise PrepareArgumentError(f"audio_config must be an AudioConfig, got {type(audio_config).__name__}")
    for name, value in (("min_seconds", min_seconds), ("max_seconds", max_seconds)):
        if value is None and name == "max_seconds":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PrepareArgumentError(f"{name}={value!r} is invalid: must be a finite number >= 0")
    if max_seconds is not None and max_seconds <= max(min_seconds, 0):
        raise PrepareArgumentError(f"max_seconds={max_seconds!r} must be > min_seconds={min_seconds!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise PrepareArgumentError(f"workers={workers!r} is invalid: must be an integer >= 0 "
                                   "(0 runs in this process)")
    if feature_dtype not in FEATURE_DTYPES:
        raise PrepareArgumentError(f"feature_dtype={feature_dtype!r} is invalid; choose one of "
                                   f"{', '.join(FEATURE_DTYPES)}")
    inp = Path(input)
    if not inp.exists():
        raise PrepareArgumentError(f"INPUT {inp} does not exist; give an audio folder or a .jsonl manifest")
    if not (inp.is_dir() or (inp.is_file() and (inp.suffix == ".jsonl" or inp.name.endswith(".scp")))):
        raise PrepareArgumentError(f"INPUT {inp} is neither a folder nor a manifest (.jsonl or wav.scp)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PrepareArgumentError(f"--out {out} exists and is not a folder")
    if inp.is_dir() and out.resolve() == inp.resolve():
        raise PrepareArgumentError(f"--out {out} is the input folder; choose a separate folder "
                                   f"(a subfolder such as {out}/prepared is fine)")
    return inp, out


def prepare(input: str | Path, out_dir: str | Path, audio_config: AudioConfig | None = None, *,
            min_seconds: float = 0.1, max_seconds: float | None = None, strict: bool = False,
            workers: int | None = None, feature_dtype: str = "float16",
            labels: str | Path | None = None, progress: bool | None = None) -> PrepareReport:
    """Check every file of INPUT, cache the features of the usable ones, write DIR's outputs.

    Raises PrepareArgumentError (before writing anything) for bad arguments. Bad audio is
    never an exception: it is listed in skipped.tsv with a reason. `workers`: processes
    that decode (None: the CPU count, at most 8; 0: this process). `progress`: a tqdm bar
    (None: only on a terminal). `strict` changes only the CLI's exit status.
    """
    t0 = time.time()
    audio_config = AudioConfig() if audio_config is None else audio_config
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    inp, out = _check_args(input, out_dir, audio_config, min_seconds, max_seconds, workers, feature_dtype)
    label_map = None
    pre_skipped: list = []
    ignored = 0
    if inp.is_dir():
        try:
            entries, pre_skipped, ignored = scan_folder(inp, exclude=out)
        except OSError as e:
            raise PrepareArgumentError(f"INPUT {inp}: cannot read the folder ({e.strerror or e})") from None
    else:
        entries, label_map = _manifest_entries(inp, Path(labels) if labels is not None else None)
    if labels is not None and label_map is None:
        label_map = _read_labels_json(Path(labels))

    check_install()  # a torchaudio that cannot load would otherwise fail every file as "bad audio"

    # ---- from here on, things are written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepareArgumentError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    key = _cache_key(audio_config, feature_dtype, max_seconds)
    feat_dir = out / "feats" / key
    feat_dir.mkdir(parents=True, exist_ok=True)
    old = _read_cache(out / "cache.json")
    old_files = old.get("files", {}) if old.get("key") == key else {}

    report = PrepareReport(out_dir=out, ignored=ignored)
    task = {"config": audio_config.to_dict(), "min_seconds": float(min_seconds), "max_seconds": max_seconds,
            "dtype": feature_dtype}
    results, stats, tasks = _plan(entries, out, key, old_files, task, report)
    for i, result in _run_tasks(tasks, workers, progress):
        if result["status"] == "install_error":
            raise InstallError(result["reason"])  # stop at the first: no file is to blame
        results[i] = result
        report.computed += 1
    _refuse_environment_fault(tasks, results)

    manifest_lines, files, keep = _assemble(entries, results, stats, min_seconds, report)
    report.skipped = pre_skipped + report.skipped
    if inp.is_dir():  # folder input: one sorted list (manifest input keeps its own order)
        report.skipped.sort(key=lambda item: os.fsencode(item[0]))
    report.skipped_by_reason = dict(Counter(r.split(":")[0].split(" (")[0] for _, r in report.skipped))
    skipped_lines = [f"{_escape_path(path)}\t{_one_line(reason)}\n" for path, reason in report.skipped]

    cache = {"version": CACHE_VERSION, "key": key, "audio_config": audio_config.to_dict(),
             "config_hash": audio_config.hash(), "feature_dtype": feature_dtype,
             "max_seconds": max_seconds, "files": files}
    write_text_atomic(out / "cache.json", json.dumps(cache, indent=1) + "\n")
    if label_map is not None:
        write_text_atomic(out / "labels.json", json.dumps(label_map, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(out / "manifest.jsonl", "".join(line + "\n" for line in manifest_lines))
    write_text_atomic(out / "skipped.tsv", "".join(skipped_lines))
    _remove_stale(out / "feats", key, keep)
    report.seconds_elapsed = time.time() - t0
    return report


def _plan(entries: list, out: Path, key: str, old_files: dict, task: dict, report: PrepareReport):
    """(results, file stats, tasks) by entry index: a stat of every file, which gives the reasons that
    need no decoding, and cached results reused where size, mtime and features still match; the rest
    become tasks (task: the settings every task shares)."""
    results: list = [None] * len(entries)
    stats: list = [None] * len(entries)
    tasks: dict = {}
    for i, e in enumerate(entries):
        path = os.path.abspath(e["path"])
        e["path"] = path
        try:
            st = os.stat(path)
        except OSError as err:
            results[i] = {"status": "skip", "reason": _stat_reason(path, err)}
            continue
        if stat.S_ISDIR(st.st_mode):
            results[i] = {"status": "skip", "reason": "not a file: is a directory"}
            continue
        if not stat.S_ISREG(st.st_mode):
            results[i] = {"status": "skip", "reason": "not a regular file (FIFO, socket or device)"}
            continue
        # named by path, size and mtime: a changed file's new features never overwrite the ones the
        # previous manifest names, so an interrupted run leaves the previous outputs consistent
        identity = os.fsencode(path) + f"\0{st.st_size}\0{st.st_mtime_ns}".encode()
        feat_name = hashlib.sha1(identity).hexdigest()[:20] + ".npy"
        e["feats"] = f"feats/{key}/{feat_name}"
        stats[i] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        cached = old_files.get(path)
        if cached and cached["size"] == st.st_size and cached["mtime_ns"] == st.st_mtime_ns \
                and _still_valid(cached["result"], out / e["feats"], task["min_seconds"]):
            results[i] = cached["result"]
            report.reused += 1
            continue
        tasks[i] = {"path": path, "feat_path": str(out / e["feats"]), **task}
    return results, stats, tasks


def _stat_reason(path: str, err: OSError) -> str:
    if os.path.islink(path) and err.errno == errno.ELOOP:
        return "symlink loop: the link resolves to itself"
    if os.path.islink(path):
        return "broken symlink: target does not exist"
    if err.errno == errno.ENOENT:
        return "missing: no such file"
    return f"unreadable: {err.strerror or err}"


def _assemble(entries: list, results: list, stats: list, min_seconds: float, report: PrepareReport):
    """(manifest lines, the cache's file records, feature files to keep) in input order; skipped files
    and counts go into the report."""
    manifest_lines, files, keep = [], {}, set()
    for i, (e, result) in enumerate(zip(entries, results)):
        path = e["path"]
        if stats[i] is not None and not result.get("reason", "").startswith(("error", "unreadable")):
            files[path] = {**stats[i], "result": result}  # transient failures are retried next run
            if result["status"] == "ok":
                keep.add(e["feats"].rsplit("/", 1)[1])
        if result["status"] == "ok" and result["seconds"] < min_seconds:
            result = {"status": "skip", "reason": _too_short(result["seconds"], min_seconds)}
        if result["status"] != "ok":
            report.skipped.append((path, _one_line(result["reason"])))
            continue
        item = {"id": e.get("id", path), "path": path}
        item.update({k: v for k, v in e.items() if not k.startswith("_") and k not in item})
        item.update({"seconds": result["seconds"],
                     "num_frames": result["num_frames"], "feats": e["feats"],
                     "orig_sample_rate": result["orig_sample_rate"], "channels": result["channels"]})
        if result["warnings"]:
            item["warnings"] = list(result["warnings"])
            for w in result["warnings"]:
                report.warnings[w] = report.warnings.get(w, 0) + 1
        manifest_lines.append(_json_line(item))
        report.usable += 1
        report.total_seconds += result["seconds"]
    return manifest_lines, files, keep


def _refuse_environment_fault(tasks: dict, results: list) -> None:
    """The same unexpected exception on every file (at least two) is a fault of the environment
    (a library, a full temporary folder), not of the audio: EnvironmentFault instead of a
    skipped.tsv that blames each file. Decoding failures ("cannot decode: ...") are the
    files' own, however many there are."""
    reasons = {results[i]["reason"] for i in tasks if results[i]["status"] != "ok"}
    failed = sum(results[i]["status"] != "ok" for i in tasks)
    if len(tasks) >= 2 and failed == len(tasks) and len(reasons) == 1:
        (reason,) = reasons
        if reason.startswith("error: ") and "out of memory" not in reason and "process died" not in reason:
            raise EnvironmentFault(f"all {len(tasks)} files failed with the same error, a fault of the "
                                   f"environment, not of the audio ({_one_line(reason)[7:]}); nothing was "
                                   f"written: fix it and re-run")


def _still_valid(result: dict, feat_path: Path, min_seconds: float) -> bool:
    """Whether a cached per-file result can be reused under this run's min_seconds."""
    if result["status"] == "ok":
        return feat_path.is_file()
    if result["reason"].startswith("too short") and result.get("seconds", 0.0) >= min_seconds:
        return False  # skipped as too short under a larger min_seconds: look again
    return True


def _read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
        return cache if isinstance(cache, dict) and cache.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError):
        return {}  # no cache or a damaged one: recompute


def _remove_stale(feats: Path, key: str, keep: set) -> None:
    """Drop feature folders of other configs and files no clip refers to any more."""
    for child in feats.iterdir():
        if child.name != key and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
    for f in (feats / key).iterdir():
        if f.name not in keep:
            f.unlink(missing_ok=True)


def _run_tasks(tasks: dict, workers: int, progress: bool | None):
    """Yield (index, result) in index order; worker processes when workers >= 1.

    A worker that dies (a crashing decoder, the OOM killer) never hangs the run: the files
    it may have held are retried one by one in fresh processes, and the one that kills its
    process again is skipped with a reason.
    """
    from tqdm import tqdm

    order = sorted(tasks)
    bar = tqdm(total=len(order), desc="prepare", unit="file", disable=(not progress) if progress is not None
               else None, file=sys.stderr, dynamic_ncols=True)
    try:
        if workers == 0 or not order:
            for i in order:
                yield i, process_file(tasks[i])
                bar.update()
            return
        ctx = multiprocessing.get_context("fork")
        pending = list(order)
        pool = cf.ProcessPoolExecutor(min(workers, len(order)), mp_context=ctx, initializer=_init_worker)
        try:
            futures = {i: pool.submit(process_file, tasks[i]) for i in order}
            for i in order:
                try:
                    result = futures[i].result()
                except cf.process.BrokenProcessPool:
                    break
                pending.remove(i)
                yield i, result
                bar.update()
        finally:  # on Ctrl-C, drop the queued files instead of finishing them
            pool.shutdown(wait=True, cancel_futures=True)
        for i in pending:  # only after a worker died
            with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker) as solo:
                try:
                    result = solo.submit(process_file, tasks[i]).result()
                except cf.process.BrokenProcessPool:
                    result = {"status": "skip", "reason": "error: the decoding process died "
                                                          "(crashing decoder or out of memory)"}
            yield i, result
            bar.update()
    finally:
        bar.close()


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m audiodiff.prepare",
                description="Check an audio folder or manifest; write DIR/manifest.jsonl, DIR/skipped.tsv "
                            "and a mel feature cache.")
    p.add_argument("input", help="audio folder (searched recursively) or manifest (.jsonl / wav.scp)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--audio-config", type=Path, help="YAML/JSON AudioConfig (e.g. recipes/audio/hifigan.yaml)")
    defaults = AudioConfig()
    for name in AUDIO_FIELDS:
        p.add_argument("--" + name.replace("_", "-"), type=type(getattr(defaults, name)), default=None,
                       help=f"override the audio config (default {getattr(defaults, name)})")
    p.add_argument("--min-seconds", type=float, default=0.1, help="shorter clips are skipped (default 0.1)")
    p.add_argument("--max-seconds", type=float, default=None, help="keep only the first N seconds of longer clips")
    p.add_argument("--feature-dtype", default="float16", choices=FEATURE_DTYPES)
    p.add_argument("--labels", help="labels.json: label name -> int (default: next to the manifest, if any)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPUs, max 8; 0: none)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any file was skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    try:
        args = p.parse_args(argv)
        values = load_audio_config_file(args.audio_config, "--audio-config") if args.audio_config else {}
        for name in AUDIO_FIELDS:
            if getattr(args, name) is not None:
                values[name] = getattr(args, name)
        config = AudioConfig.from_dict(values)
        report = prepare(args.input, args.out, config, min_seconds=args.min_seconds,
                         max_seconds=args.max_seconds, strict=args.strict, workers=args.workers,
                         feature_dtype=args.feature_dtype, labels=args.labels,
                         progress=False if args.quiet else None)
    except (UsageError, AudioConfigError) as e:
        print(f"{p.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (InstallError, EnvironmentFault) as e:
        print(f"{p.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{p.prog}: interrupted; the previous outputs are kept; re-run the same command to go on "
              "(files unchanged since the last complete run are not decoded again)", file=sys.stderr)
        return 130
    print(report.summary())
    if report.usable == 0:
        print(f"{p.prog}: no usable audio in {args.input}; see {report.skipped_path}", file=sys.stderr)
        return 1
    if args.strict and report.skipped:
        print(f"{p.prog}: --strict: {len(report.skipped)} file(s) skipped; see {report.skipped_path}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
