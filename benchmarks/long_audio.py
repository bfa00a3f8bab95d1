"""Seam figures of long audio on a trained class-conditional model: each input clip extended by
--extend-seconds, and loops of --loop-seconds from scratch, each against a control made without the method.

    python benchmarks/long_audio.py --model egs/drums/exp/drums_cpu \\
        --manifest egs/drums/dump/drums_cpu/test/manifest.jsonl --guidance 2 \\
        --json egs/drums/results/long_audio.json --figures egs/drums/results

Rows (all numbers are per clip, then the median and the worst over the clips):
- extension: `pipe.extend` (RePaint in windows of the training segment, the clip's cells kept bit for bit);
  seam flux ratio at the join (the mean squared mel step across it over the median step inside; 1: no
  rougher than the audio's own frames).
- extension control: the clip followed by --extend-seconds generated on their own with the same label and
  seed (what appending without inpainting gives), the same ratio at the same join.
- loop: `pipe(seconds, loop=True)` (circular windows); loop seam ratio (the step from the last frame to the
  first, over the median step) and wrap click (the sample jump at the wrap over the 99th percentile jump).
- loop control: the same seeds and windows, not circular: the same two figures across the wrap.
- reference: the same statistic at every frame boundary of the extended clip, averaged (its mean step over
  its median step: what an ordinary step of that audio measures; onsets make it well above 1), and its
  95th percentile (a join below it is no rougher than the audio's own onsets).
Seconds are wall time on this machine at --threads. Levels: the mean RMS (dBFS, before any scaling) of the
extensions' new audio, of the input clips and of the loops: a seam ratio of near-silent audio says little.
--figures DIR writes DIR/PREFIX_loop.png (the first loop played twice, its control beside it) and
DIR/PREFIX_extend.png (the first extension's clip and its next 5 s).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.audio import load_audio, loudness  # noqa: E402
from audiodiff.diffusion.editing import seam_ratio  # noqa: E402
from audiodiff.manifest import load_manifest  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402
from audiodiff.regions import loop_metrics  # noqa: E402


def first_per_label(manifest: Path, per_label: int) -> list[tuple[Path, int | None]]:
    """The first `per_label` clips of each label in the manifest's order, as (path, label); an unlabelled
    manifest (an unconditional model's) gives its first `per_label` clips with label None."""
    picked: dict[int | None, list[Path]] = {}
    for row in load_manifest(manifest):
        label = None if row.get("label") is None else int(row["label"])
        if len(picked.setdefault(label, [])) < per_label:
            picked[label].append(Path(row["path"]))
    return [(p, label) for label in sorted(picked, key=lambda k: -1 if k is None else k) for p in picked[label]]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "worst": max(values), "n": len(values)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, type=Path,
                   help="clips to extend (the first --per-label of each label, or of all when unlabelled)")
    p.add_argument("--per-label", type=int, default=1)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=25, help="steps of the loops and the controls (DPM-Solver++)")
    p.add_argument("--repaint-steps", type=int, default=25, help="DDPM steps of the extension")
    p.add_argument("--resample", type=int, default=3)
    p.add_argument("--extend-seconds", type=float, default=30.0)
    p.add_argument("--loop-seconds", type=float, default=4.0)
    p.add_argument("--loop-seeds", type=int, default=2, help="loops per label (of an unlabelled manifest: loops)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--figures", type=Path, default=None, help="folder for the two PNG figures")
    p.add_argument("--prefix", default="long_audio", help="the figures' file names: PREFIX_loop.png, PREFIX_extend.png")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = AudioDiffusionPipeline.from_pretrained(args.model, device="cpu")
    pipe.fast = False  # the threads asked for, not the fast path's pick
    sr = pipe.sample_rate
    clips = first_per_label(args.manifest, args.per_label)
    guide = {"guidance_scale": args.guidance, "progress": False}
    rows: dict[str, dict] = {}
    ext, ctl, real, p95, new_audio, inputs = [], [], [], [], [], []
    ext_nfe, ext_secs, first_ext = 0, 0.0, None
    for i, (path, label) in enumerate(clips):
        x = load_audio(path, sr)[None]
        start = time.perf_counter()
        out = pipe.extend(x, seconds=args.extend_seconds, sampler="ddpm", steps=args.repaint_steps,
                          resample=args.resample, seed=i, labels=label, sample_rate=sr, **guide)
        ext_secs += time.perf_counter() - start
        ext_nfe = out.edit["nfe"]
        join = out.edit["regions_frames"][0][0]
        new_audio.append(out.audio[0, x.shape[-1]:])
        inputs.append(x[0])
        ext.append(out.edit["metrics"]["seam_flux_ratio"])
        alone = pipe(seconds=args.extend_seconds, steps=args.steps, seed=i, labels=label, return_mel=True, **guide)
        ctl.append(seam_ratio(torch.cat([out.mel[..., :join], alone.mel], -1), [join]))
        d = out.mel.diff(dim=-1).pow(2).flatten(0, -2).mean(0)
        d = d / d.median().clamp(min=1e-12)
        real.append(float(d.mean()))
        p95.append(float(torch.quantile(d, 0.95)))
        first_ext = first_ext if first_ext is not None else (out.mel[0], join, path.name, label)
        print(json.dumps({"clip": str(path.name), "label": label, "extension_seam": ext[-1],
                          "control_seam": ctl[-1], "mean_step_ratio": real[-1],
                          "p95_step_ratio": p95[-1]}), flush=True)
    rows["extension"] = {**summary(ext), "nfe_per_clip": ext_nfe, "seconds_per_clip": ext_secs / len(clips),
                         "new_audio_rms_db": loudness(new_audio)["rms_db"], "input_rms_db": loudness(inputs)["rms_db"]}
    rows["extension control (appended, not inpainted)"] = summary(ctl)
    rows["reference: every frame step of the extended clip, mean"] = summary(real)
    rows["reference: every frame step of the extended clip, 95th percentile"] = summary(p95)
    kinds = sorted({lab for _, lab in clips}, key=lambda k: -1 if k is None else k)
    labels = [label for label in kinds for _ in range(args.loop_seeds)]
    loop_kw = {"batch_size": len(labels), "seconds": args.loop_seconds, "steps": args.steps, "seed": 0,
               "labels": None if None in kinds else labels, "return_mel": True, **guide}
    start = time.perf_counter()
    loops = pipe(loop=True, **loop_kw)
    loop_secs = time.perf_counter() - start
    plain = pipe(loop=False, **loop_kw)
    for name, out, secs in (("loop", loops, loop_secs), ("loop control (windows not circular)", plain, None)):
        per = [loop_metrics(out.mel[j:j + 1], out.audio[j:j + 1]) for j in range(len(labels))]
        rows[name] = {"loop_seam_ratio": summary([m["loop_seam_ratio"] for m in per]),
                      "wrap_click": summary([m["wrap_click"] for m in per]), "rms_db": loudness(out.audio)["rms_db"]}
        if secs is not None:
            rows[name].update(nfe_per_clip=out.edit["nfe"] if getattr(out, "edit", None) else None,
                              seconds_per_clip=secs / len(labels))
    result = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "command": "python benchmarks/long_audio.py " + shlex.join(argv),
              "clips": [str(p.name) for p, _ in clips], "loop_labels": labels, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.figures:
        figures(args.figures / args.prefix, pipe, first_ext, loops.mel[0], plain.mel[0])
    print(markdown(rows))
    return 0


