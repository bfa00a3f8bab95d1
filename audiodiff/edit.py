"""python -m audiodiff.edit OP INPUT... --out DIR: edit audio files with a trained model.

    python -m audiodiff.edit vary clips/ --out varied/ --strength 0.4 --label 7      # a label swap
    python -m audiodiff.edit inpaint a.wav --out fixed/ --region 0.3:0.5 --region -0:00.2:
    python -m audiodiff.edit extend loop.wav --out longer/ --seconds 30 --side right
    python -m audiodiff.edit loop --out loops/ --seconds 4                           # a loop from scratch
    python -m audiodiff.edit loop beat.wav --out loops/ --seam-seconds 0.3            # make a clip loop
    python -m audiodiff.edit encode a.wav --out enc/ ; python -m audiodiff.edit decode enc/ --out dec/
    python -m audiodiff.edit interpolate a.wav b.wav --out mix/ --alphas 0,0.25,0.5,0.75,1

INPUT: files, folders (searched recursively) or a clips.jsonl from generate; a file that cannot be
read is skipped with its reason in DIR/skipped.tsv and the rest are edited. DIR gets edit_NNNN.wav
(and source_NNNN.wav, the input at the model's rate), spectrogram PNGs with the regenerated region
shaded, index.html with before/after players and edits.jsonl: per edit the source and its sha256,
the operation, snapped regions, seed, network evaluations, metrics and the command that makes it
again. DIR is written under a temporary name and renamed at the end. Mistakes in arguments exit 2
with one line before anything is loaded or written.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from .atomic import file_sha256, replace_dir
from .audio import save_audio
from .diffusion.guidance import check_eps_scaling
from .cli import OneLineParser, UsageError, one_line, run_face
from .generate import FORMATS, SAMPLER_CHOICES, check_out_dir, flag_names, parse_labels, resolve_model
from .hub import read_model_config
from .manifest import gather_inputs
from .outputs import EncodeOutput
from .pages import html_page, save_mel_png
from .pipeline import AudioDiffusionPipeline
from .runtime import pick_device
from .regions import parse_alphas, parse_bins, parse_region
from .version import __version__

OPS = ("vary", "inpaint", "extend", "loop", "encode", "decode", "interpolate")
RECORDS = "edits.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m audiodiff.edit", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="op", required=True, parser_class=OneLineParser, metavar="{" + ",".join(OPS) + "}")
    for op in OPS:
        q = sub.add_parser(op, help=f"{op} (see python -m audiodiff.edit {op} --help)")
        q.add_argument("inputs", nargs="*" if op == "loop" else "+", type=Path, metavar="INPUT")
        q.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
        q.add_argument("--model", type=Path, default=None, help="a run or model directory (default: the newest run)")
        sampler = "dpmpp" if op == "vary" else "ddpm" if op in ("inpaint", "extend", "loop") else "ddim"
        q.add_argument("--steps", type=int, default=25 if op == "vary" else 50, help="sampler steps")
        q.add_argument("--sampler", choices=SAMPLER_CHOICES, default=sampler, help=f"default {sampler}")
        q.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (ddim only)")
        q.add_argument("--seed", type=int, default=0, help="input i uses seed + i (default 0)")
        q.add_argument("--label", action="append", default=None, metavar="L", help="class label(s), cycled")
        q.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
        q.add_argument("--guidance-interval", default=None, metavar="LO,HI", help="guide only for sigma in (LO, HI]")
        q.add_argument("--eps-scaling", type=float, default=None, metavar="LAMBDA",
                       help="divide the noise estimate by LAMBDA (default: the model's; decode: the encode's)")
        q.add_argument("--vocoder", default="griffinlim", help="griffinlim, hifigan or a fine-tuned generator.pt")
        q.add_argument("--device", default="auto")
        q.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
        q.add_argument("--format", choices=FORMATS, default="wav")
        q.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier edit output")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
        if op == "vary":
            q.add_argument("--strength", type=float, required=True, help="0 (the input) .. 1 (fresh noise)")
            q.add_argument("--invert", action="store_true", help="reach the start level by DDIM inversion")
        if op in ("vary", "encode", "interpolate"):
            q.add_argument("--refine", type=int, default=3, help="fixed-point iterations of the inversion")
        if op in ("inpaint", "extend", "loop"):
            q.add_argument("--resample", type=int, default=5, help="RePaint resampling (1 = none)")
            q.add_argument("--jump", type=int, default=1, help="RePaint jump length")
            q.add_argument("--crossfade-ms", type=float, default=20.0, help="kept-audio crossfade (default 20)")
            q.add_argument("--resynthesize", action="store_true", help="vocode everything instead of keeping samples")
        if op == "inpaint":
            q.add_argument("--region", action="append", required=True, metavar="START:END",
                           help="seconds or mm:ss.s, negative from the end (write --region=-0.5:), empty = clip edge; "
                                "repeatable")
            q.add_argument("--bins", default=None, metavar="LO:HI", help="only these mel bins")
        if op in ("extend", "loop"):
            q.add_argument("--seconds", type=float, default=None, help="seconds to add (extend) / loop length")
        if op == "extend":
            q.add_argument("--side", choices=("right", "left", "both"), default="right")
        if op == "loop":
            q.add_argument("--seam-seconds", type=float, default=0.3, help="regenerated on each side of the seam")
        if op in ("extend", "loop"):
            q.add_argument("--window-frames", type=int, default=None, help="window (default: the training segment)")
            q.add_argument("--stride-frames", type=int, default=None, help="window stride (default: window / 4)")
        if op == "interpolate":
            q.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="comma-separated, 0 (A) .. 1 (B)")
    return p


# --------------------------------------------------------------------------- validation

def _validate(args: argparse.Namespace) -> dict:
    """Everything a run needs, checked before anything is loaded or written; UsageError otherwise."""
    plan: dict = {"labels": parse_labels(args.label)}
    check_out_dir(args.out, args.overwrite, marker=RECORDS, tool="audiodiff.edit")
    if args.op == "vary" and not 0 <= args.strength <= 1:
        raise UsageError(f"--strength {args.strength} must be from 0 (the input) to 1 (fresh noise)")
    try:
        if args.op == "inpaint":
            plan["regions"] = [parse_region(r) for r in args.region]
            plan["bins"] = parse_bins(args.bins)
        if args.op == "interpolate":
            plan["alphas"] = parse_alphas(args.alphas)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.op == "extend" and not (args.seconds and 0 < args.seconds < 3600):
        raise UsageError("extend needs --seconds S, the seconds to add (above 0, below 3600)")
    if args.op == "loop":
        if not args.inputs and not (args.seconds and args.seconds > 0):
            raise UsageError("loop needs an INPUT to make loop, or --seconds S for a loop from scratch")
        if args.inputs and args.seconds:
            raise UsageError("loop takes an INPUT (made to loop at its own length) or --seconds (from scratch), "
                             "not both")
    if args.op == "interpolate":
        if len(args.inputs) != 2:
            raise UsageError(f"interpolate takes exactly two INPUT files (A and B), got {len(args.inputs)}")
    replaces = args.op in ("inpaint", "extend") or (args.op == "loop" and args.inputs)  # a loop from scratch does not
    if replaces and args.sampler == "dpmpp":
        raise UsageError(f"--sampler dpmpp cannot {args.op} (a replacement breaks its multistep history); "
                         "use ddpm or ddim")
    for flag in ("refine", "resample", "jump"):
        if getattr(args, flag, 1) is not None and getattr(args, flag, 1) < (0 if flag == "refine" else 1):
            raise UsageError(f"--{flag} {getattr(args, flag)} is too small (see --help)")
    pattern = "noise_*.safetensors" if args.op == "decode" else None
    plan["files"], plan["skipped"] = gather_inputs(args.inputs, pattern) if args.inputs else ([], [])
    plan["model"] = resolve_model(args.model, "audiodiff.edit")
    try:
        spec = read_model_config(plan["model"])
        labels = plan["labels"]
        spec.check_request(steps=args.steps, sampler=args.sampler, seed=args.seed, eta=args.eta,
                           labels=None if labels is None else labels[0], guidance_scale=args.guidance,
                           guidance_interval=args.guidance_interval)
        for label in labels or []:
            spec.check_request(labels=label)
    except ValueError as e:
        raise UsageError(flag_names(str(e))) from None
    try:
        if args.eps_scaling is not None:
            check_eps_scaling(args.eps_scaling)
    except ValueError as e:
        raise UsageError(flag_names(str(e))) from None
    try:
        plan["device"] = pick_device(args.device)
    except ValueError as e:
        raise UsageError(str(e).replace("device=", "--device ")) from None
    return plan


# --------------------------------------------------------------------------- one edit

def _common(args: argparse.Namespace, label) -> dict:
    return {"steps": args.steps, "sampler": args.sampler, "labels": label, "guidance_scale": args.guidance,
            "guidance_interval": args.guidance_interval, "precision": args.precision, "progress": not args.quiet}


def run_one(pipe, args: argparse.Namespace, plan: dict, source, seed: int, label):
    """The pipeline call of this op on one source (a path, or None for a loop from scratch)."""
    kw = _common(args, label)
    if args.op in ("inpaint", "extend", "loop"):
        kw.update(resample=args.resample, jump=args.jump, eta=args.eta, keep_audio=not args.resynthesize,
                  crossfade_ms=args.crossfade_ms)
    if args.op == "vary":
        kw.pop("guidance_interval")
        return pipe.vary(source, strength=args.strength, seed=seed, invert=args.invert, refine=args.refine,
                         eta=args.eta, guidance_interval=args.guidance_interval, **kw)
    if args.op == "inpaint":
        return pipe.inpaint(source, regions=plan["regions"], bins=plan["bins"], seed=seed, **kw)
    if args.op == "extend":
        return pipe.extend(source, seconds=args.seconds, side=args.side, seed=seed, window_frames=args.window_frames
                           or "auto", stride_frames=args.stride_frames, **kw)
    if args.op == "loop" and source is None:
        return pipe(seconds=args.seconds, loop=True, seed=seed, return_mel=True,
                    window_frames=args.window_frames or "auto", stride_frames=args.stride_frames,
                    **{k: v for k, v in kw.items() if k in ("steps", "sampler", "labels", "guidance_scale",
                                                            "guidance_interval", "precision", "progress")})
    if args.op == "loop":
        return pipe.make_loop(source, seam_seconds=args.seam_seconds, seed=seed, window_frames=args.window_frames
                              or "auto", stride_frames=args.stride_frames, **kw)
    if args.op == "encode":
        kw.pop("sampler")
        return pipe.encode(source, refine=args.refine, **kw)
    if args.op == "decode":
        from safetensors.torch import load_file, safe_open

        with safe_open(str(source), "pt") as f:
            meta = json.loads(f.metadata()["audiodiff"])
        enc = EncodeOutput(noise=load_file(str(source))["noise"], roundtrip_error=[meta["roundtrip_error"]],
                           steps=meta["steps"], labels=meta["labels"], guidance_scale=meta["guidance_scale"],
                           guidance_interval=meta["guidance_interval"], refine=meta["refine"])
        if args.eps_scaling is None:  # decode with the lambda the noise was encoded with (older files: the model's)
            pipe.eps_scaling = meta.get("eps_scaling", plan["eps_scaling"])
        return pipe.decode(enc, seed=seed, precision=args.precision, progress=not args.quiet)
    raise AssertionError(args.op)


def regenerate_command(args: argparse.Namespace, parser: argparse.ArgumentParser, model: Path, inputs: list[str],
                       seed: int, label) -> str:
    """The command that makes this one edit again (into OUT, as edit_0000): every flag that differs from
    its default, with this edit's inputs, seed and label."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.op]
    parts = ["python", "-m", "audiodiff.edit", args.op, *inputs, "--out", "OUT", "--model", str(model),
             "--seed", str(seed)]
    if label is not None:
        parts += ["--label", str(label)]
    for action in sub._actions:
        dest = action.dest
        if not action.option_strings or dest in ("help", "out", "model", "seed", "label", "overwrite", "quiet"):
            continue
        value = getattr(args, dest)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            parts.append(flag)
        else:  # a value starting with "-" (a time from the end) must be glued to its flag
            parts += [f"{flag}={v}" if str(v).startswith("-") else f"{flag}\0{v}"
                      for v in (value if isinstance(value, list) else [value])]
    return shlex.join(p for part in parts for p in part.split("\0"))


