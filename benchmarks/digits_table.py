"""The digits results table: one trained model, every sampler x step count x vocoder, SC09 metrics + speed.

    python benchmarks/digits_table.py --model egs/digits/exp/digits_cpu \\
        --classifier egs/digits/exp/digits_cpu/classifier/classifier.pt \\
        --reference egs/digits/dump/digits_cpu/train --test egs/digits/dump/digits_cpu/test \\
        --num 512 --num-for ddpm:1000=128 --json exp/digits_table.json --markdown exp/digits_table.md
    # defaults: --rows dpmpp:10,dpmpp:20,dpmpp:50,ddim:50,ddpm:1000 --vocoders griffinlim,hifigan --num 2048
    # add a fine-tuned HiFi-GAN (train_vocoder's run folder or generator.pt): --finetuned exp/digits/vocoder

Rows: per sampler row (sampler:steps), N class-conditional clips with balanced requested labels
(clip i asks for digit i % K, uses seed + i, classifier-free guidance --guidance), sampled ONCE; every
vocoder then turns the same mels into audio, so vocoder rows compare like with like. Each clip's audio
goes back to a mel in the classifier's audio config and through the evaluation classifier
(audiodiff.train_classifier); the metrics are audiodiff.evaluate's (FID on its penultimate features,
IS, mIS, AM and NDB/K against the train split, accuracy against the requested digit). The train and
test rows score the real splits with the same classifier: they are the table's scale (train FID and
NDB/K are 0 by construction; the test row is the real-data level).

Real-time factor = seconds of audio / wall seconds of sampling + vocoding (not classification),
measured here after an untimed warm-up (CUDA: synchronised before each clock read). Above 1 is faster
than real time. On a shared CPU it moves with the machine's load, which the JSON records per row.

Resumable: the JSON (--json) is rewritten after every row; a re-run with the same settings (model
checkpoint, classifier, splits, guidance, seed) skips rows already there with the same N, so a long
run that was stopped keeps what it measured. A run dir's newest checkpoint changes while training
goes on: pass the checkpoint file (RUN/checkpoints/step_N.pt) to keep scoring one model.
Errors in the arguments print one line and exit with status 2; Ctrl-C exits with 130, rows kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

DEFAULT_ROWS = "dpmpp:10,dpmpp:20,dpmpp:50,ddim:50,ddpm:1000"
DEFAULT_VOCODERS = "griffinlim,hifigan"
DEFAULT_GUIDANCE = 2.0
FORMAT = "audiodiff-digits-table"
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp": "DPM-Solver++(2M)"}
VOCODER_NAMES = {"griffinlim": "Griffin-Lim", "hifigan": "HiFi-GAN V1 universal",
                 "hifigan-finetuned": "HiFi-GAN fine-tuned"}
# (JSON key, column head, lower is better, format)
COLUMNS = (("FID", "FID", True, ".3f"), ("IS", "IS", False, ".3f"), ("mIS", "mIS", False, ".3f"),
           ("AM", "AM", True, ".3f"), ("NDB/K", "NDB/K", True, ".3f"), ("accuracy", "accuracy", False, "%"),
           ("rtf", "RTF", False, ".2f"), ("over_full_scale", "> 0 dBFS", True, "%"),
           ("peak_db", "peak dBFS", None, ".1f"), ("rms_db", "RMS dBFS", None, ".1f"),
           ("judge_accuracy", "judge", False, "%"))
SETTING_KEYS = ("model", "checkpoint", "step", "classifier", "reference", "test", "guidance", "guidance_interval",
                "seed", "eps_scaling", "eps_scaling_max_sigma")
SETTING_DEFAULTS = {"eps_scaling": 1.0, "eps_scaling_max_sigma": None}  # for JSON files written before the keys


class TableError(Exception):
    """A user-facing problem: one line on stderr, exit status 2."""


# --------------------------------------------------------------------------- arguments

def parse_rows(text: str) -> list[tuple[str, int]]:
    """'dpmpp:10,ddim:50' -> [("dpmpp", 10), ("ddim", 50)] (duplicates dropped, order kept)."""
    rows = []
    for item in [s.strip() for s in str(text).split(",") if s.strip()]:
        sampler, _, steps = item.partition(":")
        sampler = sampler.strip().lower()
        if sampler not in SAMPLER_NAMES or not steps.strip().isdigit() or int(steps) < 1:
            raise TableError(f"--rows item {item!r} is not SAMPLER:STEPS with SAMPLER one of "
                             f"{', '.join(SAMPLER_NAMES)} and STEPS a whole number >= 1 (e.g. dpmpp:20)")
        if (sampler, int(steps)) not in rows:
            rows.append((sampler, int(steps)))
    if not rows:
        raise TableError(f"--rows {text!r} names no row; e.g. --rows {DEFAULT_ROWS}")
    return rows


def parse_num_for(values: list[str] | None, rows: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """['ddpm:1000=128', 'ddim:50=256,dpmpp:10=64'] -> {("ddpm", 1000): 128, ...}; rows must be in --rows."""
    out = {}
    for value in values or []:
        for item in [s.strip() for s in value.split(",") if s.strip()]:
            row, _, n = item.partition("=")
            if not n.strip().isdigit() or int(n) < 1:
                raise TableError(f"--num-for {item!r} is not SAMPLER:STEPS=N with N >= 1 (e.g. ddpm:1000=128)")
            key = parse_rows(row)[0]
            if key not in rows:
                raise TableError(f"--num-for {item!r}: row {row} is not in --rows "
                                 f"({', '.join(f'{s}:{k}' for s, k in rows)})")
            out[key] = int(n)
    return out


def parse_vocoders(text: str, finetuned: Path | None) -> list[tuple[str, str]]:
    """[(row name, what AudioDiffusionPipeline.set_vocoder takes)], e.g. [("griffinlim", "griffinlim")]."""
    out = []
    for name in [s.strip().lower() for s in str(text).split(",") if s.strip()]:
        key = {"griffin-lim": "griffinlim", "hifigan-universal": "hifigan", "hifi-gan": "hifigan"}.get(name, name)
        if key not in ("griffinlim", "hifigan"):
            raise TableError(f"--vocoders {name!r} is not known; choose from griffinlim, hifigan "
                             "(a fine-tuned HiFi-GAN comes with --finetuned PATH)")
        if key not in [n for n, _ in out]:
            out.append((key, key))
    if finetuned is not None:
        if not finetuned.exists():
            raise TableError(f"--finetuned {finetuned} does not exist; pass train_vocoder's run folder "
                             "(it holds generator.pt) or the generator file")
        out.append(("hifigan-finetuned", str(finetuned)))
    if not out:
        raise TableError("--vocoders names no vocoder (and no --finetuned); e.g. --vocoders griffinlim")
    return out


def build_parser() -> argparse.ArgumentParser:
    from audiodiff.evaluate import DEFAULT_NUM

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, not usage + message
            raise TableError(f"{message} (see --help)")

    p = Parser(prog="python benchmarks/digits_table.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", type=Path, required=True,
                   help="training run directory, a checkpoint file in its checkpoints/, or a model directory")
    p.add_argument("--classifier", type=Path, required=True, help="classifier.pt (python -m audiodiff.train "
                                                                   "task=classifier)")
    p.add_argument("--reference", type=Path, required=True, help="prepared train split (FID/AM/NDB reference, "
                                                                  "train row)")
    p.add_argument("--test", type=Path, required=True, help="prepared test split (test row)")
    p.add_argument("--num", type=int, default=DEFAULT_NUM, help=f"clips per row (default {DEFAULT_NUM})")
    p.add_argument("--rows", default=DEFAULT_ROWS, help=f"SAMPLER:STEPS list (default {DEFAULT_ROWS})")
    p.add_argument("--vocoders", default=DEFAULT_VOCODERS,
                   help=f"griffinlim and/or hifigan (the universal V1); default {DEFAULT_VOCODERS}")
    p.add_argument("--finetuned", type=Path, default=None,
                   help="also a fine-tuned HiFi-GAN: train_vocoder's run folder or its generator.pt")
    p.add_argument("--num-for", action="append", default=None, metavar="SAMPLER:STEPS=N",
                   help="a smaller N for an expensive row, e.g. ddpm:1000=128 (repeatable or comma-separated)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance scale (default: the run's recipe.guidance, else "
                        f"{DEFAULT_GUIDANCE:g})")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="guide only at noise levels sigma in (LO, HI], e.g. 2,inf (default: every step)")
    p.add_argument("--eps-scaling", type=float, default=None, metavar="LAMBDA",
                   help="divide the noise estimate by LAMBDA at every step (default: the model's, else 1 = off)")
    p.add_argument("--eps-scaling-max-sigma", type=float, default=None, metavar="S",
                   help="scale only at noise levels sigma <= S (default: the model's, else every step)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0, help="clip i of a row uses seed + i; also the NDB K-means")
    p.add_argument("--json", type=Path, default=None, help="results, rewritten after every row (resumable)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown table here")
    p.add_argument("--judge", type=Path, default=None,
                   help="a second, stricter classifier (e.g. trained on other speakers): its accuracy on every row "
                        "and on the real test split is reported as judge_accuracy")
    p.add_argument("--restart", action="store_true",
                   help="discard the rows in --json instead of refusing when its settings differ")
    return p


# --------------------------------------------------------------------------- environment

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: torch.device) -> str:
    cpu = f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CPU: {cpu})"
    return f"CPU only: {cpu}"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - no getloadavg
        return "?"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def recipe_guidance(run_dir: Path) -> float | None:
    """recipe.guidance of a training run's config.yaml (None when absent, e.g. a model directory)."""
    try:
        from omegaconf import OmegaConf

        value = OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "recipe.guidance")
        return None if value is None else float(value)
    except Exception:
        return None


