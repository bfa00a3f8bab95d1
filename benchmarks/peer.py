"""Our U-Net beside diffusers' UNet2DModel (the audio-diffusion peer), in one process on one device.

    python benchmarks/peer.py --small                        # CPU: 32x32 inputs, batch 2, a few steps
    python benchmarks/peer.py --device cuda --json peer.json # GPU: the full comparison (minutes)
    python benchmarks/peer.py --device cuda --compile        # adds torch.compile training cases

Needs diffusers (`pip install -e ".[bench]"`, or `--site DIR` for a folder of packages that is
appended to sys.path). Two pairs, each net at the same input:
  audio-diffusion: our `peer` preset (118.8 M params) beside the teticio/audio-diffusion-256
      UNet2DModel (113.7 M) on 1 x 256 x 256; training at batch 16, DDIM 50 steps at batch 16.
  digits: our default `digits` net (23.0 M, class-conditional) beside the FLOP-matched
      UNet2DModel 64-128-256-256 with one attention level (25.3 M, unconditional) on 80 x 96
      mels; training at batch 64 and 256, DDIM 20 steps at batch 64, and end to end (20 sampler
      steps + HiFi-GAN V1 in bf16, random weights) in seconds of audio per second.
Both nets get the same training step (the device README's peer method): q_sample noising,
forward under bf16 autocast on CUDA (float32 on the CPU), MSE to the noise, backward, AdamW (fused
on CUDA). Ours runs channels_last (train.py's fast path), the peer as diffusers ships it. Sampling:
ours through audiodiff.diffusion.samplers, eager and with the denoiser replayed from a CUDA graph
(audiodiff.fast), the peer through diffusers' DDIMScheduler. MFU = 3 x forward FLOPs (training)
or 1 x (sampling) per sample x samples/s over the matmul peak measured in this run.
Cases run in priority order; --deadline-s skips what would start after it (reported as skipped).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import matmul_peak, sync  # noqa: E402

AUDIO_DIFFUSION = dict(
    in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
)
DIGITS_PEER = dict(
    in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(64, 128, 256, 256),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
)


def import_diffusers(site: str | None):
    if site:
        sys.path.append(site)  # appended: the packages already installed win
    try:
        from diffusers import DDIMScheduler, UNet2DModel
    except ImportError as e:
        raise SystemExit(f"peer.py: diffusers is needed ({e}); pip install -e '.[bench]' or pass --site DIR") from None
    return UNet2DModel, DDIMScheduler


# --------------------------------------------------------------------------- the two nets, one interface

class Contender:
    """A net plus how to call it on x [B, H, W] (H = mel bins, W = frames) and timesteps t [B]."""

    def __init__(self, name: str, net: torch.nn.Module, ours: bool, shape: tuple[int, int], build_kwargs: dict):
        self.name, self.net, self.ours, self.shape = name, net, ours, shape
        self.build_kwargs = build_kwargs  # what rebuilds the net (for FLOP counting on the meta device)
        self.classes = getattr(net, "num_classes", 0) if ours else 0

    def labels(self, batch: int, device) -> torch.Tensor | None:
        return torch.arange(batch, device=device) % self.classes if self.classes else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        if self.ours:
            return self.net(x, t, labels)  # [B, H, W]
        return self.net(x.unsqueeze(1), t).sample.squeeze(1)  # diffusers takes [B, 1, H, W]

    def params_m(self) -> float:
        return sum(p.numel() for p in self.net.parameters()) / 1e6


def build(pair: str, which: str, shape, device, UNet2DModel) -> Contender:
    from audiodiff import fast
    from audiodiff.nets.unet import from_preset

    torch.manual_seed(0)
    if which == "ours":
        kwargs = dict(name="peer" if pair == "audio-diffusion" else "digits")
        net = from_preset(**kwargs).to(device)
        fast.prepare_net(net, device)  # channels_last on CUDA
        return Contender("ours", net, True, shape, kwargs)
    kwargs = dict(sample_size=shape if shape[0] != shape[1] else shape[0],
                  **(AUDIO_DIFFUSION if pair == "audio-diffusion" else DIGITS_PEER))
    return Contender("diffusers", UNet2DModel(**kwargs).to(device), False, shape, kwargs)


def forward_flops(contender: Contender, UNet2DModel) -> float:
    """Forward FLOPs per sample, counted on a meta-device copy (the same counter for both nets)."""
    from audiodiff.nets.unet import flop_counter, from_preset

    H, W = contender.shape
    with torch.device("meta"):
        if contender.ours:
            net = from_preset(**contender.build_kwargs)
            x = torch.zeros(1, H, W)
        else:
            net = UNet2DModel(**contender.build_kwargs)
            x = torch.zeros(1, 1, H, W)
        with torch.no_grad(), flop_counter() as counter:
            net(x, torch.zeros(1))
    return counter.get_total_flops()


# --------------------------------------------------------------------------- cases

def train(c: Contender, batch: int, device, steps: int, warmup: int, repeats: int, compile: bool) -> dict:
    from audiodiff.diffusion.objectives import q_sample
    from audiodiff.diffusion.schedules import NoiseSchedule

    cuda = device.type == "cuda"
    c.net.train()
    opt = torch.optim.AdamW(c.net.parameters(), lr=1e-4, fused=cuda)
    schedule = NoiseSchedule().to(device)
    forward = c.forward
    if compile:
        compiled = torch.compile(c.net)
        forward = Contender(c.name, compiled, c.ours, c.shape, c.build_kwargs).forward
    x0 = torch.randn(batch, *c.shape, device=device)  # [B, H, W]
    labels = c.labels(batch, device)

    def step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, schedule.num_steps, (batch,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            pred = forward(q_sample(x0, t, noise, schedule), t, labels)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    dt = _median_windows(step, device, steps, repeats)
    out = dict(ms_per_step=dt * 1e3, samples_per_s=batch / dt, first_step_s=first, peak_gib=_peak(device))
    c.net.zero_grad(set_to_none=True)
    return out


@torch.inference_mode()
def sample_ddim(c: Contender, batch: int, steps: int, device, repeats: int, how: str, DDIMScheduler=None) -> dict:
    """DDIM sampling: ours with samplers.ddim (eager or graphed denoiser), the peer with DDIMScheduler."""
    from audiodiff import fast
    from audiodiff.diffusion.guidance import make_eps_fn
    from audiodiff.diffusion.samplers import ddim
    from audiodiff.diffusion.schedules import NoiseSchedule

    cuda = device.type == "cuda"
    c.net.eval()
    if c.ours:
        schedule = NoiseSchedule().to(device)
        labels = c.labels(batch, device)
        x_like = torch.zeros(batch, *c.shape, device=device)
        if how == "graph":
            cache = OrderedDict()
            eps_fn = fast.graphed_eps_fn(cache, c.net, schedule, "eps", x_like, labels, 1.0, c.classes, cuda)
        else:
            eps_fn = make_eps_fn(c.net, schedule, "eps", labels=labels, null_label=c.classes)
            if cuda:
                eps_fn = fast.bf16_eps_fn(eps_fn, "cuda")

        def run():
            return ddim(eps_fn, torch.randn(batch, *c.shape, device=device), schedule, steps)
    else:
        scheduler = DDIMScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(steps)

        def run():
            x = torch.randn(batch, 1, *c.shape, device=device)
            for t in scheduler.timesteps:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    eps = c.net(x, t).sample
                x = scheduler.step(eps.float(), t, x).prev_sample
            return x

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    run()  # warm-up (and graph capture)
    sync(device)
    first = time.perf_counter() - t0
    dt = _median_windows(run, device, 1, repeats)
    return dict(samples_per_s=batch / dt, ms_per_step=dt / steps * 1e3, first_call_s=first, peak_gib=_peak(device))


@torch.inference_mode()
def end_to_end(c: Contender, batch: int, steps: int, device, repeats: int, fast_mode, DDIMScheduler=None) -> dict:
    """Noise -> 20-step sampler -> HiFi-GAN V1 (bf16 autocast on CUDA, random weights) -> audio on the CPU."""
    from audiodiff.audio import AudioConfig
    from audiodiff.diffusion.schedules import NoiseSchedule
    from audiodiff.pipeline import AudioDiffusionPipeline
    from audiodiff.vocoders import HiFiGAN

    cuda = device.type == "cuda"
    n_mels, frames = c.shape
    audio = AudioConfig(n_mels=n_mels)
    vocoder = HiFiGAN(audio, checkpoint=None, autocast_bf16=True).to(device)
    if c.ours:
        pipe = AudioDiffusionPipeline(c.net, NoiseSchedule(), audio, num_classes=c.classes, vocoder=vocoder,
                                      segment_frames=frames).to(device)
        pipe.fast = fast_mode
        labels = [i % c.classes for i in range(batch)] if c.classes else None

        def run():
            return pipe(batch_size=batch, steps=steps, sampler="dpmpp", labels=labels, progress=False).audio
    else:
        scheduler = DDIMScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(steps)
        c.net.eval()

        def run():
            x = torch.randn(batch, 1, n_mels, frames, device=device)
            for t in scheduler.timesteps:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    eps = c.net(x, t).sample
                x = scheduler.step(eps.float(), t, x).prev_sample
            return vocoder(x.squeeze(1).clamp(-1, 1)).cpu()

    run()
    sync(device)
    dt = _median_windows(run, device, 1, repeats)
    seconds = batch * audio.num_samples(frames) / audio.sample_rate
    return dict(audio_s_per_s=seconds / dt, ms_per_call=dt * 1e3, clips_per_s=batch / dt)


def _median_windows(fn, device, calls: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def _peak(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--small", action="store_true",
                   help="32x32 inputs, batch 2 (end to end: 1), a few steps: the method in minutes on a CPU")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd training (slow to compile)")
    p.add_argument("--compile-only", action="store_true", help="only the torch.compile'd training cases")
    p.add_argument("--pairs", nargs="+", default=["digits", "audio-diffusion"], choices=("digits", "audio-diffusion"))
    p.add_argument("--parts", nargs="+", default=["train", "sample", "e2e"], choices=("train", "sample", "e2e"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU intra-op threads (default: torch's; 1 is steadier on a shared machine)")
    p.add_argument("--deadline-s", type=float, default=None, help="start no case after this many seconds")
    p.add_argument("--site", default=os.environ.get("AUDIODIFF_PEER_SITE"),
                   help="a folder with diffusers and its dependencies, appended to sys.path")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from audiodiff.runtime import pick_device

    UNet2DModel, DDIMScheduler = import_diffusers(args.site)
    import diffusers

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    small = args.small
    # --small: 32 x 32 is the least the 6-level audio-diffusion net takes (its bottom level is 1 x 1).
    shapes = {"audio-diffusion": (32, 32) if small else (256, 256), "digits": (32, 32) if small else (80, 96)}
    train_batches = {"audio-diffusion": [2] if small else [16], "digits": [2] if small else [64, 256]}
    sample_cfg = {"audio-diffusion": (2, 3) if small else (16, 50), "digits": (2, 3) if small else (64, 20)}
    e2e_batches = [1] if small else [64, 256]
    e2e_steps = 3 if small else 20
    steps, warmup = (1, 1) if small else (10, 5)
    card = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    start = time.perf_counter()
    peak = matmul_peak(device)
    print(f"{card}, torch {torch.__version__}, diffusers {diffusers.__version__}, {peak['case']}: "
          f"{peak['tflops']:.2f} TFLOP/s", file=sys.stderr, flush=True)

    # Priority order: eager training, sampling, end to end, then compiled training.
    plan = []
    if args.compile_only:
        args.compile, args.parts = True, ["train"]
    for pair in args.pairs if not args.compile_only else []:
        if "train" in args.parts:
            plan += [(pair, "train", b, False) for b in train_batches[pair]]
    for pair in args.pairs if not args.compile_only else []:
        if "sample" in args.parts:
            plan.append((pair, "sample", sample_cfg[pair], None))
    if "e2e" in args.parts and "digits" in args.pairs and not args.compile_only:
        plan += [("digits", "e2e", b, None) for b in e2e_batches]
    if args.compile and "train" in args.parts:
        for pair in args.pairs:
            plan.append((pair, "train", train_batches[pair][-1], True))

    rows, flops, nets = [], {}, {}

    def contender(pair, which):
        key = (pair, which)
        if key not in nets:
            for k in list(nets):  # keep one pair's nets in memory at a time
                if k[0] != pair:
                    del nets[k]
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            nets[key] = build(pair, which, shapes[pair], device, UNet2DModel)
            flops[key] = forward_flops(nets[key], UNet2DModel)
        return nets[key]

    def meta(done: bool) -> dict:
        return {"card": card, "device": str(device), "torch": torch.__version__, "diffusers": diffusers.__version__,
                "date": time.strftime("%Y-%m-%d"), "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                "peak": peak, "command": " ".join(["python", *sys.argv]),
                "seconds": round(time.perf_counter() - start, 1), "complete": done}

    def save(done: bool) -> None:  # after every case, so a run cut short keeps what it measured
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"meta": meta(done), "rows": rows}, indent=2) + "\n")

    def record(row):
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        save(False)

    for pair, part, cfg, compiled in plan:
        if args.deadline_s is not None and time.perf_counter() - start > args.deadline_s:
            record(dict(pair=pair, part=part, config=str(cfg), skipped="deadline"))
            continue
        variants = ["ours", "diffusers"]
        for which in variants:
            hows = [None]
            if part == "sample" and which == "ours" and cuda:
                hows = ["eager", "graph"]
            elif part == "e2e" and which == "ours":
                hows = ["fast", "plain"] if cuda else ["fast"]
            for how in hows:
                label = {"train": "compile" if compiled else "eager"}.get(part, how or "eager")
                row = dict(pair=pair, part=part, net=which, how=label, input=list(shapes[pair]))
                try:
                    c = contender(pair, which)
                    row["params_m"] = round(c.params_m(), 2)
                    row["gflops_forward"] = round(flops[(pair, which)] / 1e9, 3)
                    if part == "train":
                        row["batch"] = cfg
                        r = train(c, cfg, device, steps, warmup, args.repeats, compiled)
                        row.update({k: round(v, 3) if v is not None else None for k, v in r.items()})
                        row["mfu_pct"] = round(100 * 3 * flops[(pair, which)] * r["samples_per_s"] / 1e12
                                               / peak["tflops"], 2)
                    elif part == "sample":
                        batch, n = cfg
                        row.update(batch=batch, steps=n, sampler="ddim")
                        r = sample_ddim(c, batch, n, device, max(2, args.repeats - 1), how or "eager", DDIMScheduler)
                        row.update({k: round(v, 3) if v is not None else None for k, v in r.items()})
                        row["mfu_pct"] = round(100 * flops[(pair, which)] * r["samples_per_s"] * n / 1e12
                                               / peak["tflops"], 2)
                    else:
                        n = e2e_steps
                        row.update(batch=cfg, steps=n, sampler="dpmpp" if which == "ours" else "ddim",
                                   vocoder="hifigan-v1 bf16" if cuda else "hifigan-v1 fp32")
                        r = end_to_end(c, cfg, n, device, max(2, args.repeats - 1),
                                       (how or "fast") == "fast", DDIMScheduler)
                        row.update({k: round(v, 3) for k, v in r.items()})
                except torch.OutOfMemoryError as e:
                    row["error"] = f"out of memory: {str(e)[:100]}"
                except Exception as e:  # keep going; report
                    row["error"] = repr(e)[:300]
                if cuda:
                    torch.cuda.empty_cache()
                record(row)

    date = time.strftime("%Y-%m-%d")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{card} ({device}), torch {torch.__version__}, diffusers {diffusers.__version__}, {date}, "
          f"threads {torch.get_num_threads()}, load {load}; {peak['case']} {peak['tflops']:.2f} TFLOP/s; "
          f"{time.perf_counter() - start:.0f} s\n")
    print("| pair | part | net | how | input | batch | samples/s | ms/step | peak GiB | MFU | audio s/s |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"| {r['pair']} | {r['part']} | {r.get('net', '')} | {r.get('how', '')} | | | "
                  f"{r.get('skipped') or 'error: ' + r['error'][:60]} | | | | |")
            continue
        sps = r.get("samples_per_s", r.get("clips_per_s"))
        ms = r.get("ms_per_step", r.get("ms_per_call"))
        gib = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else "-"
        mfu = f"{r['mfu_pct']:.1f}%" if "mfu_pct" in r else "-"
        aud = f"{r['audio_s_per_s']:.1f}" if "audio_s_per_s" in r else "-"
        steps_note = f" ({r['sampler']} {r['steps']})" if "steps" in r else ""
        print(f"| {r['pair']} | {r['part']}{steps_note} | {r['net']} | {r['how']} | {r['input'][0]}x{r['input'][1]} | "
              f"{r['batch']} | {sps:.2f} | {ms:.1f} | {gib} | {mfu} | {aud} |")
    # Ratios ours / peer for matching rows (ours' best "how").
    print("\nours / diffusers (same pair, part, batch; ours' fastest variant):")
    for r in rows:
        if r.get("net") != "diffusers" or "error" in r or "skipped" in r:
            continue
        key = lambda x: x.get("samples_per_s", x.get("audio_s_per_s"))  # noqa: E731
        ours = [o for o in rows if o.get("net") == "ours" and o["pair"] == r["pair"] and o["part"] == r["part"]
                and o.get("batch") == r.get("batch") and o.get("how", "").startswith("compile") ==
                r.get("how", "").startswith("compile") and "error" not in o and "skipped" not in o]
        if ours:
            best = max(ours, key=key)
            print(f"  {r['pair']} {r['part']} batch {r['batch']} ({r['how']}): {key(best) / key(r):.2f}x "
                  f"(ours {best['how']})")
    save(True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