# --------------------------------------------------------------------------- writing

def _write_edit(folder: Path, pipe, args, index: int, out, source_audio, spans) -> dict:
    """edit_NNNN (+ source_NNNN when there is a source) with their PNGs; the record's file fields."""
    name, norm = f"edit_{index:04d}", pipe.audio_config
    fields = {"file": f"{name}.{args.format}", "spectrogram": f"{name}.png"}
    save_audio(folder / fields["file"], out.audio[0], out.sample_rate)
    save_mel_png(folder / fields["spectrogram"], out.mel[0].numpy(), norm, shade=spans)
    if source_audio is not None:
        src = pipe.load_source(source_audio)
        fields.update(source_file=f"source_{index:04d}.{args.format}", source_spectrogram=f"source_{index:04d}.png")
        save_audio(folder / fields["source_file"], src.audio[0], pipe.audio_config.sample_rate)
        save_mel_png(folder / fields["source_spectrogram"], src.mel[0].numpy(), norm,
                     shade=spans if args.op == "inpaint" else None)
    fields["duration"] = out.audio.shape[-1] / out.sample_rate
    return fields


def _save_noise(folder: Path, index: int, enc, model: Path, eps_scaling: float) -> dict:
    from safetensors.torch import save_file

    name = f"noise_{index:04d}.safetensors"
    meta = {"steps": enc.steps, "labels": enc.labels, "guidance_scale": enc.guidance_scale,
            "guidance_interval": enc.guidance_interval, "refine": enc.refine,
            "roundtrip_error": enc.roundtrip_error[0], "model": str(model), "eps_scaling": eps_scaling}
    save_file({"noise": enc.noise[:1].contiguous()}, str(folder / name), metadata={"audiodiff": json.dumps(meta)})
    return {"file": name, "metrics": {"roundtrip_rel_error": enc.roundtrip_error[0]},
            "nfe": enc.steps * (2 + enc.refine)}