# --------------------------------------------------------------------------- results file

def row_key(sampler: str, steps: int, vocoder: str) -> str:
    return f"{sampler}:{steps}/{vocoder}"


def load_state(path: Path | None, settings: dict, restart: bool) -> dict:
    """The results so far: --json's content when it was made with `settings`, else a fresh dict."""
    fresh = {"format": FORMAT, "settings": settings, "reference_rows": {}, "rows": {}, "runs": []}
    if path is None or not path.exists() or restart:
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TableError(f"--json {path} exists but is not readable JSON ({str(e).splitlines()[0]}); "
                         "move it away or pass --restart to overwrite it") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TableError(f"--json {path} is not a digits table (no format {FORMAT!r}); choose another file")
    old = state.get("settings", {})
    old = {**SETTING_DEFAULTS, **old}
    diff = [f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in SETTING_KEYS if old.get(k) != settings[k]]
    if diff:
        raise TableError(f"--json {path} holds rows measured with other settings ({'; '.join(diff)}); "
                         "use another --json file, the same settings (a run's checkpoint file as --model keeps "
                         "one checkpoint), or --restart to discard those rows")
    for key in ("reference_rows", "rows", "runs"):
        state.setdefault(key, [] if key == "runs" else {})
    return state


def save_state(path: Path | None, state: dict) -> None:
    if path is not None:
        from audiodiff.atomic import write_json_atomic

        write_json_atomic(path, state)


