"""Any folder of audio: a manifest plus training settings picked from the data.

    python -m audiodiff.datasets.folder --data-dir my_sounds --out data/folder [--config cfg.yaml]

The folder is searched recursively (symlinks followed, loops and hidden folders skipped) for
audio files; only their headers are read. OUT gets:

  train.jsonl     {"path": absolute, "id": path relative to the folder} for every audio file,
                  sorted (unreadable ones too: `python -m audiodiff.prepare` skips them with a
                  reason in skipped.tsv). Every clip trains; there is no held-out split.
  overrides.yaml  flat `dotted.key: value` lines (each with its reason in a comment above), the
                  Hydra overrides egs/folder/run.sh passes to training before the user's own
                  key=value arguments (so the user's win).
  info.json       what was found (files, median duration, native sample rates) and why each
                  override was picked.

How the settings are picked (pick_overrides):
  data.segment_frames  the median clip duration, clamped to [min_segment_seconds,
                       max_segment_seconds], in mel frames at the config's rate and hop, rounded
                       to a multiple of the U-Net's downsampling (2 ** (levels - 1)).
  train.batch_size     the largest power of two with batch x segment_frames <= frames_per_batch
                       (so a batch costs about the same whatever the clip length), at most the
                       config's batch size and at most the number of readable clips.
  audio.fmax           only when the median native sample rate is below 2 x fmax (e.g. 8 kHz
                       telephone audio): lowered to its Nyquist frequency, so the top mel bands
                       are not empty; recipe.vocoder then becomes griffinlim and a fine-tuned
                       HiFi-GAN (stage 3) starts from scratch (vocoder_train.init_from null), since
                       the pretrained weights expect fmax 8000. Higher rates are resampled down.

--config is the resolved experiment config (`python -m audiodiff.train +experiment=folder --cfg`):
it supplies audio.sample_rate/hop_length/fmax, net.channel_mults, train.batch_size and
recipe.{min_segment_seconds, max_segment_seconds, frames_per_batch, max_files}.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..cli import OneLineParser
from ..manifest import AUDIO_EXTENSIONS
from ..manifest import scan_folder as find_audio
from ._common import DatasetError, is_count, run_cli, write_json, write_jsonl

__all__ = ["AUDIO_EXTENSIONS", "FolderError", "scan_folder", "pick_overrides", "make_manifests", "main"]

DEFAULTS = {"sample_rate": 22050, "hop_length": 256, "fmax": 8000.0, "pad_multiple": 8,
            "min_segment_seconds": 0.5, "max_segment_seconds": 4.0, "frames_per_batch": 128 * 87,
            "max_batch_size": 128}


class FolderError(DatasetError):
    """A one-line, user-facing reason the folder cannot be used (CLI: exit 2)."""


def scan_folder(audio_dir: str | os.PathLike, *, max_files: int = 0) -> list[dict]:
    """Audio files under audio_dir, sorted by relative path, with their headers.

    Each: {"path", "id" (relative path), "seconds", "sample_rate", "channels"} or, for a file
    whose header cannot be read, {"path", "id", "error"}. max_files > 0 keeps the first N.
    """
    import soundfile as sf

    root = Path(audio_dir).expanduser().absolute()
    listed, skipped, _ = find_audio(root)  # symlinks followed, loops never, FIFOs not opened
    found = [(e["id"], Path(e["path"]), None) for e in listed]
    found += [(os.path.relpath(path, root).replace(os.sep, "/"), Path(path), reason) for path, reason in skipped
              if path.lower().endswith(AUDIO_EXTENSIONS) and not reason.startswith(("not a file", "symlink loop: dir"))]
    found = sorted(f for f in found if not any(part.startswith(".") for part in f[0].split("/")))  # hidden
    if max_files:
        found = found[:max_files]
    entries = []
    for rel, path, reason in found:
        entry: dict[str, Any] = {"path": str(path), "id": rel}
        try:
            if reason:
                raise ValueError(reason)
            info = sf.info(str(path))
            if info.samplerate <= 0 or info.frames <= 0:
                raise ValueError("no samples")
            entry.update(seconds=info.frames / info.samplerate, sample_rate=int(info.samplerate),
                         channels=int(info.channels))
        except Exception as e:  # soundfile raises several types; prepare reports the reason
            entry["error"] = " ".join(str(e).split())[:200] or type(e).__name__
        entries.append(entry)
    return entries


def pick_overrides(durations, sample_rates, *, sample_rate: int = 22050, hop_length: int = 256,
                   fmax: float = 8000.0, pad_multiple: int = 8, min_segment_seconds: float = 0.5,
                   max_segment_seconds: float = 4.0, frames_per_batch: int = 128 * 87,
                   max_batch_size: int = 128) -> tuple[dict, dict]:
    """(overrides {dotted key: value}, reasons {dotted key: why}) for clips of these durations
    (seconds) and native sample rates; see the module docstring for the rules."""
    if not durations:
        raise FolderError("no readable audio to pick settings from")
    median = statistics.median(durations)
    seconds = min(max(median, min_segment_seconds), max_segment_seconds)
    frames = 1 + int(seconds * sample_rate) // hop_length
    frames = max(pad_multiple, pad_multiple * round(frames / pad_multiple))
    batch = max(1, min(frames_per_batch // frames, max_batch_size, len(durations)))
    batch = 2 ** int(math.log2(batch))
    overrides = {"data.segment_frames": frames, "train.batch_size": batch}
    reasons = {
        "data.segment_frames": f"median clip {median:.2f} s, clamped to [{min_segment_seconds:g}, "
                               f"{max_segment_seconds:g}] s -> {frames} frames "
                               f"({(frames - 1) * hop_length / sample_rate:.2f} s, a multiple of {pad_multiple})",
        "train.batch_size": f"power of two <= {frames_per_batch} frames / {frames}, <= {max_batch_size}, "
                            f"<= {len(durations)} readable clips",
    }
    native = int(statistics.median_low(sample_rates))
    if native / 2 < fmax:
        overrides["audio.fmax"] = float(native // 2)
        overrides["recipe.vocoder"] = "griffinlim"
        overrides["vocoder_train.init_from"] = None
        reasons["audio.fmax"] = (f"median native rate {native} Hz has nothing above {native // 2} Hz "
                                 f"(config fmax {fmax:g})")
        reasons["recipe.vocoder"] = "a pretrained HiFi-GAN expects fmax 8000"
        reasons["vocoder_train.init_from"] = "so is HiFi-GAN fine-tuning from its universal weights: train from scratch"
    return overrides, reasons


def _config_values(config: dict | None) -> tuple[dict, int]:
    """pick_overrides kwargs and max_files from a resolved experiment config (None: DEFAULTS)."""
    values = dict(DEFAULTS)
    if not config:
        return values, 0
    get = lambda *keys: _select(config, keys)  # noqa: E731
    for key, path in (("sample_rate", ("audio", "sample_rate")), ("hop_length", ("audio", "hop_length")),
                      ("fmax", ("audio", "fmax")), ("max_batch_size", ("train", "batch_size"))):
        if get(*path) is not None:
            values[key] = get(*path)
    mults = get("net", "channel_mults")
    if isinstance(mults, list) and mults:
        values["pad_multiple"] = 2 ** (len(mults) - 1)
    for key in ("min_segment_seconds", "max_segment_seconds", "frames_per_batch"):
        if get("recipe", key) is not None:
            values[key] = get("recipe", key)
    return values, int(get("recipe", "max_files") or 0)


def _select(config: dict, keys):
    for key in keys:
        if not isinstance(config, dict) or key not in config:
            return None
        config = config[key]
    return config


def make_manifests(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, config: dict | None = None,
                   max_files: int | None = None, verbose: bool = False) -> dict:
    """Write OUT/train.jsonl, OUT/overrides.yaml and OUT/info.json for the audio under data_dir.

    config: the resolved experiment config as a dict (None: the HiFi-GAN mel, 2D U-Net and
    DEFAULTS); max_files: keep the first N files (None: the config's recipe.max_files; 0: all).
    Returns info.json's content (with "overrides"). Raises FolderError (one line) when the
    folder is missing or holds no readable audio.
    """
    values, config_max = _config_values(config)
    max_files = config_max if max_files is None else max_files
    if not is_count(max_files):
        raise FolderError(f"max_files={max_files!r} must be an integer >= 0 (0: every file)")
    root = Path(data_dir).expanduser().absolute()
    if not root.is_dir():
        raise FolderError(f"--audio-dir {root} is not a folder; pass a folder of audio files")
    entries = scan_folder(root, max_files=max_files)
    if not entries:
        raise FolderError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    readable = [e for e in entries if "error" not in e]
    if not readable:
        raise FolderError(f"none of the {len(entries)} audio files under {root} can be read "
                          f"(first: {entries[0]['id']}: {entries[0]['error']})")
    durations = [e["seconds"] for e in readable]
    overrides, reasons = pick_overrides(durations, [e["sample_rate"] for e in readable], **values)
    rates = Counter(e["sample_rate"] for e in readable)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", ({"path": e["path"], "id": e["id"]} for e in entries))
    lines = [f"# Picked by audiodiff.datasets.folder from {root}: {len(readable)} readable clip(s), "
             f"median {statistics.median(durations):.2f} s.",
             "# egs/folder/run.sh passes these before your own key=value overrides, so yours win."]
    for key, value in overrides.items():  # the reason above each value: run.sh reads `key: value` lines
        lines += [f"# {reasons[key]}", f"{key}: {json.dumps(value)}"]
    write_text_atomic(out / "overrides.yaml", "\n".join(lines) + "\n")
    info = {"dataset": "folder", "source": str(root), "files": len(entries), "readable": len(readable),
            "unreadable": [[e["id"], e["error"]] for e in entries if "error" in e][:20],
            "hours": round(sum(durations) / 3600, 4),
            "median_seconds": round(statistics.median(durations), 4),
            "min_seconds": round(min(durations), 4), "max_seconds": round(max(durations), 4),
            "sample_rates": {str(r): n for r, n in sorted(rates.items())},
            "channels": {str(c): n for c, n in sorted(Counter(e["channels"] for e in readable).items())},
            "max_files": max_files, "overrides": overrides, "reasons": reasons}
    write_json(out / "info.json", info)
    if verbose:
        rate_text = ", ".join(f"{r} Hz x {n}" for r, n in sorted(rates.items()))
        print(f"folder: {len(readable)} clip(s), {info['hours']:.2f} h, median {info['median_seconds']:.2f} s, "
              f"{rate_text}" + (f"; {len(entries) - len(readable)} unreadable" if len(entries) > len(readable) else ""))
        print(f"folder: settings {' '.join(f'{k}={v}' for k, v in overrides.items())} -> {out / 'overrides.yaml'}")
    return info


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m audiodiff.datasets.folder",
                      description="Manifest and training settings for a folder of audio files.")
    p.add_argument("--data-dir", "--audio-dir", dest="data_dir", required=True, help="folder of audio files")
    p.add_argument("--out", required=True, help="output folder (train.jsonl, overrides.yaml, info.json)")
    p.add_argument("--config", type=Path, help="resolved experiment config YAML (train --cfg); default: built-ins")
    p.add_argument("--max-files", type=int, default=None, help="keep the first N files (default: the config's, or all)")
    p.add_argument("--quiet", action="store_true", help="no summary")
    return run_cli(p, argv, _run)


def _run(args) -> None:
    config = None
    if args.config is not None:
        import yaml

        try:
            config = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as e:
            reason = " ".join(str(e).split())[:200]
            raise FolderError(f"--config {args.config}: cannot read it ({reason})") from None
    make_manifests(args.data_dir, args.out, config=config, max_files=args.max_files, verbose=not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
