"""python -m audiodiff.evaluate: sample-quality metrics (the SC09 protocol) and vocoder metrics.

    python -m audiodiff.evaluate --model exp/digits --num 2048 --classifier exp/classifier/classifier.pt \\
        --reference dump/digits/train --test dump/digits/test --json exp/digits/eval.json
    python -m audiodiff.evaluate --clips exp/digits/clips --classifier exp/classifier/classifier.pt
    python -m audiodiff.evaluate --clips some/folder --reference dump/digits/train      # no classifier
    python -m audiodiff.evaluate --vocoder-metrics --clips data/digits/wavs/test --vocoder griffinlim,hifigan

With a classifier (audiodiff.train_classifier) the table has the metrics of DiffWave (Kong et al.
2021, Table 2) and SaShiMi (Goel et al. 2022, Table 4) on SC09: FID on the classifier's penultimate
features, IS, mIS, AM and NDB/K, plus the classifier's accuracy against the label a clip was made
for (class-conditional models) or is known to have. Reference rows score the train and test splits
themselves with the same classifier, so every table carries its own scale (FID and NDB/K of the
train row are 0 by construction; the test row is the real-data level to compare with). FID, AM and
NDB/K are measured against the train split (--reference; by default the split the classifier was
trained on, when its folder still exists). mIS is the mean over all pairs of clips, the quantity
DiffWave and SaShiMi report (their values, far above IS, only fit that reading); the within-class
variant is in the JSON as mIS_within_class. With a confident classifier mIS is dominated by how
small its off-class probabilities are, so compare it only with rows scored by the same classifier.

Without a classifier: FD-mel and KID-mel, the Frechet distance and the kernel inception distance on
weight-free features (per clip: mean and standard deviation over time of each normalised log-mel
bin, and the standard deviation of its frame-to-frame difference). They rank systems on one dataset;
they are not comparable with FAD on VGGish embeddings or with FID on classifier features.

Vocoder metrics (--vocoder-metrics): each clip -> mel -> vocoder -> waveform, compared with the clip:
multi-resolution STFT distance, log-spectral distance (dB) and mel L1 (audiodiff.vocoders).

Bad input (an empty folder, no decodable audio, a missing or unloadable classifier, a prepared folder
that does not match the classifier's mel) prints one line on stderr and exits with status 2 before
anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch

from .atomic import write_json_atomic
from .audio import AudioConfig, AudioFileError, MelSpec, fit_wave, load_audio
from .cli import OneLineParser, UsageError, one_line, run_face
from .clipsets import ClipSet, read_prepared_split
from .manifest import scan_folder
from .metrics import (ClassifierScorer, frechet_distance, kid, load_classifier, log_spectral_distance, mel_l1_distance,
                      mel_statistics, multi_resolution_stft_distance)
from .pipeline import AudioDiffusionPipeline, ModelLoadError
from .runtime import pick_device
from .vocoders import get_vocoder

DEFAULT_NUM = 2048

# --------------------------------------------------------------------------- inputs

def waves_to_mels(waves, sample_rate: int, config: AudioConfig, mel_spec: MelSpec | None = None) -> list:
    """Waveforms ([T] tensors, or [B, T]) at sample_rate -> normalised log-mels [n_mels, F] in `config`
    (audio.fit_wave: resampled; clips too short for one STFT frame zero-padded to n_fft samples)."""
    mel_spec = mel_spec or MelSpec(config)
    out = []
    for w in waves:
        w = fit_wave(w, sample_rate, config).to(mel_spec.mel_basis.device)
        out.append(mel_spec(w.unsqueeze(0))[0].cpu())  # [n_mels, F]
    return out


def scan_clips(folder: str | os.PathLike) -> list[dict]:
    """Audio files under `folder`, recursively: [{"path", "label"}] (label -1 when unknown; labels are
    read from clips.jsonl when audiodiff.generate wrote the folder). UsageError when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--clips {folder} is not a folder")
    entries, _, _ = scan_folder(folder)
    if not entries:
        raise UsageError(f"--clips {folder} holds no audio files (looked recursively for .wav, .flac, .ogg, ...)")
    labels = {}
    index = folder / "clips.jsonl"
    if index.is_file():
        for line in index.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("label"), int) and "file" in record:
                labels[os.path.normpath(folder / record["file"])] = record["label"]
    return [{"path": e["path"], "label": labels.get(os.path.normpath(e["path"]), -1)} for e in entries]


