"""HiFi-GAN V1 generator step: cost with and without gradients for the discriminators' weights.

    python benchmarks/vocoder_train_step.py                 # CPU, batch 4 x 8192 samples, 2 threads
    python benchmarks/vocoder_train_step.py --device cuda --batch-size 16

train_vocoder's generator step (LSGAN + feature matching through MPD and MSD) needs gradients
with respect to the generated audio only. The reference implementation leaves the
discriminators' weights trainable there, so autograd also builds the real branch's graph and
computes weight gradients that the next discriminator step throws away; train_vocoder turns
them off for that step. This times the two variants interleaved (random weights and inputs:
the cost does not depend on them) and prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import audiodiff  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.nets.hifigan import (HiFiGANGenerator, MultiPeriodDiscriminator, MultiScaleDiscriminator,
                                    feature_matching_loss, generator_adversarial_loss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--segment-size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    G = HiFiGANGenerator("v1", n_mels=80).to(device)
    mpd, msd = MultiPeriodDiscriminator().to(device), MultiScaleDiscriminator().to(device)
    discriminators = [*mpd.parameters(), *msd.parameters()]
    frames = args.segment_size // G.hop_length + 1
    mel = torch.randn(args.batch_size, 80, frames, device=device)
    y = torch.randn(args.batch_size, args.segment_size, device=device)

    def step(frozen: bool) -> float:
        for q in discriminators:
            q.requires_grad_(not frozen)
        G.zero_grad(), mpd.zero_grad(), msd.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        y_hat = G(mel)[..., :args.segment_size]
        _, f_p, r_p_maps, f_p_maps = mpd(y, y_hat)
        _, f_s, r_s_maps, f_s_maps = msd(y, y_hat)
        loss = (generator_adversarial_loss(f_p) + generator_adversarial_loss(f_s)
                + feature_matching_loss(r_p_maps, f_p_maps, 2.0) + feature_matching_loss(r_s_maps, f_s_maps, 2.0))
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    step(False), step(True)  # warm-up
    for _ in range(args.repeats):
        for frozen in (False, True):
            times[frozen].append(step(frozen))
    with_grad, without = statistics.median(times[False]), statistics.median(times[True])
    print(f"generator step, batch {args.batch_size} x {args.segment_size}, {device}, {args.threads} threads: "
          f"D weights with grad {with_grad:.3f} s, without {without:.3f} s, {with_grad / without:.2f}x "
          f"(medians of {args.repeats}, interleaved)")


if __name__ == "__main__":
    main()