# --------------------------------------------------------------------------- the table

def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if fmt == "%":
        return f"{100 * value:.1f}%"
    return f"{value:{fmt}}" if abs(value) < 1e4 else f"{value:.0f}"


def format_markdown(state: dict, order: list[str] | None = None) -> str:
    """Header (hardware, date, versions, command) + one table: train, test, then the rows (in `order`
    first, then any other stored rows)."""
    s, run = state["settings"], (state["runs"][-1] if state["runs"] else {})
    interval = s.get("guidance_interval")
    within = "" if not interval else f" for sigma in ({interval[0]:g}, {interval[1]:g}]"
    lam = s.get("eps_scaling", 1.0)
    bound = s.get("eps_scaling_max_sigma")
    scaling = "" if lam == 1.0 else f", epsilon scaling {lam:g}" + (f" at sigma <= {bound:g}" if bound else "")
    lines = [f"### Digits: {s['model']} (step {s['step']}), guidance {s['guidance']:g}{within}{scaling}", ""]
    hardware_seen = sorted({r.get("hardware") for r in state["rows"].values() if r.get("hardware")})
    lines += [f"- hardware: {run.get('hardware', '?')}",
              f"- date: {run.get('date', '?')}; torch {run.get('torch', '?')}, audiodiff {run.get('audiodiff', '?')}, "
              f"device {run.get('device', '?')}",
              f"- command: `{run.get('command', '?')}`",
              f"- model: {s['checkpoint']} ({state.get('model_info', {}).get('params', '?')} params, "
              f"{state.get('model_info', {}).get('num_classes', '?')} classes); classifier: {s['classifier']} "
              f"(test accuracy {_cell(state.get('classifier_test_accuracy'), '%')})",
              f"- clips: N per row as shown, balanced requested labels (clip i: digit i % K, seed {s['seed']} + i); "
              "FID, AM and NDB/K against the train split; accuracy: classifier vs the requested digit; "
              "RTF: audio seconds / wall seconds of sampling + vocoding; loudness (share of clips over full scale, "
              "mean per-clip peak and RMS) of the vocoded clips before any scaling, the test row of the real files, "
              "the rows \"through\" a vocoder of the test split's mels vocoded the same way (loudness only)"]
    if len(hardware_seen) > 1:
        lines.append(f"- rows were measured on {len(hardware_seen)} machines (see the JSON): "
                     + "; ".join(hardware_seen))
    heads = ["rows", "sampler", "steps", "vocoder", "N"] + [
        f"{head} {'' if lower is None else '↓' if lower else '↑'}".strip() for _, head, lower, _ in COLUMNS]
    lines += ["", "| " + " | ".join(heads[1:]) + " |", "|" + "---|" * 3 + "---:|" * (len(heads) - 4)]
    for name, label in (("train", "train split (real)"), ("test", "test split (real)")):
        r = state["reference_rows"].get(name)
        if r is not None:
            lines.append(f"| {label} | - | - | {r['num']} | "
                         + " | ".join(_cell(r.get(k), f) for k, _, _, f in COLUMNS) + " |")
    for vocoder, r in state["reference_rows"].get("test_vocoded", {}).items():
        lines.append(f"| test split (real) through {VOCODER_NAMES.get(vocoder, vocoder)} | - | - | {r['num']} | "
                     + " | ".join(_cell(r.get(k), f) for k, _, _, f in COLUMNS) + " |")
    keys = [k for k in (order or []) if k in state["rows"]] + [k for k in state["rows"] if k not in (order or [])]
    for key in keys:
        r = state["rows"][key]
        lines.append(f"| {SAMPLER_NAMES.get(r['sampler'], r['sampler'])} | {r['steps']} | "
                     f"{VOCODER_NAMES.get(r['vocoder'], r['vocoder'])} | {r['num']} | "
                     + " | ".join(_cell(r.get(k), f) for k, _, _, f in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- running

def _rel(path) -> str:
    """A path relative to where the table runs (the recipe folder), so results files carry no machine's
    absolute paths."""
    return os.path.relpath(Path(path).resolve(), Path.cwd().resolve())


def _log(message: str) -> None:
    print(f"[digits_table {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args, argv: list[str]) -> tuple[dict, list[str]]:
    """Measure every missing row; returns (state, row order). Rows are saved to --json as they finish."""
    from audiodiff import __version__
    from audiodiff.audio import MelSpec, load_audio, loudness
    from audiodiff.manifest import read_prepared
    from audiodiff.cli import UsageError
    from audiodiff.diffusion.guidance import check_eps_scaling_max_sigma
    from audiodiff.evaluate import waves_to_mels
    from audiodiff.clipsets import read_prepared_split
    from audiodiff.metrics import ClassifierScorer, classify, load_classifier
    from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError
    from audiodiff.runtime import pick_device

    rows = parse_rows(args.rows)
    num_for = parse_num_for(args.num_for, rows)
    vocoders = parse_vocoders(args.vocoders, args.finetuned)
    if args.num < 1 or args.batch_size < 1:
        raise TableError(f"--num {args.num} and --batch-size {args.batch_size} must be >= 1")
    for name in ("reference", "test"):
        folder = getattr(args, name)
        if not (folder / "manifest.jsonl").is_file():
            raise TableError(f"--{name} {folder} is not a prepared folder (no manifest.jsonl); "
                             f"run python -m audiodiff.prepare AUDIO_OR_MANIFEST --out {folder}")
    for name in ("json", "markdown"):
        if getattr(args, name) is not None and getattr(args, name).is_dir():
            raise TableError(f"--{name} {getattr(args, name)} is a folder; give a file name")
    try:
        device = pick_device(args.device)
    except ValueError as e:
        raise TableError(str(e).replace("device=", "--device ")) from None

    try:
        pipe = AudioDiffusionPipeline.from_pretrained(args.model, device=device, vocoder="griffinlim")
    except (ModelLoadError, FileNotFoundError, ValueError, ImportError) as e:
        raise TableError(str(e).splitlines()[0] if str(e) else f"cannot load model {args.model}") from None
    try:
        pipe.eps_scaling = pipe.eps_scaling if args.eps_scaling is None else args.eps_scaling
        if args.eps_scaling_max_sigma is not None:
            pipe.config["diffusion"]["eps_scaling_max_sigma"] = check_eps_scaling_max_sigma(args.eps_scaling_max_sigma)
    except ValueError as e:
        raise TableError(str(e).replace("eps_scaling_max_sigma=", "--eps-scaling-max-sigma ")
                         .replace("eps_scaling=", "--eps-scaling ")) from None
    classifier, info = load_classifier(args.classifier, device)
    judge = load_classifier(args.judge, device) if args.judge is not None else None

    def judge_accuracy(mels, labels) -> float | None:
        """The stricter judge's agreement with the labels (None without --judge)."""
        if judge is None:
            return None
        probs, _ = classify(judge[0], mels, judge[1]["segment_frames"], judge[1]["audio_config"].silence)
        return float((probs.argmax(1) == np.asarray(labels)).mean())
    num_classes = pipe.num_classes
    if num_classes and num_classes != int(info["kwargs"]["num_classes"]):
        raise TableError(f"the model has {num_classes} classes, the classifier {info['kwargs']['num_classes']}; "
                         "score with a classifier trained on the model's labels")
    guidance = args.guidance
    if guidance is None:
        guidance = recipe_guidance(pipe.path) if num_classes else 1.0
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
    interval = None
    if args.guidance_interval is not None:
        from audiodiff.diffusion.guidance import check_guidance_interval
        try:
            interval = check_guidance_interval(args.guidance_interval)
        except ValueError as e:
            raise TableError(f"--guidance-interval {args.guidance_interval}: {e}") from None
    for sampler, steps in rows:  # a bad row or guidance: one line now, not after an hour of sampling
        n = min(args.batch_size, num_for.get((sampler, steps), args.num))
        try:
            pipe.check_request(batch_size=n, steps=steps, sampler=sampler, seed=args.seed, guidance_scale=guidance,
                               labels=[i % num_classes for i in range(n)] if num_classes else None,
                               guidance_interval=interval)
        except ValueError as e:
            raise TableError(f"--rows {sampler}:{steps}: {str(e).splitlines()[0]}") from None
    vocoder_modules = {}
    for name, spec in vocoders:
        try:
            pipe.set_vocoder(spec)
        except (ValueError, ImportError, FileNotFoundError) as e:
            raise TableError(f"vocoder {name} ({spec}): {str(e).splitlines()[0]}") from None
        vocoder_modules[name] = pipe.vocoder

    settings = {"model": _rel(pipe.path), "checkpoint": _rel(pipe.source),
                "step": pipe.config.get("step"), "classifier": _rel(info["path"]),
                "reference": _rel(args.reference), "test": _rel(args.test),
                "guidance": float(guidance), "guidance_interval": None if interval is None else list(interval),
                "seed": int(args.seed), "eps_scaling": pipe.eps_scaling,
                "eps_scaling_max_sigma": pipe.config["diffusion"].get("eps_scaling_max_sigma")}
    state = load_state(args.json, settings, args.restart)
    state["model_info"] = {"params": sum(p.numel() for p in pipe.net.parameters()), "num_classes": num_classes,
                           "net": type(pipe.net).__name__, "segment_frames": pipe.segment_frames,
                           "schedule_steps": pipe.schedule.num_steps, "audio": pipe.audio_config.to_dict()}
    state["classifier_test_accuracy"] = (info.get("accuracy") or {}).get("test_accuracy")
    hw = hardware(device)
    state["runs"].append({"command": "python benchmarks/digits_table.py " + shlex.join(argv), "hardware": hw,
                          "device": str(device), "torch": torch.__version__, "audiodiff": __version__,
                          "python": platform.python_version(),
                          "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
    order = [row_key(s, k, v) for s, k in rows for v, _ in vocoders]

    def done(key: str, n: int) -> bool:
        r = state["rows"].get(key)
        return r is not None and r.get("num") == n and r.get("IS") is not None

    todo = [(s, k) for s, k in rows if not all(done(row_key(s, k, v), num_for.get((s, k), args.num))
                                                for v, _ in vocoders)]
    scorer = None
    config = info["audio_config"]
    if todo or any(n not in state["reference_rows"] for n in ("train", "test")):
        try:
            train = read_prepared_split(args.reference, "train", config)
            test = read_prepared_split(args.test, "test", config)
        except UsageError as e:
            raise TableError(str(e)) from None
        _log(f"classifying the train split ({len(train.mels)} clips)")
        scorer = ClassifierScorer(classifier, info, train.mels, device, args.seed)
        for split in (train, test):
            if split.name not in state["reference_rows"]:
                state["reference_rows"][split.name] = scorer.score(split.mels, split.labels)
                save_state(args.json, state)
    test_row = state["reference_rows"].get("test")
    if test_row is not None and judge is not None and "judge_accuracy" not in test_row:
        test_split = read_prepared_split(args.test, "test", judge[1]["audio_config"])
        test_row["judge_accuracy"] = judge_accuracy(test_split.mels, test_split.labels)
        save_state(args.json, state)
    if test_row is not None and "rms_db" not in test_row:  # the real test files, as they are
        entries, _ = read_prepared(args.test)
        test_row.update(loudness(load_audio(e["path"]) for e in entries))
        save_state(args.json, state)
    mel_spec = MelSpec(config).to(device)
    vocoded_test = state["reference_rows"].setdefault("test_vocoded", {})
    if any(v not in vocoded_test for v, _ in vocoders):  # the vocoder's own share of the level, on real mels
        model_mel = MelSpec(pipe.audio_config)  # the real files analysed as the model's mels are
        entries, _ = read_prepared(args.test)
        real_mels = [model_mel(load_audio(e["path"], pipe.sample_rate)[None])[0] for e in entries]
        for vocoder, _ in vocoders:
            if vocoder not in vocoded_test:
                pipe.set_vocoder(vocoder_modules[vocoder])
                _log(f"the test split's files as mels through {vocoder} ({len(real_mels)} clips)")
                waves = []
                for start in range(0, len(real_mels), args.batch_size):  # equal lengths batch together
                    chunk = real_mels[start:start + args.batch_size]
                    same = all(m.shape == chunk[0].shape for m in chunk)
                    for i, mel in enumerate([torch.stack(chunk)] if same else [m[None] for m in chunk]):
                        waves.extend(pipe.vocode(mel.to(device), seed=args.seed + start + i))  # [b, T]
                vocoded_test[vocoder] = {"num": len(waves), **loudness(waves)}
                save_state(args.json, state)
    warm = set()
    for sampler, steps in rows:
        n = num_for.get((sampler, steps), args.num)
        missing = [(v, spec) for v, spec in vocoders if not done(row_key(sampler, steps, v), n)]
        if not missing:
            _log(f"{sampler}:{steps}: all vocoder rows already in {args.json}, skipped")
            continue
        labels = [i % num_classes for i in range(n)] if num_classes else None
        kw = dict(sampler=sampler, guidance_scale=guidance, guidance_interval=interval, progress=False)
        # Untimed warm-up at the first batch's shape: lazy imports, kernels, the CUDA graph capture.
        b0 = min(args.batch_size, n)
        pipe.sample_mel(batch_size=b0, steps=min(2, steps), seed=args.seed,
                        labels=None if labels is None else labels[:b0], **kw)
        load_before = _load()
        mels, sample_s = [], 0.0
        for start in range(0, n, args.batch_size):
            b = min(args.batch_size, n - start)
            _sync(device)
            t0 = time.perf_counter()
            mel = pipe.sample_mel(batch_size=b, steps=steps, seed=args.seed + start,
                                  labels=None if labels is None else labels[start:start + b], **kw)
            _sync(device)
            sample_s += time.perf_counter() - t0
            mels.append(mel)  # [b, n_mels, F] on the device
            _log(f"{sampler}:{steps}: sampled {start + b}/{n} ({sample_s:.0f} s)")
        for vocoder, _ in missing:
            pipe.set_vocoder(vocoder_modules[vocoder])
            if vocoder not in warm:
                pipe.vocode(mels[0][:2], seed=args.seed)
                warm.add(vocoder)
            vocode_s, audio_samples, clip_mels, waves = 0.0, 0, [], []
            for i, mel in enumerate(mels):
                _sync(device)
                t0 = time.perf_counter()
                wave = pipe.vocode(mel, seed=args.seed + i * args.batch_size)  # [b, T] on the CPU
                vocode_s += time.perf_counter() - t0
                audio_samples += wave.shape[0] * wave.shape[1]
                waves.append(wave)
                clip_mels.extend(waves_to_mels(wave, pipe.sample_rate, config, mel_spec))
            audio_s = audio_samples / pipe.sample_rate
            row = {"sampler": sampler, "steps": steps, "vocoder": vocoder}
            row.update(scorer.score(clip_mels, labels if labels is not None else [-1] * n))
            row.update(loudness(w for wave in waves for w in wave))
            if judge is not None and labels is not None:
                row["judge_accuracy"] = judge_accuracy(clip_mels, labels)
            row.update({"rtf": audio_s / (sample_s + vocode_s), "audio_s": audio_s, "sample_s": sample_s,
                        "vocode_s": vocode_s, "batch_size": args.batch_size, "device": str(device),
                        "hardware": hw, "load": f"{load_before} -> {_load()}",
                        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
            state["rows"][row_key(sampler, steps, vocoder)] = row
            save_state(args.json, state)
            _log(f"{row_key(sampler, steps, vocoder)}: IS {row['IS']:.2f}, FID {row['FID']:.2f}, "
                 f"accuracy {100 * row['accuracy'] if row['accuracy'] is not None else float('nan'):.1f}%, "
                 f"RTF {row['rtf']:.2f} (sampling {sample_s:.1f} s, vocoding {vocode_s:.1f} s)")
    save_state(args.json, state)
    return state, order


def main(argv: list[str] | None = None) -> int:
    from audiodiff.cli import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        args = build_parser().parse_args(argv)
        state, order = run(args, argv)
    except (TableError, UsageError) as e:
        print(f"digits_table: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f"the rows measured so far are in {args.json}; re-run the same command to go on" \
            if args is not None and args.json is not None else "nothing was saved (no --json)"
        print(f"digits_table: stopped; {where}", file=sys.stderr)
        return 130
    text = format_markdown(state, order)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
        _log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