def figures(stem: Path, pipe, first_ext, loop_mel, plain_mel) -> None:
    """STEM_extend.png: the first extension, its new region shaded; STEM_loop.png: the first loop played twice
    beside its non-circular control played twice (the second pass shaded: the wrap is its edge)."""
    from audiodiff.pages import save_mel_png

    stem.parent.mkdir(parents=True, exist_ok=True)
    mel, join, name, label = first_ext
    show = min(mel.shape[-1], join + pipe.loop_frames(5.0))  # the clip and the first 5 s after the join
    save_mel_png(stem.with_name(stem.name + "_extend.png"), mel[:, :show], pipe.audio_config, shade=[(join, show)],
                 title=f"{name[:40]}{'' if label is None else f' (label {label})'}, then its extension (shaded)")
    f = loop_mel.shape[-1]
    both = torch.cat([loop_mel, loop_mel, plain_mel, plain_mel], -1)
    save_mel_png(stem.with_name(stem.name + "_loop.png"), both, pipe.audio_config, shade=[(f, 2 * f), (3 * f, 4 * f)],
                 title="loop x2 | control x2 (second pass shaded)")


def markdown(rows: dict) -> str:
    lines = ["| row | seam ratio median | worst | wrap click median | worst | RMS dBFS | NFE / clip | CPU s / clip |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        seam = r.get("loop_seam_ratio", r)
        click = r.get("wrap_click")
        c = f"{click['median']:.2f} | {click['worst']:.2f}" if click else "- | -"
        nfe = r.get("nfe_per_clip")
        secs = r.get("seconds_per_clip")
        level = r.get("new_audio_rms_db", r.get("rms_db"))
        lines.append(f"| {name} | {seam['median']:.2f} | {seam['worst']:.2f} | {c} | "
                     f"{'-' if level is None else f'{level:.1f}'} | {nfe if nfe else '-'} | "
                     f"{f'{secs:.1f}' if secs else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
