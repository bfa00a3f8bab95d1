"""What each edit costs on a trained model, and how its seams measure: network evaluations, CPU seconds,
and the metrics every edit records (kept-region difference, seam flux ratio, loop seam ratio, wrap click).

    python benchmarks/edit_costs.py --model egs/digits/exp/digits_cpu --input clip.wav --label 3 \\
        --extend-seconds 30 --loop-seconds 4 --json exp/edit_costs.json

One row per operation, each on the same input clip (its first --clip-seconds): vary (SDEdit and with
DDIM inversion), inpaint of the middle fifth, extension by --extend-seconds, a loop made of the clip,
a loop of --loop-seconds from scratch, plain generation of --extend-seconds by windows, encode + decode,
and interpolation between the clip and a second one. Seconds are wall time on this machine (--threads).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.audio import load_audio  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--second", type=Path, default=None, help="the other clip of interpolate (default: input)")
    p.add_argument("--label", type=int, default=None)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=25, help="steps of vary, encode, interpolate")
    p.add_argument("--repaint-steps", type=int, default=25, help="steps of inpaint, extend and loops")
    p.add_argument("--resample", type=int, default=3)
    p.add_argument("--extend-seconds", type=float, default=30.0)
    p.add_argument("--loop-seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = AudioDiffusionPipeline.from_pretrained(args.model, device="cpu")
    pipe.fast = False  # the threads asked for, not the fast path's pick
    sr = pipe.sample_rate
    x = load_audio(args.input, sr)[None]
    y = load_audio(args.second or args.input, sr)[None]
    seconds = x.shape[-1] / sr
    common = {"labels": args.label, "guidance_scale": args.guidance, "progress": False, "sample_rate": sr}
    rep = {"steps": args.repaint_steps, "sampler": "ddpm", "resample": args.resample}
    ops = [
        ("vary 0.5 (SDEdit, dpmpp)", lambda: pipe.vary(x, strength=0.5, steps=args.steps, **common)),
        ("vary 0.5 (DDIM inversion)", lambda: pipe.vary(x, strength=0.5, steps=args.steps, sampler="ddim",
                                                        invert=True, source_labels=args.label, **common)),
        ("inpaint the middle fifth", lambda: pipe.inpaint(x, regions=[(0.4 * seconds, 0.6 * seconds)], **rep,
                                                          **common)),
        (f"extend by {args.extend_seconds:g} s", lambda: pipe.extend(x, seconds=args.extend_seconds, **rep,
                                                                    **common)),
        ("make the clip loop (seam 0.2 s)", lambda: pipe.make_loop(x, seam_seconds=0.2, **rep, **common)),
        (f"loop of {args.loop_seconds:g} s from scratch",
         lambda: pipe(seconds=args.loop_seconds, loop=True, steps=args.steps, labels=args.label,
                      guidance_scale=args.guidance, progress=False, return_mel=True)),
        (f"generate {args.extend_seconds:g} s by windows",
         lambda: pipe(seconds=args.extend_seconds, steps=args.steps, labels=args.label,
                      guidance_scale=args.guidance, progress=False, return_mel=True)),
        ("encode + decode (refine 3)", lambda: _roundtrip(pipe, x, args)),
        ("interpolate, 5 alphas", lambda: pipe.interpolate(x, y, steps=args.steps, sample_rate=sr,
                                                           labels=args.label, progress=False)),
    ]
    rows = []
    for name, call in ops:
        start = time.perf_counter()
        out = call()
        wall = time.perf_counter() - start
        edit = out.edit if hasattr(out, "edit") else {}
        metrics = {k: v for k, v in (edit.get("metrics") or {}).items() if not isinstance(v, list)}
        if "loop" in name and "loop_seam_ratio" not in metrics and getattr(out, "mel", None) is not None:
            from audiodiff.regions import loop_metrics
            metrics.update(loop_metrics(out.mel, out.audio))
        row = {"op": name, "nfe": edit.get("nfe"), "seconds": wall, "audio_seconds": out.audio.shape[-1] / sr,
               **metrics}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "command": "python benchmarks/edit_costs.py " + " ".join(sys.argv[1:]),
              "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    return 0


def _roundtrip(pipe, x, args):
    enc = pipe.encode(x, steps=args.steps, refine=3, sample_rate=pipe.sample_rate, labels=args.label,
                      progress=False)
    out = pipe.decode(enc, progress=False)
    out.edit = {"nfe": args.steps * 5 + args.steps, "metrics": {"roundtrip_rel_error": enc.roundtrip_error[0]}}
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| operation | NFE | CPU s | audio s | kept max diff | seam flux ratio | loop seam ratio | wrap click |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v, fmt=".2f"):
        return "-" if v is None else f"{v:{fmt}}"
    for r in rows:
        lines.append(f"| {r['op']} | {r['nfe']} | {r['seconds']:.1f} | {r['audio_seconds']:.2f} | "
                     f"{f(r.get('kept_max_abs'), '.1e')} | {f(r.get('seam_flux_ratio'))} | "
                     f"{f(r.get('loop_seam_ratio'))} | {f(r.get('wrap_click'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