def load_clips(folder: str | os.PathLike, config: AudioConfig, limit: int | None = None,
               keep_waves: bool = False, seed: int = 0) -> ClipSet:
    """Decode every audio file under `folder` (resampled to config.sample_rate) into a ClipSet;
    with `limit`, a random subset of that many (seeded; sorted paths would be sorted by class).
    Undecodable files are skipped and counted in .note; UsageError when none decodes."""
    files = scan_clips(folder)
    if limit is not None and limit < len(files):
        keep = np.sort(np.random.default_rng(seed).choice(len(files), limit, replace=False))
        files = [files[i] for i in keep]
    mel_spec = MelSpec(config)
    mels, labels, waves, bad = [], [], [], []
    for f in files:
        try:
            wave = load_audio(f["path"], config.sample_rate)
        except AudioFileError as e:
            bad.append(str(e))
            continue
        if not torch.isfinite(wave).all():
            bad.append(f"{f['path']}: non-finite samples")
            continue
        mels.extend(waves_to_mels([wave], config.sample_rate, config, mel_spec))
        labels.append(f["label"])
        if keep_waves:
            waves.append(wave)
    if not mels:
        first = bad[0] if bad else "no files"
        raise UsageError(f"--clips {folder}: none of {len(files)} audio file(s) could be decoded ({first})")
    note = f"{len(bad)} undecodable file(s) skipped, e.g. {bad[0]}" if bad else ""
    clips = ClipSet("clips", mels, np.array(labels, dtype=np.int64), config, note)
    if keep_waves:
        clips.extra["waves"] = waves
    return clips


def generate_clips(model: str | os.PathLike, num: int, config: AudioConfig, *, steps: int = 25,
                   sampler: str = "dpmpp", vocoder: str = "griffinlim", guidance: float = 1.0,
                   batch_size: int = 64, device=None, seed: int = 0, guidance_interval=None) -> ClipSet:
    """Sample `num` clips from a run or model directory (AudioDiffusionPipeline); clip i uses seed + i.
    A class-conditional model gets balanced labels (i % num_classes), kept as the clips' labels."""
    try:
        pipe = AudioDiffusionPipeline.from_pretrained(model, device=device, vocoder=vocoder)
    except (ModelLoadError, FileNotFoundError, ValueError, ImportError) as e:
        raise UsageError(one_line(e) if str(e) else f"cannot load model {model}") from None
    labels = [i % pipe.num_classes for i in range(num)] if pipe.num_classes > 0 else None
    try:  # a bad --steps, --sampler or --guidance: one line now, not a traceback after loading
        guidance_interval = pipe.check_request(
            batch_size=min(batch_size, num), steps=steps, sampler=sampler, seed=seed,
            labels=None if labels is None else labels[:min(batch_size, num)],
            guidance_scale=guidance, seconds=None, eta=0.0, guidance_interval=guidance_interval)["guidance_interval"]
    except ValueError as e:
        message = one_line(e).replace("guidance_interval=", "--guidance-interval ")
        raise UsageError(f"{model}: {message}") from None
    mel_spec = MelSpec(config)
    mels, started = [], time.time()
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        out = pipe(batch_size=n, steps=steps, sampler=sampler, seed=seed + start,
                   labels=None if labels is None else labels[start:start + n], guidance_scale=guidance,
                   guidance_interval=guidance_interval, progress=False)
        mels.extend(waves_to_mels(out.audio, out.sample_rate, config, mel_spec))
        print(f"evaluate: generated {start + n}/{num} clips ({time.time() - started:.0f} s)", file=sys.stderr)
    within = "" if guidance_interval is None else f" for sigma in ({guidance_interval[0]:g}, {guidance_interval[1]:g}]"
    note = (f"{model}: {steps} {sampler} steps, vocoder {vocoder}, guidance {guidance:g}{within}, seed {seed}")
    return ClipSet("generated", mels, np.array(labels if labels is not None else [-1] * num, dtype=np.int64),
                   config, note)


# --------------------------------------------------------------------------- scoring

def score_sets(sets: list[ClipSet], classifier=None, classifier_info: dict | None = None,
               reference: ClipSet | None = None, device=None, kid_subsets: int = 100, seed: int = 0) -> dict:
    """Score each ClipSet: {name: {metric: value}}. With a classifier: accuracy, IS, mIS, and with a
    reference (the train split) FID, AM and NDB/K too. With a reference: FD-mel and KID-mel."""
    rows: dict[str, dict] = {s.name: {"num": len(s.mels)} for s in sets}
    if classifier is not None:
        assert classifier_info is not None  # a classifier comes with its checkpoint's info (load_classifier)
        scorer = ClassifierScorer(classifier, classifier_info, reference.mels if reference is not None else None,
                                  device=device, seed=seed)
        for s in sets:
            rows[s.name].update(scorer.score(s.mels, s.labels))
    if reference is not None:
        ref_stats = mel_statistics(reference.mels)
        for s in sets:
            stats = ref_stats if s is reference else mel_statistics(s.mels)
            row = rows[s.name]
            row["FD-mel"] = frechet_distance(ref_stats, stats) if len(s.mels) > 1 else None
            row["KID-mel"] = kid(ref_stats, stats, num_subsets=kid_subsets, seed=seed)[0] if len(s.mels) > 1 else None
    return rows


