"""Drum beats made of the recorded one-shots: continuous audio for windowed generation, extension and loops.

    python local/beats.py --drums data/drums --out data/beats [--per-split 800,80,80] [--seconds 4] [--seed 0]

The one-shot model (stage 2) learns clips that start at an onset and ring out: position-dependent audio,
so denoising it in overlapping windows (long audio, loops) averages an onset at one window's start with
the silence at another's end, and fades to a faint pulse. A model meant to continue or loop drums must
learn stationary audio: these beats, trained on random 1 s crops.

Each beat is one kit of its split (so no kit is heard in two splits, as in the one-shot build) playing a
one-bar, 16-step pattern, repeated to fill --seconds at a tempo from 90 to 140 BPM: kick on the downbeat
(and on step 8 in most beats, elsewhere now and then), snare on the backbeat (steps 4 and 12) with soft
ghost notes, hi-hat on eighths or sixteenths with accents, a crash on the first downbeat in half the
beats and a tom fill in the last beat of the clip in a third. One sample per class a beat, drawn from the
kit's clips of that class; every hit a little softer or louder (0.8 to 1.0). The sum is peak-normalised
to -3 dBFS, 22,050 Hz mono 16-bit PCM. Deterministic: beat j of a split is a pure function of (--seed,
split, j), so the same one-shot build gives the same bytes.

Layout of --out: {train,valid,test}.jsonl ({"path", "kit", "tempo", "hats"} a line, "path" relative to
--out), wavs/<split>/beat_NNNNN.wav, build.json (parameters and counts). Kits without a kick, snare and
hi-hat are skipped; a split with no usable kit is an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050
SPLITS = ("train", "valid", "test")
NEEDED = ("kick", "snare", "hihat")


def kits_of(drums: Path, split: str) -> dict[str, dict[str, list[np.ndarray]]]:
    """{kit: {class name: [one-shot waves]}} of one split of the one-shot build, kits that have NEEDED."""
    manifest = drums / f"{split}.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"beats: {manifest} is missing; build the one-shots first (bash run.sh --stop-stage 0)")
    kits: dict[str, dict[str, list[np.ndarray]]] = {}
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        wave, rate = sf.read(drums / row["path"], dtype="float32")
        if rate != SAMPLE_RATE or wave.ndim != 1:
            raise SystemExit(f"beats: {drums / row['path']} is not {SAMPLE_RATE} Hz mono; rebuild the one-shots")
        kits.setdefault(row["kit"], {}).setdefault(row["label_name"], []).append(wave)
    usable = {k: v for k, v in sorted(kits.items()) if all(c in v for c in NEEDED)}
    if not usable:
        raise SystemExit(f"beats: no kit of {manifest} has a kick, a snare and a hi-hat")
    return usable


def pattern(rng: np.random.Generator, steps: int = 16) -> tuple[dict[str, np.ndarray], str]:
    """One bar: per class, the gain of each 16th step (0: no hit), and the hi-hat's subdivision."""
    kick = np.where(rng.random(steps) < np.where(np.arange(steps) % 2 == 0, 0.2, 0.08), 0.8, 0.0)
    kick[0] = 1.0
    if rng.random() < 0.75:
        kick[8] = 0.9
    snare = np.where((np.arange(steps) % 2 == 1) & (rng.random(steps) < 0.1), 0.3, 0.0)
    snare[[4, 12]] = 1.0
    kick[[4, 12]] = 0.0
    hats = "sixteenths" if rng.random() < 0.4 else "eighths"
    every = 1 if hats == "sixteenths" else 2
    hihat = np.zeros(steps)
    hihat[::every] = np.where(np.arange(0, steps, every) % 4 == 0, 0.9, 0.55)
    return {"kick": kick, "snare": snare, "hihat": hihat}, hats


def render(kit: dict[str, list[np.ndarray]], rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict]:
    """One beat of `kit`: the wave (peak -3 dBFS) and what it plays."""
    tempo = float(rng.uniform(90, 140))
    step = 60.0 / tempo / 4  # a 16th note, in seconds
    bar, hats = pattern(rng)
    n = round(seconds * SAMPLE_RATE)
    total = int(np.ceil(seconds / step))
    hits: list[tuple[int, str, float]] = [(i, c, float(bar[c][i % 16])) for i in range(total) for c in bar
                                          if bar[c][i % 16] > 0]
    if "cymbal" in kit and rng.random() < 0.5:
        hits.append((0, "cymbal", 0.8))
    if "tom" in kit and rng.random() < 0.33:
        last = (total - 1) // 4 * 4  # the last beat's four 16ths
        hits += [(i, "tom", 0.85) for i in range(last, total)]
    samples = {c: kit[c][int(rng.integers(len(kit[c])))] for c in {c for _, c, _ in hits}}
    out = np.zeros(n, dtype=np.float64)
    for i, c, gain in hits:
        at = round(i * step * SAMPLE_RATE)
        if at < n:
            wave = samples[c][:n - at]
            out[at:at + len(wave)] += gain * float(rng.uniform(0.8, 1.0)) * wave
    peak = float(np.abs(out).max())
    out *= 10 ** (-3 / 20) / max(peak, 1e-9)
    return out.astype(np.float32), {"tempo": round(tempo, 2), "hats": hats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drums", required=True, type=Path, help="the one-shot build (python -m audiodiff.datasets.drums)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--per-split", default="800,80,80", help="beats in train,valid,test")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        counts = [int(v) for v in args.per_split.split(",")]
    except ValueError:
        counts = []
    if len(counts) != 3 or min(counts) < 1:
        raise SystemExit(f"beats: --per-split {args.per_split!r} must be three counts above 0, e.g. 800,80,80")
    params = {"drums": str(args.drums), "per_split": counts, "seconds": args.seconds, "seed": args.seed}
    record = args.out / "build.json"
    if record.is_file() and json.loads(record.read_text()).get("params") == params:
        print(f"beats: {args.out} is already built with these settings")
        return 0
    kits_used = {}
    for s, (split, count) in enumerate(zip(SPLITS, counts)):
        kits = kits_of(args.drums, split)
        names = list(kits)
        kits_used[split] = names
        (args.out / "wavs" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for j in range(count):
            rng = np.random.default_rng([args.seed, s, j])
            kit = names[j % len(names)]
            wave, facts = render(kits[kit], rng, args.seconds)
            path = f"wavs/{split}/beat_{j:05d}.wav"
            sf.write(args.out / path, wave, SAMPLE_RATE, subtype="PCM_16")
            rows.append({"path": path, "kit": kit, **facts})
        (args.out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record.write_text(json.dumps({"params": params, "kits": kits_used,
                                  "counts": dict(zip(SPLITS, counts))}, indent=2) + "\n")
    print(f"beats: {sum(counts)} beats of {args.seconds:g} s in {args.out} "
          f"({', '.join(f'{k}: {len(v)} kits' for k, v in kits_used.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