def write_index(path: Path, records: list[dict], header: dict) -> None:
    esc = html.escape

    def cell(file, png):
        if not file:
            return "<td>-</td>"
        player = ("" if file.endswith(".safetensors")
                  else f'<audio controls preload="metadata" src="{esc(file)}"></audio>')
        image = f'<br><img src="{esc(png)}" alt="mel spectrogram of {esc(file)}">' if png else ""
        return f"<td>{player}<br><code>{esc(file)}</code>{image}</td>"

    rows = [f"<tr><td>{r['index']}</td><td>{esc(r['op'])}</td>{cell(r.get('source_file'), r.get('source_spectrogram'))}"
            f"{cell(r['file'], r.get('spectrogram'))}<td><code>{esc(json.dumps(r.get('metrics', {})))}</code></td></tr>"
            for r in records]
    html_page(path, "audiodiff edits", header, ["#", "op", "before", "after", "metrics"], rows,
              f'Every edit\'s settings are in <a href="{RECORDS}">{RECORDS}</a>; its <code>command</code> makes it '
              "again.", note="<p>The regenerated region is shaded in each spectrogram.</p>")


def _run(folder: Path, pipe, args: argparse.Namespace, plan: dict, parser) -> tuple[list, list]:
    records: list[dict] = []
    skipped = list(plan["skipped"])
    labels, model = plan["labels"], plan["model"]
    sources = ([tuple(plan["files"])] if args.op == "interpolate" else [(f,) for f in plan["files"]]) or [()]
    for i, group in enumerate(sources):
        seed, label = args.seed + i, None if labels is None else labels[i % len(labels)]
        try:
            if args.op == "interpolate":
                out = pipe.interpolate(*group, alphas=plan["alphas"], steps=args.steps, refine=args.refine,
                                       labels=label, precision=args.precision, progress=not args.quiet)
            else:
                out = run_one(pipe, args, plan, group[0] if group else None, seed, label)
        except (ValueError, OSError) as e:  # an unreadable or unsuitable file: skipped, the rest go on
            skipped.append((" ".join(map(str, group)), one_line(e)))
            continue
        base = {"index": len(records), "op": args.op, "sources": [str(p.resolve()) for p in group],
                "sources_sha256": [file_sha256(p) for p in group], "seed": seed, "label": label,
                "model": str(model.resolve()), "audiodiff_version": __version__,
                "command": regenerate_command(args, parser, model.resolve(), [str(p.resolve()) for p in group],
                                              seed, label)}
        if args.op == "encode":
            records.append({**base, **_save_noise(folder, len(records), out, model, pipe.eps_scaling)})
            continue
        edit = dict(getattr(out, "edit", {}) or {})
        spans = [tuple(s) for s in edit.get("regions_frames", [])]
        for j in range(out.audio.shape[0]):
            one = type(out)(audio=out.audio[j:j + 1], sample_rate=out.sample_rate, seeds=out.seeds,
                            mel=out.mel[j:j + 1])
            source = group[0] if group and args.op not in ("decode", "interpolate") else None
            record = {**base, **_write_edit(folder, pipe, args, len(records), one, source, spans),
                      "regions_seconds": edit.get("regions_seconds"), "regions_frames": spans or None,
                      "nfe": edit.get("nfe"), "metrics": edit.get("metrics", {})}
            if args.op == "interpolate":
                record["alpha"] = plan["alphas"][j]
            records.append(record)
    return records, skipped