def vocoder_metrics(waves: list, sample_rate: int, vocoder, device=None) -> dict:
    """Mean over clips of MR-STFT distance, log-spectral distance (dB) and mel L1 between each clip
    and its copy through mel -> `vocoder` -> waveform (the vocoder's own audio config)."""
    config = vocoder.audio_config
    mel_spec = MelSpec(config).to(device or "cpu")
    totals = {"MR-STFT": 0.0, "LSD": 0.0, "mel-L1": 0.0}
    with torch.no_grad():
        for w in waves:
            w = fit_wave(w, sample_rate, config).to(mel_spec.mel_basis.device)
            est = vocoder(mel_spec(w.unsqueeze(0)))[0]  # [F * hop]
            totals["MR-STFT"] += float(multi_resolution_stft_distance(est, w))
            totals["LSD"] += float(log_spectral_distance(est, w))
            totals["mel-L1"] += float(mel_l1_distance(est, w, config))
    return {"num": len(waves), **{k: v / max(1, len(waves)) for k, v in totals.items()}}


# --------------------------------------------------------------------------- CLI

COLUMNS = ("num", "accuracy", "FID", "IS", "mIS", "AM", "NDB/K", "FD-mel", "KID-mel", "MR-STFT", "LSD", "mel-L1")
LOWER_IS_BETTER = {"FID": True, "IS": False, "mIS": False, "AM": True, "NDB/K": True, "FD-mel": True,
                   "KID-mel": True, "MR-STFT": True, "LSD": True, "mel-L1": True, "accuracy": False}


def format_table(rows: dict, first: str = "set") -> str:
    """A fixed-width text table of {row name: {metric: value}}; absent metrics are '-'."""
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows.values())]
    head = [first] + [c + ("" if c == "num" else " " + ("↓" if LOWER_IS_BETTER[c] else "↑")) for c in cols]

    def cell(c, v):
        if v is None:
            return "-"
        if c == "num":
            return str(v)
        if c == "accuracy":
            return f"{100 * v:.1f}%"
        if c == "KID-mel":
            return f"{v:.4f}"
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"

    body = [[name] + [cell(c, r.get(c)) for c in cols] for name, r in rows.items()]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]
    fmt = lambda line: "  ".join(s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in body])


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m audiodiff.evaluate", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help="run or model directory to generate from")
    src.add_argument("--clips", type=Path, help="folder of audio clips (searched recursively)")
    p.add_argument("--num", type=int, default=None,
                   help=f"clips to generate (default {DEFAULT_NUM}); with --clips, use at most this many")
    p.add_argument("--classifier", type=Path, help="classifier.pt from train_classifier (FID, IS, mIS, AM, NDB/K)")
    p.add_argument("--reference", type=Path,
                   help="prepared train split (audiodiff.prepare): FID/AM/NDB/K reference and the train row; "
                        "default: the classifier's train folder, when it exists")
    p.add_argument("--test", type=Path, help="prepared test split: scored as a reference row; "
                                             "default: the classifier's test folder, when it exists")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--sampler", default="dpmpp", help="ddpm | ddim | dpmpp (default dpmpp)")
    p.add_argument("--vocoder", default="griffinlim",
                   help="vocoder for --model (default griffinlim); for --vocoder-metrics a comma-separated list")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="guide only at noise levels sigma in (LO, HI], e.g. 2,inf (default: every step)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i; also K-means and KID subsets")
    p.add_argument("--vocoder-metrics", action="store_true",
                   help="score vocoders on --clips: clip -> mel -> vocoder -> waveform vs the clip")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


def _check_args(args) -> None:
    if args.model is None and args.clips is None:
        raise UsageError("give --model RUN_DIR (generate, then score) or --clips DIR (score a folder)")
    if args.num is not None and args.num < 1:
        raise UsageError(f"--num {args.num} must be >= 1")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} must be >= 1")
    if args.vocoder_metrics and args.clips is None:
        raise UsageError("--vocoder-metrics scores vocoders on real clips: give --clips DIR")
    for name in ("reference", "test"):
        value = getattr(args, name)
        if value is not None and not (value / "manifest.jsonl").is_file():
            raise UsageError(f"--{name} {value} is not a prepared folder (no manifest.jsonl); "
                                f"run python -m audiodiff.prepare AUDIO_OR_MANIFEST --out {value}")
    if args.json is not None and args.json.is_dir():
        raise UsageError(f"--json {args.json} is a folder; give a file name")


