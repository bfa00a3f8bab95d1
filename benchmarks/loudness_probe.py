"""Where generated digits get their loudness: the same mels through Griffin-Lim and HiFi-GAN, real test mels
beside them, the energy each mel implies, and how closely each vocoder's audio reproduces its mel.

    python benchmarks/loudness_probe.py --model egs/digits/exp/digits_cpu1k/checkpoints/step_00020500.pt \\
        --test egs/digits/dump/digits_cpu1k/test --num 64

Per set (real test mels, generated mels with the model's own generation settings, or --sampler, --steps and
--guidance) and vocoder: the share of clips over full scale, mean peak and RMS in dBFS (audio.loudness), and
mel(audio) - mel on all cells, on low cells (< -0.7) and on high cells (> 0.3); per set, the energy of the
pseudo-inverse magnitude in dB, the mean per-clip mel maximum, and the shape of the clips' frame-energy
envelopes: their roughness (the mean absolute second difference in dB over the frames within 15 dB of the
clip's loudest) and how many frames lie within 3 dB of the loudest. --nnls also runs Griffin-Lim from a
non-negative least-squares magnitude (multiplicative updates) instead of the clamped pseudo-inverse.
--eps-scaling samples with another epsilon-scaling lambda than the model's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.audio import MelSpec, loudness  # noqa: E402
from audiodiff.clipsets import read_prepared_split  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402
from audiodiff.vocoders import get_vocoder, torchaudio_functional  # noqa: E402


def nnls_magnitude(ms: MelSpec, mel: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """min ||M S - y|| over S >= 0 by multiplicative updates, from the clamped pseudo-inverse."""
    y = torch.exp(ms.denormalize(mel))
    s = torch.matmul(ms.mel_pinv, y).clamp(min=1e-8)
    mty, mtm = torch.matmul(ms.mel_basis.T, y), ms.mel_basis.T @ ms.mel_basis
    for _ in range(iters):
        s = s * mty / (torch.matmul(mtm, s) + 1e-12)
    return s


def evenly(items: list, num: int) -> list:
    """num items spread evenly over the list (all of it when num >= its length): every digit of a sorted split."""
    if num >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / max(num - 1, 1))] for i in range(num)]


def envelope_shape(ms: MelSpec, mel: torch.Tensor) -> tuple[float, float]:
    """(roughness, near_top) of the clips' frame-energy envelopes in dB (the pseudo-inverse magnitude's energy
    per frame): the mean |e[t] - (e[t-1] + e[t+1]) / 2| over the frames within 15 dB of each clip's loudest,
    and the mean count of frames within 3 dB of it."""
    energy = 10 * torch.log10(ms.inverse_magnitude(mel).pow(2).sum(1) + 1e-10)  # [B, F]
    top = energy.amax(1, keepdim=True)
    second = (energy[:, 1:-1] - (energy[:, :-2] + energy[:, 2:]) / 2).abs()
    voiced = energy[:, 1:-1] > top - 15
    return float(second[voiced].mean()), float((energy > top - 3).float().sum(1).mean())


def _mean(cells: torch.Tensor) -> str:
    return f"{cells.mean():+.3f}" if cells.numel() else "(no such cells)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--test", required=True, type=Path)
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--nnls", action="store_true")
    p.add_argument("--eps-scaling", type=float, default=None, help="epsilon scaling lambda (default: the model's)")
    p.add_argument("--sampler", default=None, help="default: the model's generate.sampler, else dpmpp")
    p.add_argument("--steps", type=int, default=None, help="default: the model's generate.steps, else 10")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's generate.guidance, else 3")
    p.add_argument("--vocoders", default="griffinlim,hifigan", help="comma-separated (griffinlim, hifigan)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pipe = AudioDiffusionPipeline.from_pretrained(args.model, device="cpu")
    if args.eps_scaling is not None:
        pipe.eps_scaling = args.eps_scaling
    frames, silence = pipe.segment_frames, pipe.audio_config.silence
    test = read_prepared_split(args.test, "test", pipe.audio_config)
    real = torch.stack([torch.nn.functional.pad(m, (0, max(0, frames - m.shape[-1])), value=silence)[:, :frames]
                        for m in evenly(test.mels, args.num)])
    settings = pipe.config.get("generate") or {}
    sampler, steps = args.sampler or settings.get("sampler", "dpmpp"), args.steps or settings.get("steps", 10)
    guidance = args.guidance if args.guidance is not None else settings.get("guidance", 3.0)
    print(f"generated: {sampler} {steps} steps, guidance {guidance:g} in (2, inf], "
          f"epsilon scaling {pipe.eps_scaling:g}")
    gen = pipe.sample_mel(batch_size=args.num, steps=steps, sampler=sampler, seed=0,
                          labels=[i % 10 for i in range(args.num)], guidance_scale=guidance,
                          guidance_interval=(2, float("inf")), progress=False)
    ms = MelSpec(pipe.audio_config)
    vocoders = args.vocoders.split(",")
    hifigan = get_vocoder("hifigan", pipe.audio_config) if "hifigan" in vocoders else None
    c = pipe.audio_config
    for name, mel in (("real", real), ("generated", gen)):
        energy = 10 * torch.log10(ms.inverse_magnitude(mel).pow(2).sum((1, 2))).mean()
        print(f"{name}: implied energy {energy:.2f} dB, mean per-clip mel maximum {mel.amax((1, 2)).mean():.3f}")
        roughness, near_top = envelope_shape(ms, mel)
        print(f"  frame-energy envelope: roughness {roughness:.2f} dB, "
              f"{near_top:.1f} frames within 3 dB of the loudest")
        waves = {}
        if "griffinlim" in vocoders:
            waves["griffinlim"] = pipe.vocode(mel, seed=0)
        if hifigan is not None:
            with torch.no_grad():
                waves["hifigan"] = hifigan(mel).float()
        if args.nnls:
            waves["griffinlim-nnls"] = torchaudio_functional().griffinlim(
                nnls_magnitude(ms, mel), torch.hann_window(c.win_length), c.n_fft, c.hop_length, c.win_length,
                power=1.0, n_iter=32, momentum=0.99, length=c.num_samples(mel.shape[-1]) - 1, rand_init=False)
        for vocoder, w in waves.items():
            level = loudness(w)
            diff = ms(w)[..., :mel.shape[-1]] - mel
            print(f"  {vocoder:16s} over full scale {level['over_full_scale']:.2f}, peak {level['peak_db']:.1f}, "
                  f"RMS {level['rms_db']:.1f} dBFS; mel(audio) - mel: all {diff.mean():+.3f}, "
                  f"low {_mean(diff[mel < -0.7])}, high {_mean(diff[mel > 0.3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
