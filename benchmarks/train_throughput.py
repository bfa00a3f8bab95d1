"""Training throughput per U-Net preset: samples/s, ms/step, peak memory and MFU of a full step.

    python benchmarks/train_throughput.py --quick                          # CPU smoke run: seconds
    python benchmarks/train_throughput.py                                  # CPU: smoke, digits_cpu, digits (batch 2)
    python benchmarks/train_throughput.py --device cuda --json train.json  # GPU: every preset, bf16
    python benchmarks/train_throughput.py --cases digits:256 peer:16 --modes eager compile

A step is what `python -m audiodiff.train` does per batch: noise and timesteps, the eps loss
(forward), backward, gradient clipping, AdamW, EMA. Each preset runs at its natural input
(nets.unet.PRESET_INPUTS). On CUDA the step uses train.py's fast path: bf16 autocast, fused
AdamW, channels_last for 2D nets (`--channels-last off` to compare); on the CPU, float32.
`--modes compile` wraps the net in torch.compile as `train.compile=true` does; its compile time
is reported apart and not in the step time.

MFU = 3 x forward FLOPs per sample (nets.unet.forward_flops: convs, matmuls, attention; the
backward costs twice the forward) x samples/s, over the matmul peak measured in the same run:
bf16 8192^3 on CUDA (the device README's peer figures use the same measure), float32 on the CPU.
Timings: median over --repeats windows of --steps steps, after --warmup steps; CUDA timings
synchronise before reading the clock. Peak memory: torch.cuda.max_memory_allocated on CUDA; on
the CPU the process's peak resident set so far (monotone over the run).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

CPU_CASES = ["smoke:32", "digits_cpu:16", "digits:2"]
QUICK_CASES = ["smoke:16", "digits_cpu:8"]
CUDA_CASES = ["smoke:256", "digits_cpu:256", "digits:64", "digits:256", "peer:16"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device) -> dict:
    """Measured matmul peak: bf16 8192^3 on CUDA, float32 1024^3 on the CPU (best of several)."""
    n, dtype, reps = (8192, torch.bfloat16, 10) if device.type == "cuda" else (1024, torch.float32, 3)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return {"case": f"{str(dtype).replace('torch.', '')} matmul {n}^3", "tflops": 2 * n**3 / best / 1e12}


def parse_case(text: str) -> tuple[str, int]:
    from audiodiff.nets.unet import PRESETS

    name, _, batch = text.partition(":")
    if name not in PRESETS:
        raise SystemExit(f"train_throughput: unknown preset {name!r} in --cases; choose from {', '.join(PRESETS)}")
    try:
        batch = int(batch) if batch else 16
    except ValueError:
        raise SystemExit(f"train_throughput: --cases {text!r}: the batch after ':' must be an integer") from None
    return name, batch


def flops_per_sample(name: str) -> int:
    from audiodiff.nets.unet import PRESET_INPUTS, forward_flops, from_preset

    n_mels, frames = PRESET_INPUTS[name]
    with torch.device("meta"):
        net = from_preset(name)
    return forward_flops(net, frames, n_mels=n_mels)


def train_case(name: str, batch: int, device: torch.device, mode: str, precision: str, channels_last: str,
               steps: int, warmup: int, repeats: int) -> dict:
    """Time train.py's step for one preset and batch; returns one result row."""
    from audiodiff.diffusion.objectives import diffusion_loss
    from audiodiff.diffusion.schedules import NoiseSchedule
    from audiodiff.nets.unet import PRESET_INPUTS, from_preset
    from audiodiff.optim import ema_copy, ema_update

    n_mels, frames = PRESET_INPUTS[name]
    torch.manual_seed(0)
    net = from_preset(name).to(device).train()
    two_d = net.dims == 2
    use_cl = device.type == "cuda" and two_d and channels_last in ("auto", "on")
    if use_cl:
        net = net.to(memory_format=torch.channels_last)
    ema = ema_copy(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0, fused=device.type == "cuda")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    model = torch.compile(net) if mode == "compile" else net
    schedule = NoiseSchedule().to(device)
    x0 = torch.randn(batch, n_mels, frames, device=device)  # [B, n_mels, F]
    classes = net.num_classes

    def step() -> None:
        noise = torch.randn_like(x0)
        t = torch.randint(0, schedule.num_steps, (batch,), device=device)
        labels = torch.randint(0, classes + 1, (batch,), device=device) if classes else None
        with autocast():
            loss = diffusion_loss(model, x0, t, noise, schedule, labels=labels).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, net, 0.999)

    sync(device)
    t0 = time.perf_counter()
    step()  # the first step: lazy initialisation, cuDNN autotuning, compilation
    sync(device)
    first_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    windows = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        windows.append((time.perf_counter() - t0) / steps)
    dt = statistics.median(windows)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    row = {
        "preset": name, "params_m": round(net.num_parameters() / 1e6, 3), "input": [n_mels, frames], "batch": batch,
        "mode": mode, "precision": "bf16" if use_bf16 else "fp32", "channels_last": use_cl,
        "ms_per_step": round(dt * 1e3, 3), "ms_per_step_windows": [round(w * 1e3, 3) for w in windows],
        "samples_per_s": round(batch / dt, 2), "first_step_s": round(first_s, 2), "peak_gib": round(peak, 3),
    }
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=None, metavar="PRESET[:BATCH]",
                   help=f"default on CUDA: {' '.join(CUDA_CASES)}; on the CPU: {' '.join(CPU_CASES)}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--modes", nargs="+", default=["eager"], choices=("eager", "compile"))
    p.add_argument("--compile", action="store_true", help="same as --modes eager compile")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA, float32 on the CPU")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="2D nets on CUDA (auto = on, as train.py)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window (default 20 CUDA, 3 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 CUDA, 1 CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help=f"CPU smoke run: {' '.join(QUICK_CASES)}, 2 steps")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)

    from audiodiff.runtime import pick_device

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cases = [parse_case(c) for c in (args.cases or (QUICK_CASES if args.quick else CUDA_CASES if cuda else CPU_CASES))]
    modes = ["eager", "compile"] if args.compile else args.modes
    steps = args.steps or (20 if cuda else 2 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)

    card = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    peak = matmul_peak(device)
    print(f"{card}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{peak['case']}: {peak['tflops']:.2f} TFLOP/s", file=sys.stderr, flush=True)
    flops = {name: flops_per_sample(name) for name in {n for n, _ in cases}}
    rows = []
    date = time.strftime("%Y-%m-%d")

    def save(done: bool) -> None:  # after every case, so a run cut short keeps what it measured
        if not args.json:
            return
        meta = {"card": card, "device": str(device), "torch": torch.__version__, "date": date,
                "threads": torch.get_num_threads(), "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                "peak": peak, "command": " ".join(["python", *sys.argv]), "complete": done}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    for name, batch in cases:
        for mode in modes:
            try:
                row = train_case(name, batch, device, mode, args.precision, args.channels_last, steps, warmup,
                                 args.repeats)
            except torch.OutOfMemoryError as e:  # keep going; report
                row = {"preset": name, "batch": batch, "mode": mode, "error": f"out of memory: {str(e)[:120]}"}
            except Exception as e:
                row = {"preset": name, "batch": batch, "mode": mode, "error": repr(e)[:300]}
            gc.collect()  # the case's net, optimizer and activations are gone: give the memory back
            if cuda:
                torch.cuda.empty_cache()
            if "error" not in row:
                row["gflops_forward"] = round(flops[name] / 1e9, 4)
                achieved = 3 * flops[name] * row["samples_per_s"] / 1e12
                row["train_tflops"] = round(achieved, 3)
                row["mfu_pct"] = round(100 * achieved / peak["tflops"], 2)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            save(False)

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{card} ({device}), torch {torch.__version__}, {date}, threads {torch.get_num_threads()}, "
          f"load {load}; {peak['case']} {peak['tflops']:.2f} TFLOP/s\n")
    print("| preset | params (M) | input | batch | mode | precision | ms/step | samples/s | peak GiB | "
          "GFLOP fwd/sample | MFU |")
    print("|---|---:|---|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} | | | {r['batch']} | {r['mode']} | | error: {r['error'][:60]} | | | | |")
            continue
        prec = r["precision"] + (" + channels_last" if r["channels_last"] else "")
        print(f"| {r['preset']} | {r['params_m']:.2f} | {r['input'][0]}x{r['input'][1]} | {r['batch']} | {r['mode']} | "
              f"{prec} | {r['ms_per_step']:.1f} | {r['samples_per_s']:.1f} | {r['peak_gib']:.2f} | "
              f"{r['gflops_forward']:.3f} | {r['mfu_pct']:.1f}% |")
    save(True)
    return 1 if rows and all("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
