"""Where generated digits get their loudness: the same mels through Griffin-Lim and HiFi-GAN, real test mels
beside them, the energy each mel implies, and how closely each vocoder's audio reproduces its mel.

    python benchmarks/loudness_probe.py --model egs/digits/exp/digits_cpu1k/checkpoints/step_00020500.pt \\
        --test egs/digits/dump/digits_cpu1k/test --num 64

Per set (real test mels, generated mels with guidance 3 in (2, inf], DPM-Solver++ 10) and vocoder: the
share of clips over full scale, mean peak and RMS in dBFS (audio.loudness), and mel(audio) - mel on all
cells, on low cells (< -0.7) and on high cells (> 0.3); per set, the energy of the pseudo-inverse
magnitude in dB and the mean per-clip mel maximum. --nnls also runs Griffin-Lim from a non-negative
least-squares magnitude (multiplicative updates) instead of the clamped pseudo-inverse. --eps-scaling
samples with another epsilon-scaling lambda than the model's.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--test", required=True, type=Path)
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--nnls", action="store_true")
    p.add_argument("--eps-scaling", type=float, default=None, help="epsilon scaling lambda (default: the model's)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pipe = AudioDiffusionPipeline.from_pretrained(args.model, device="cpu")
    if args.eps_scaling is not None:
        pipe.eps_scaling = args.eps_scaling
    frames, silence = pipe.segment_frames, pipe.audio_config.silence
    test = read_prepared_split(args.test, "test", pipe.audio_config)
    real = torch.stack([torch.nn.functional.pad(m, (0, max(0, frames - m.shape[-1])), value=silence)[:, :frames]
                        for m in test.mels[:args.num]])
    gen = pipe.sample_mel(batch_size=args.num, steps=10, sampler="dpmpp", seed=0,
                          labels=[i % 10 for i in range(args.num)], guidance_scale=3.0,
                          guidance_interval=(2, float("inf")), progress=False)
    ms = MelSpec(pipe.audio_config)
    hifigan = get_vocoder("hifigan", pipe.audio_config)
    c = pipe.audio_config
    for name, mel in (("real", real), ("generated", gen)):
        energy = 10 * torch.log10(ms.inverse_magnitude(mel).pow(2).sum((1, 2))).mean()
        print(f"{name}: implied energy {energy:.2f} dB, mean per-clip mel maximum {mel.amax((1, 2)).mean():.3f}")
        waves = {"griffinlim": pipe.vocode(mel, seed=0)}
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
                  f"low {diff[mel < -0.7].mean():+.3f}, high {diff[mel > 0.3].mean():+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