def run(args) -> dict:
    """Everything main does except printing and writing: returns the result dict."""
    _check_args(args)
    try:
        device = pick_device(args.device)
    except ValueError as e:
        raise UsageError(str(e).replace("device=", "--device ")) from None

    config: AudioConfig | None  # for samples, None until the classifier's or the reference's
    if args.vocoder_metrics:
        config = AudioConfig()
        if args.reference is not None:
            config = read_prepared_split(args.reference, "train").audio_config
        clips = load_clips(args.clips, config, limit=args.num, keep_waves=True, seed=args.seed)
        rows = {}
        for name in [v.strip() for v in args.vocoder.split(",") if v.strip()]:
            try:
                vocoder = get_vocoder(name, config).to(device).eval()
            except (ValueError, ImportError, FileNotFoundError) as e:
                raise UsageError(f"--vocoder {name}: {one_line(e)}") from None
            rows[name] = vocoder_metrics(clips.extra["waves"], config.sample_rate, vocoder, device)
        return {"kind": "vocoder", "clips": str(args.clips), "audio_config": config.to_dict(), "rows": rows,
                "notes": [clips.note] if clips.note else []}

    classifier = info = None
    notes = []
    if args.classifier is not None:
        classifier, info = load_classifier(args.classifier, device)
    reference_dir, test_dir = args.reference, args.test
    if info is not None:  # default to the splits the classifier was trained and tested on
        for attr, key in (("reference", "train_dir"), ("test", "test_dir")):
            stored = info.get(key)
            if getattr(args, attr) is None and stored and (Path(stored) / "manifest.jsonl").is_file():
                if attr == "reference":
                    reference_dir = Path(stored)
                else:
                    test_dir = Path(stored)
    if classifier is None and reference_dir is None:
        raise UsageError("nothing to score against: give --classifier PATH (IS, mIS; FID, AM, NDB/K with "
                            "--reference) or --reference PREPARED_TRAIN_DIR (FD-mel, KID-mel)")
    config = info["audio_config"] if info is not None else None
    reference = read_prepared_split(reference_dir, "train", config) if reference_dir is not None else None
    config = config or cast(ClipSet, reference).audio_config  # no classifier: --reference is required above
    test = read_prepared_split(test_dir, "test", config) if test_dir is not None else None
    if args.clips is not None:
        clips = load_clips(args.clips, config, limit=args.num, seed=args.seed)
    else:
        clips = generate_clips(args.model, args.num or DEFAULT_NUM, config, steps=args.steps, sampler=args.sampler,
                               vocoder=args.vocoder, guidance=args.guidance, batch_size=args.batch_size,
                               device=device, seed=args.seed, guidance_interval=args.guidance_interval)
    if clips.note:
        notes.append(clips.note)
    if classifier is not None and reference is None:
        notes.append("FID, AM and NDB/K need the train split: pass --reference PREPARED_TRAIN_DIR")
    sets = [clips] + [s for s in (reference, test) if s is not None]
    rows = score_sets(sets, classifier, info, reference, device=device, seed=args.seed)
    return {
        "kind": "samples",
        "source": str(args.model if args.model is not None else args.clips),
        "classifier": info["path"] if info is not None else None,
        "reference": str(reference_dir) if reference_dir is not None else None,
        "test": str(test_dir) if test_dir is not None else None,
        "features": {"FID/NDB/K": "classifier penultimate embedding" if info is not None else None,
                     "FD-mel/KID-mel": "per-clip mean and std over time of each normalised log-mel bin "
                                       "+ std of its frame difference (weight-free)"},
        "generation": clips.note if args.model is not None else None,
        "audio_config": config.to_dict(),
        "rows": rows,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = build_parser().parse_args(argv)
        result = run(args)
        for note in result["notes"]:
            print(f"note: {note}", file=sys.stderr)
        print(format_table(result["rows"], "vocoder" if result["kind"] == "vocoder" else "set"))
        if args.json is not None:
            write_json_atomic(args.json, result)
            print(f"wrote {args.json}", file=sys.stderr)
    return run_face("audiodiff.evaluate", body, "--json was not written")


if __name__ == "__main__":
    sys.exit(main())
