"""Segments per second from MelDataset through make_loader: in-memory vs mmap, 0 and 2 workers.

    python benchmarks/data_throughput.py                      # synthetic 300 clips x 1-6 s, 80 mels
    python benchmarks/data_throughput.py --dir data/prepared  # an existing prepared folder

A training step needs about batch_size / step_time segments/s; a U-Net step of batch 64 on
a GPU takes tens of milliseconds, so a few thousand segments/s keep it fed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.audio import AudioConfig  # noqa: E402
from audiodiff.data import MelDataset, batches, make_loader  # noqa: E402
from audiodiff.prepare import prepare  # noqa: E402


def synthetic(folder: Path, clips: int, sample_rate: int = 22050) -> Path:
    rng = np.random.default_rng(0)
    audio = folder / "audio"
    audio.mkdir(parents=True)
    for i in range(clips):
        n = int(rng.uniform(1.0, 6.0) * sample_rate)
        wave = 0.1 * rng.standard_normal(n).astype(np.float32)
        sf.write(audio / f"{i:05d}.wav", wave, sample_rate)
    out = folder / "prepared"
    report = prepare(audio, out, AudioConfig(), workers=2, progress=False)
    print(f"synthetic data: {report.usable} clips, {report.total_seconds / 60:.1f} min, "
          f"prepared in {report.seconds_elapsed:.1f} s")
    return out


def measure(prepared: Path, in_memory: bool, workers: int, batch_size: int, segment_frames: int,
            num_batches: int) -> float:
    ds = MelDataset(prepared, segment_frames, in_memory=in_memory)
    loader = make_loader(ds, batch_size, shuffle=True, seed=0, num_workers=workers, pin_memory=False)
    it = batches(loader)
    for _ in range(5):  # warm-up: worker start, first maps
        next(it)
    t0 = time.perf_counter()
    total = 0
    for _ in range(num_batches):
        _, batch = next(it)
        total += batch["mel"].shape[0]
    rate = total / (time.perf_counter() - t0)
    del it, loader
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, help="prepared folder (default: make a synthetic one)")
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--segment-frames", type=int, default=87)
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = args.dir or synthetic(Path(tmp), args.clips)
        print(f"batch {args.batch_size}, segment {args.segment_frames} frames, {args.batches} batches, "
              f"torch {torch.__version__}")
        for in_memory in (True, False):
            for workers in (0, 2):
                rate = measure(prepared, in_memory, workers, args.batch_size, args.segment_frames, args.batches)
                print(f"  {'in-memory' if in_memory else 'mmap':9s}  workers={workers}: {rate:9.0f} segments/s")


if __name__ == "__main__":
    main()
