"""Sampling throughput: clips/s and real-time factor per sampler x steps x vocoder.

    python benchmarks/sample_throughput.py --preset digits_cpu --device cpu --quick
    python benchmarks/sample_throughput.py --model egs/digits/exp/digits --device cuda --batch-size 64 --json out.json

The model is a trained run or model directory (--model) or a freshly initialised preset net
(--preset, random weights: the speed is the same). Each (sampler, steps) is sampled once after a
warm-up call, and each vocoder turns the same mels into audio, so the table separates the
diffusion time from the vocoder time. Real-time factor = seconds of audio / wall seconds
(above 1: faster than real time). CUDA timings synchronise before reading the clock.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

SAMPLERS = ("ddpm", "ddim", "dpmpp")
STEPS = (10, 25, 50, 1000)
VOCODERS = ("griffinlim", "hifigan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_pipeline(args, device: torch.device):
    from audiodiff.pipeline import AudioDiffusionPipeline

    if args.model:
        return AudioDiffusionPipeline.from_pretrained(args.model, device=device, vocoder="griffinlim")
    from audiodiff.audio import AudioConfig
    from audiodiff.diffusion.schedules import NoiseSchedule
    from audiodiff.nets.unet import PRESET_INPUTS, PRESETS, UNet

    if args.preset not in PRESETS:
        raise SystemExit(f"sample_throughput: unknown --preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    kwargs = dict(PRESETS[args.preset])
    n_mels, frames = PRESET_INPUTS[args.preset]
    torch.manual_seed(0)
    net = UNet(**kwargs)
    # The output conv starts at zero; give it weights so the samples are not trivially constant.
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.02)
    audio = AudioConfig(n_mels=n_mels) if n_mels <= 80 else AudioConfig(n_mels=n_mels, n_fft=2048, win_length=2048)
    return AudioDiffusionPipeline(net, NoiseSchedule(), audio, num_classes=kwargs.get("num_classes", 0),
                                  segment_frames=frames).to(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="a run or model directory")
    src.add_argument("--preset", default="digits_cpu", help="a UNet preset with random weights (default digits_cpu)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument("--steps", type=int, nargs="+", default=None, help=f"default {' '.join(map(str, STEPS))}")
    p.add_argument("--vocoders", nargs="+", default=list(VOCODERS), choices=VOCODERS)
    p.add_argument("--guidance", type=float, default=1.0, help="CFG scale (class-conditional nets; doubles the batch)")
    p.add_argument("--seconds", type=float, default=None, help="clip length (default: the training segment)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--quick", action="store_true", help="steps 10 and 25, batch 4: a smoke run")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    from audiodiff.train import pick_device

    device = pick_device(args.device)
    steps_list = args.steps or ([10, 25] if args.quick else list(STEPS))
    batch = 4 if args.quick and args.batch_size == 16 else args.batch_size
    pipe = build_pipeline(args, device)
    schedule_T = pipe.schedule.num_steps
    steps_list = [s for s in steps_list if 1 <= s <= schedule_T]

    vocoders = {}
    skipped = {}
    for name in args.vocoders:
        try:
            pipe.set_vocoder(name)
            vocoders[name] = pipe.vocoder
        except Exception as e:  # not installed, or another mel than the model's
            skipped[name] = str(e).splitlines()[0]
    if not vocoders:
        raise SystemExit(f"sample_throughput: no vocoder usable: {skipped}")

    labels = None
    if args.guidance != 1.0 and pipe.num_classes:
        labels = [i % pipe.num_classes for i in range(batch)]
    kw = dict(batch_size=batch, labels=labels, guidance_scale=args.guidance, seconds=args.seconds,
              progress=False, precision=args.precision)
    # Warm-up: kernels, caches, lazy imports; not timed.
    warm = pipe.sample_mel(steps=2, sampler="ddim", **kw)
    for vocoder in vocoders.values():
        pipe.vocoder = vocoder
        pipe.vocode(warm)
    seconds_per_clip = None
    rows = []
    for sampler in args.samplers:
        for steps in steps_list:
            _sync(device)
            t0 = time.perf_counter()
            mel = pipe.sample_mel(steps=steps, sampler=sampler, **kw)
            _sync(device)
            t_sample = time.perf_counter() - t0
            for vname, vocoder in vocoders.items():
                pipe.vocoder = vocoder
                _sync(device)
                t0 = time.perf_counter()
                audio = pipe.vocode(mel)  # lands on the CPU: the copy is part of the cost
                t_vocode = time.perf_counter() - t0
                seconds_per_clip = audio.shape[-1] / pipe.sample_rate
                total = t_sample + t_vocode
                rows.append({
                    "sampler": sampler, "steps": steps, "vocoder": vname, "batch_size": batch,
                    "sample_s": round(t_sample, 4), "vocode_s": round(t_vocode, 4), "total_s": round(total, 4),
                    "clips_per_s": round(batch / total, 3),
                    "rtf": round(batch * seconds_per_clip / total, 3),
                })
                print(f"{sampler:6s} {steps:5d} {vname:10s} {batch / total:8.2f} clips/s  "
                      f"RTF {batch * seconds_per_clip / total:8.2f}", file=sys.stderr)

    n_params = sum(p.numel() for p in pipe.net.parameters())
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    meta = {"model": args.model or f"preset {args.preset} (random weights)", "params": n_params,
            "device": str(device), "card": card, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "precision": args.precision, "batch_size": batch, "guidance": args.guidance,
            "clip_seconds": seconds_per_clip, "mel": [pipe.audio_config.n_mels, int(mel.shape[-1])],
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
            "skipped_vocoders": skipped}
    print(f"\n{meta['model']}, {n_params / 1e6:.2f} M params, {card} ({device}), batch {batch}, "
          f"{seconds_per_clip:.2f} s clips, mel {meta['mel'][0]}x{meta['mel'][1]}, torch {torch.__version__}, "
          f"{meta['date']}\n")
    print("| sampler | steps | vocoder | sample s | vocoder s | clips/s | real-time factor |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['sampler']} | {r['steps']} | {r['vocoder']} | {r['sample_s']:.3f} | {r['vocode_s']:.3f} | "
              f"{r['clips_per_s']:.2f} | {r['rtf']:.2f} |")
    for name, why in skipped.items():
        print(f"\n{name} skipped: {why}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
