"""Put a trained digits model into the package (audiodiff/models/digits): the model directory with
float16 weights and the generation settings its card measured, the evaluation classifier, and
MODEL_CARD.md (the command that made it, the data, the metrics, the sha256, the licences).

    python egs/digits/local/bundle_model.py --run egs/digits/exp/digits_cpu1k \\
        --classifier egs/digits/exp/digits_cpu1k/classifier/classifier.pt \\
        --table egs/digits/results/bundled_gl2048.json --made-by "bash egs/digits/run.sh ..." \\
        --wall "..." --out audiodiff/models/digits

--table is benchmarks/digits_table.py's JSON for the settings bundled (--steps/--sampler/--guidance
below must be the ones it measured); its rows, and the real train and test rows, become the card's table.
The folder is replaced atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from audiodiff.atomic import file_sha256, replace_dir  # noqa: E402
from audiodiff.hub import save_model_dir  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402

COLUMNS = (("FID", "FID ↓", ".2f"), ("IS", "IS ↑", ".3f"), ("accuracy", "accuracy ↑", "%"),
           ("NDB/K", "NDB/K ↓", ".3f"), ("over_full_scale", "> 0 dBFS", "%"), ("peak_db", "peak dBFS", ".1f"),
           ("rms_db", "RMS dBFS", ".1f"), ("judge_accuracy", "stricter judge ↑", "%"))


def cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if fmt == "%" else f"{value:{fmt}}"


def table(state: dict) -> str:
    lines = ["| clips | N | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for name in ("train", "test"):
        r = state["reference_rows"].get(name)
        if r:
            lines.append(f"| {name} split (real) | {r['num']} | " + " | ".join(cell(r.get(k), f) for k, _, f in COLUMNS)
                         + " |")
    names = {"griffinlim": "Griffin-Lim", "hifigan": "HiFi-GAN"}
    for vocoder, r in state["reference_rows"].get("test_vocoded", {}).items():
        lines.append(f"| test split (real) through {names.get(vocoder, vocoder)} | {r['num']} | "
                     + " | ".join(cell(r.get(k), f) for k, _, f in COLUMNS) + " |")
    for key, r in state["rows"].items():
        lines.append(f"| generated: {key} | {r['num']} | " + " | ".join(cell(r.get(k), f) for k, _, f in COLUMNS)
                     + " |")
    return "\n".join(lines)


def copy_classifier(src: Path, dst: Path) -> None:
    """The evaluation classifier's checkpoint with its data folders relative to the recipe folder (where this
    runs), so the shipped file names no machine's absolute paths."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    for key in ("train_dir", "valid_dir", "test_dir"):
        if isinstance(state.get(key), str) and os.path.isabs(state[key]):
            state[key] = os.path.relpath(state[key], Path.cwd())
    torch.save(state, dst)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--classifier", required=True, type=Path)
    p.add_argument("--table", required=True, type=Path, action="append",
                   help="digits_table JSON; repeat to add rows (the first one's real rows are used)")
    p.add_argument("--made-by", required=True, help="the command that trained the model")
    p.add_argument("--wall", required=True, help="training wall time and machine, in words")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sampler", default="dpmpp")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--guidance-interval", default="2,inf")
    p.add_argument("--vocoder", default="griffinlim")
    p.add_argument("--eps-scaling", type=float, default=1.0,
                   help="epsilon scaling lambda (the model config's diffusion.eps_scaling; 1 = off)")
    p.add_argument("--notes", default="", help="a paragraph for the card (what is not good yet)")
    p.add_argument("--judge", default="", help="the stricter judge of the table's judge column, in words")
    p.add_argument("--data", default="`python -m audiodiff.datasets.digits --per-digit 1000 --seed 0` (10,000 clips; "
                   "speakers split train / valid / test, 518 / 65 / 65 of 648 espeak-ng voice variants)",
                   help="the data, in words, for the card")
    p.add_argument("--out", type=Path, default=ROOT / "audiodiff" / "models" / "digits")
    args = p.parse_args()

    pipe = AudioDiffusionPipeline.from_pretrained(args.run, device="cpu")
    pipe.eps_scaling = args.eps_scaling
    config = {k: v for k, v in pipe.config.items() if k not in ("source",)}
    low, high = (float(v) for v in args.guidance_interval.split(","))
    config["generate"] = {"num": 10, "labels": list(range(10)), "sampler": args.sampler, "steps": args.steps,
                          "guidance": args.guidance, "guidance_interval": [low, high], "vocoder": args.vocoder}
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in pipe.net.state_dict().items()}
    tmp = args.out.with_name(f".{args.out.name}.bundle-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(tmp / "model", config, weights)
    for f in (tmp / "model").iterdir():
        f.rename(tmp / f.name)
    (tmp / "model").rmdir()
    copy_classifier(args.classifier, tmp / "classifier.pt")
    tables = [json.loads(t.read_text()) for t in args.table]
    for t, table_file in zip(tables, args.table):
        measured = t["settings"].get("eps_scaling", 1.0)
        if measured != args.eps_scaling:
            sys.exit(f"bundle_model: {table_file} was measured with eps_scaling {measured:g}, not --eps-scaling "
                     f"{args.eps_scaling:g}; bundle the settings the card shows")
        if t["settings"]["guidance"] != args.guidance or t["settings"].get("guidance_interval") != [low, high]:
            sys.exit(f"bundle_model: {table_file} was measured with guidance {t['settings']['guidance']:g} in "
                     f"{t['settings'].get('guidance_interval')}, not --guidance {args.guidance:g} "
                     f"in [{low:g}, {high:g}]")
        for r in t["rows"].values():
            if (r["sampler"], r["steps"]) != (args.sampler, args.steps):
                sys.exit(f"bundle_model: {table_file} has a {r['sampler']}:{r['steps']} row, not --sampler "
                         f"{args.sampler} --steps {args.steps}; bundle the settings the card shows")
    vocoded = {v: r for t in tables for v, r in t["reference_rows"].get("test_vocoded", {}).items()}
    state = {**tables[0], "reference_rows": {**tables[0]["reference_rows"], "test_vocoded": vocoded},
             "rows": {f"{k} (N = {r['num']})": r for t in tables for k, r in t["rows"].items()}}
    commands = "; ".join(f"`{t['runs'][-1]['command']}`" for t in tables if t.get("runs"))
    digest = file_sha256(tmp / "model.safetensors")
    params = sum(v.numel() for v in weights.values())
    last = state["runs"][-1] if state.get("runs") else {}
    size = sum(f.stat().st_size for f in tmp.iterdir()) / 1e6
    scaling = "" if args.eps_scaling == 1.0 else (
        f"; epsilon scaling {args.eps_scaling:g} (config.yaml `diffusion.eps_scaling`: the noise estimate is "
        "divided by it at every step, Ning et al. 2024; every use of the model applies it, "
        "`--eps-scaling 1` turns it off)")
    card = f"""# The bundled digits model

A class-conditional mel diffusion model of the ten spoken digits "zero" to "nine", trained by this
project's own recipe (egs/digits) on clips that espeak-ng speaks offline. `python -m audiodiff.generate
--out clips/` uses it when no trained run is in reach; `AudioDiffusionPipeline.from_pretrained("digits")`
loads it by name.

- weights: `model.safetensors`, float16, {params:,} parameters (1D U-Net), sha256: {digest}
- evaluation classifier: `classifier.pt` (audiodiff.train_classifier on the same train split;
  {cell(state.get('classifier_test_accuracy'), '%')} on the test split's unseen speakers)
- package data in all: {size:.1f} MB
- made by: `{args.made_by}` (from the repository root; seed 0 as in the recipe), training step
  {pipe.config.get('step')}: {args.wall}
- data: {args.data}, mels by `audiodiff.prepare`
- generation settings (config.yaml `generate:`, used for every flag not given): {args.sampler}
  {args.steps} steps, classifier-free guidance {args.guidance:g} for noise levels sigma in ({low:g}, {high:g}],
  vocoder {args.vocoder}{scaling}

## Metrics

The SC09 protocol of egs/digits (benchmarks/digits_table.py; clip i asks for digit i % 10; FID and
NDB/K against the train split's classifier features; loudness before any scaling: the test split's row of
the files themselves, its rows "through" a vocoder of the same files as mels through that vocoder).
Commands, from egs/digits: {commands} ({last.get('hardware', '?')},
{last.get('date', '?')}). The stricter judge: {args.judge or '-'}

{table(state)}

{args.notes}

## Licences

- the weights and this card: MIT, as audiodiff;
- the training clips: spoken by espeak-ng (GPL-3.0-or-later) through the espeakng-loader wheel; the
  synthesised audio is program output, not a copy of the program, and carries no licence of its own
  from it;
- the evaluation classifier: trained by audiodiff on the same clips, MIT.
"""
    (tmp / "MODEL_CARD.md").write_text(card)
    for f in tmp.iterdir():
        f.chmod(0o644)  # package data: readable by everyone who installs it
    replace_dir(tmp, args.out)
    print(f"bundled {args.run} (step {pipe.config.get('step')}) into {args.out}: {size:.1f} MB, sha256 {digest}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