def edit(args: argparse.Namespace, parser) -> str:
    """Validate, load, edit, write; returns the summary line. Raises UsageError."""
    start = time.perf_counter()
    plan = _validate(args)
    try:
        pipe = AudioDiffusionPipeline.from_pretrained(plan["model"], device=plan["device"], vocoder=args.vocoder)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(one_line(e)) from None
    if args.eps_scaling is not None:
        pipe.eps_scaling = args.eps_scaling
    plan["eps_scaling"] = pipe.eps_scaling
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        records, skipped = _run(tmp, pipe, args, plan, parser)
        if not records:
            raise UsageError(f"nothing was edited: {len(skipped)} input(s) skipped, the first: "
                             f"{skipped[0][0]}: {skipped[0][1]}" if skipped else "nothing was edited")
        with open(tmp / RECORDS, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        if skipped:
            (tmp / "skipped.tsv").write_text("".join(f"{p}\t{r}\n" for p, r in skipped))
        header = {"operation": args.op, "model": str(plan["model"].resolve()), "device": str(plan["device"]),
                  "audiodiff": __version__, "command": shlex.join(["python", "-m", "audiodiff.edit", *args.argv])}
        write_index(tmp / "index.html", records, header)
        replace_dir(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    note = f"; {len(skipped)} skipped (see {args.out / 'skipped.tsv'})" if skipped else ""
    return f"wrote {len(records)} {args.op} output(s) to {args.out} in {time.perf_counter() - start:.1f} s{note}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def body() -> None:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        print(edit(args, parser))
    return run_face("audiodiff.edit", body, "--out was not written")


if __name__ == "__main__":
    sys.exit(main())
