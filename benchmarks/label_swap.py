"""The label-swap benchmark of the editing spec: a clip of digit d varied towards d' at strengths 0.2 .. 1,
scored for success (the digits classifier hears d') and preservation (mel L1 to the source).

    python benchmarks/label_swap.py --model egs/digits/exp/digits_cpu \\
        --classifier egs/digits/exp/digits_cpu/classifier/classifier.pt \\
        --test egs/digits/dump/digits_cpu/test --per-digit 10 --json exp/label_swap.json --plot exp/label_swap.png

Clip j of digit d (the first --per-digit test clips of each digit, unseen speakers) asks for
d' = (d + 1 + j % 9) % 10, so every digit is asked for equally. Each strength runs twice: SDEdit from
fresh noise and with DDIM inversion (invert=True: the source's own trajectory, with its label, up to the
starting level). The edited mels are scored directly by the classifier (no vocoder), the same mels'
mel L1 to the source is the preservation, and seconds and network evaluations per clip are the cost
(CPU, --threads). Strength 0 is the source itself (its accuracy on d' is 0 by construction).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.clipsets import read_prepared_split  # noqa: E402
from audiodiff.metrics import classify, load_classifier  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--classifier", required=True, type=Path)
    p.add_argument("--test", required=True, type=Path, help="prepared test split (python -m audiodiff.prepare)")
    p.add_argument("--per-digit", type=int, default=10)
    p.add_argument("--strengths", default="0,0.2,0.4,0.6,0.8,1.0")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--guidance-interval", default="2,inf")
    p.add_argument("--refine", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    return p


def pick_clips(split, per_digit: int):
    chosen: list[int] = []
    for d in range(10):
        chosen += [i for i, label in enumerate(split.labels) if label == d][:per_digit]
    return chosen


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = AudioDiffusionPipeline.from_pretrained(args.model, device="cpu")
    net, info = load_classifier(args.classifier)
    split = read_prepared_split(args.test, "test", pipe.audio_config)
    idx = pick_clips(split, args.per_digit)
    frames = pipe.segment_frames
    src = torch.stack([_fit(split.mels[i], frames, pipe.audio_config.silence) for i in idx])  # [N, n_mels, F]
    source_labels = [int(split.labels[i]) for i in idx]
    targets = [(d + 1 + j % 9) % 10 for j, d in zip(range(len(idx)), source_labels)]
    rows = []
    for invert in (False, True):
        for strength in [float(s) for s in args.strengths.split(",")]:
            start = time.perf_counter()
            out = pipe.vary(None, mel=src, strength=strength, steps=args.steps, sampler=args.sampler, seed=0,
                            labels=targets, guidance_scale=args.guidance, guidance_interval=args.guidance_interval,
                            invert=invert, refine=args.refine, source_labels=source_labels, progress=False)
            seconds = time.perf_counter() - start
            probs, _ = classify(net, out.mel, info["segment_frames"], pipe.audio_config.silence)
            pred = probs.argmax(1)
            row = {"invert": invert, "strength": strength, "n": len(idx),
                   "success": float(np.mean(pred == np.array(targets))),
                   "kept_source_digit": float(np.mean(pred == np.array(source_labels))),
                   "mel_l1": float((out.mel - src).abs().mean()),
                   "nfe_per_clip": out.edit["nfe"], "seconds_per_clip": seconds / len(idx)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "settings": {k: str(v) for k, v in vars(args).items()},
              "checkpoint": str(pipe.source), "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)
    print(markdown(rows))
    return 0


def _fit(mel, frames: int, silence: float) -> torch.Tensor:
    mel = torch.as_tensor(mel).float()
    if mel.shape[-1] >= frames:
        return mel[:, :frames]
    return torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]), value=silence)


def markdown(rows: list[dict]) -> str:
    lines = ["| start | strength | success (hears d') | still hears d | mel L1 to source | NFE / clip | s / clip |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {'DDIM inversion' if r['invert'] else 'noise (SDEdit)'} | {r['strength']:.1f} | "
                     f"{100 * r['success']:.0f}% | {100 * r['kept_source_digit']:.0f}% | {r['mel_l1']:.3f} | "
                     f"{r['nfe_per_clip']} | {r['seconds_per_clip']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for invert, style in ((False, "o-"), (True, "s--")):
        pts = [r for r in rows if r["invert"] == invert]
        ax.plot([r["mel_l1"] for r in pts], [100 * r["success"] for r in pts], style,
                label="DDIM inversion" if invert else "SDEdit (noise)")
        for r in pts:
            ax.annotate(f"{r['strength']:.1f}", (r["mel_l1"], 100 * r["success"]), fontsize=7,
                        xytext=(3, -8), textcoords="offset points")
    ax.set_xlabel("mel L1 to the source (lower keeps more)")
    ax.set_ylabel("edit success: hears d' (%)")
    ax.set_title("digits label swap, by strength", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


if __name__ == "__main__":
    sys.exit(main())
