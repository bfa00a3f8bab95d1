"""How much of real clips' level lies above the mel's fmax: the test files' loudness as they are and
low-passed at fmax (STFT bins above it zeroed), and the energy share above fmax.

    python benchmarks/band_level.py --test egs/digits/dump/digits_cpu1k/test [--fmax 8000]

If the low-passed files keep their level, a mel model's level gap to the files through a vocoder is not
the band the mel leaves out (egs/digits/README.md, the bundled model's loudness).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.audio import load_audio, loudness  # noqa: E402
from audiodiff.manifest import read_prepared  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--test", required=True, type=Path, help="a prepared split (its manifest names the files)")
    p.add_argument("--fmax", type=float, default=None, help="default: the split's own audio config fmax")
    p.add_argument("--n-fft", type=int, default=1024)
    args = p.parse_args(argv)
    entries, cache = read_prepared(args.test)
    audio = cache["audio_config"]
    fmax = args.fmax or float(audio["fmax"])
    sr = int(audio["sample_rate"])
    waves = [load_audio(e["path"], sr) for e in entries]
    window = torch.hann_window(args.n_fft)
    above = torch.fft.rfftfreq(args.n_fft, 1 / sr) > fmax
    low_passed, shares = [], []
    for w in waves:
        spec = torch.stft(w, args.n_fft, args.n_fft // 4, window=window, return_complex=True)
        power = spec.abs() ** 2
        shares.append(float(power[above].sum() / power.sum().clamp_min(1e-12)))
        spec[above] = 0
        low_passed.append(torch.istft(spec, args.n_fft, args.n_fft // 4, window=window, length=len(w)))
    share = float(np.mean(shares))
    print(f"{len(waves)} files of {args.test}, {sr} Hz, fmax {fmax:g} Hz")
    for name, level in (("as they are", loudness(waves)), (f"low-passed at {fmax:g} Hz", loudness(low_passed))):
        print(f"  {name}: {level['over_full_scale']:.1%} over full scale, peak {level['peak_db']:.2f} dBFS, "
              f"RMS {level['rms_db']:.2f} dBFS")
    print(f"  energy above fmax: {share:.2%} of the total on average ({10 * np.log10(1 - share):.2f} dB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
