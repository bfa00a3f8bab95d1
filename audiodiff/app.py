"""python -m audiodiff.app: generate and edit in a browser (a local Gradio app; pip install -e ".[app]").

    python -m audiodiff.app                                  # the newest trained run, else the bundled model
    python -m audiodiff.app --model egs/digits/exp/digits_cpu --port 7860

Bound to 127.0.0.1 unless --host says otherwise; no analytics, nothing fetched from the network. The
generate tab samples clips with every sampling setting and offers them as a zip with their
clips.jsonl (the settings that regenerate each); the edit tab varies, inpaints a time range, extends
or loops an uploaded clip and shows it before and after, the regenerated region shaded. One request
runs at a time; others wait in the queue. A mistake (a file that is not audio, one too long, an
empty region, a strength out of range) is a message in the page, never a stack trace.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .audio import AudioFileError, audio_info, save_audio
from .cli import OneLineParser, UsageError, one_line, run_face
from .generate import SAMPLER_CHOICES, regenerate_command, resolve_model
from .pages import save_mel_png
from .pipeline import AudioDiffusionPipeline
from .version import __version__

MAX_UPLOAD_SECONDS = 60.0
MAX_CLIPS = 16
OPS = ("vary", "inpaint", "extend", "loop")


class AppError(ValueError):
    """A user's mistake in the page: shown there as one message."""


class Studio:
    """What the app does, without the page: every method takes plain values and returns file paths,
    so it is tested directly and the page only wires widgets to it."""

    def __init__(self, pipe: AudioDiffusionPipeline, model: Path, workdir: Path,
                 max_seconds: float = MAX_UPLOAD_SECONDS) -> None:
        self.pipe, self.model, self.workdir, self.max_seconds = pipe, model, Path(workdir), max_seconds
        self.count = 0
        self.generated: list[str] = []  # every clip generated so far: the edit tab can pick one

    def _folder(self, kind: str) -> Path:
        self.count += 1
        folder = self.workdir / f"{kind}_{self.count:04d}"
        folder.mkdir(parents=True)
        return folder

    def generate(self, label, sampler: str, steps: int, guidance: float, interval_low: float, interval_high: float,
                 seed: int, seconds: float, vocoder: str, batch: int) -> dict:
        """Sample `batch` clips; {"audio": [wav paths], "images": [png paths], "zip": path, "message"}."""
        pipe = self.pipe
        labels = None if label in (None, "", "none") or not pipe.num_classes else [int(label)] * int(batch)
        if not 1 <= int(batch) <= MAX_CLIPS:
            raise AppError(f"batch {batch} must be from 1 to {MAX_CLIPS}")
        interval = None if float(interval_high) <= float(interval_low) else (float(interval_low), float(interval_high))
        try:
            pipe.set_vocoder(vocoder)
            out = pipe(batch_size=int(batch), steps=int(steps), sampler=sampler, seed=int(seed), labels=labels,
                       guidance_scale=float(guidance), seconds=float(seconds) if seconds else None,
                       guidance_interval=interval if labels is not None and float(guidance) != 1.0 else None,
                       return_mel=True, progress=True)
        except (ValueError, ImportError) as e:
            raise AppError(one_line(e)) from None
        folder = self._folder("generate")
        assert out.mel is not None  # return_mel=True
        records: list[dict[str, Any]] = []
        for i in range(out.audio.shape[0]):
            wav, png = folder / f"clip_{i:04d}.wav", folder / f"clip_{i:04d}.png"
            save_audio(wav, out.audio[i], out.sample_rate)
            save_mel_png(png, out.mel[i].numpy(), pipe.audio_config, title=f"seed {out.seeds[i]}")
            record = {"index": i, "file": wav.name, "spectrogram": png.name, "seed": out.seeds[i],
                      "label": None if labels is None else labels[i], "sampler": sampler, "steps": int(steps),
                      "guidance": float(guidance), "guidance_interval": None if interval is None else list(interval),
                      "seconds": float(seconds) if seconds else None, "eta": 0.0, "vocoder": vocoder,
                      "duration": out.audio.shape[-1] / out.sample_rate, "audiodiff_version": __version__}
            record["command"] = regenerate_command(self.model, record, "cpu")
            records.append(record)
        (folder / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        self.generated += [str(folder / r["file"]) for r in records]
        archive = folder / "clips.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for r in records:
                z.write(folder / r["file"], r["file"])
            z.write(folder / "clips.jsonl", "clips.jsonl")
        return {"audio": [str(folder / r["file"]) for r in records],
                "images": [str(folder / r["spectrogram"]) for r in records], "zip": str(archive),
                "message": f"request {self.count}: {len(records)} clip(s), seeds {out.seeds[0]}..{out.seeds[-1]}, "
                           f"{out.edit.get('nfe', steps)} network evaluations each"}

    def check_upload(self, path) -> Path:
        if not path:
            raise AppError("upload a clip first (wav, flac or ogg)")
        path = Path(path)
        try:
            info = audio_info(path)
        except (AudioFileError, OSError, ValueError) as e:
            raise AppError(f"{path.name} is not audio this app can read ({one_line(e)})") from None
        seconds = info.frames / info.samplerate if info.samplerate else 0
        if seconds <= 0:
            raise AppError(f"{path.name} holds no samples")
        if seconds > self.max_seconds:
            raise AppError(f"{path.name} is {seconds:.1f} s long; this app edits clips up to {self.max_seconds:g} s "
                           "(use python -m audiodiff.edit for longer ones)")
        return path

    def edit(self, path, op: str, strength: float, start: float, end: float, seconds: float,
             seam_seconds: float, label, steps: int, seed: int) -> dict:
        """One edit of an uploaded clip; {"before", "after", "before_image", "after_image", "message"}."""
        source = self.check_upload(path)
        if op not in OPS:
            raise AppError(f"operation {op!r} is not one of {', '.join(OPS)}")
        labels = None if label in (None, "", "none") or not self.pipe.num_classes else int(label)
        common: dict[str, Any] = {"seed": int(seed), "labels": labels, "progress": True}
        try:
            if op == "vary":
                if not 0.0 <= float(strength) <= 1.0:
                    raise AppError(f"strength {strength} must be from 0 (the clip) to 1 (fresh noise)")
                out = self.pipe.vary(str(source), strength=float(strength), steps=int(steps), **common)
            elif op == "inpaint":
                if float(end) <= float(start):
                    raise AppError(f"the region {start:g} s to {end:g} s is empty: the end must be after the start")
                out = self.pipe.inpaint(str(source), regions=[(float(start), float(end))], steps=int(steps),
                                        resample=3, **common)
            elif op == "extend":
                out = self.pipe.extend(str(source), seconds=float(seconds), steps=int(steps), resample=3, **common)
            else:
                out = self.pipe.make_loop(str(source), seam_seconds=float(seam_seconds), steps=int(steps),
                                          resample=3, **common)
        except AppError:
            raise
        except (ValueError, AudioFileError) as e:
            raise AppError(one_line(e)) from None
        folder = self._folder("edit")
        src = self.pipe.load_source(str(source))
        assert src.audio is not None and out.mel is not None  # a file has audio; edits return their mel
        spans = [tuple(s) for s in out.edit.get("regions_frames", [])]
        files = {"before": folder / "before.wav", "after": folder / "after.wav",
                 "before_image": folder / "before.png", "after_image": folder / "after.png"}
        save_audio(files["before"], src.audio[0], self.pipe.sample_rate)
        save_audio(files["after"], out.audio[0], out.sample_rate)
        save_mel_png(files["before_image"], src.mel[0].numpy(), self.pipe.audio_config,
                     shade=spans if op == "inpaint" else None, title="before")
        save_mel_png(files["after_image"], out.mel[0].numpy(), self.pipe.audio_config, shade=spans, title="after")
        metrics = ", ".join(f"{k} {v:.3g}" for k, v in (out.edit.get("metrics") or {}).items()
                            if isinstance(v, (int, float)))
        return {**{k: str(v) for k, v in files.items()}, "message": f"{op}: {metrics}"}


def build_app(studio: Studio):
    """The Gradio page over a Studio: a generate tab and an edit tab; one request at a time."""
    import gradio as gr

    pipe = studio.pipe
    labels = ["none"] + [str(i) for i in range(pipe.num_classes)]

    def guarded(fn):
        def call(*args):
            try:
                return fn(*args)
            except AppError as e:
                raise gr.Error(str(e)) from None
        return call

    def run_generate(label, sampler, steps, guidance, lo, hi, seed, seconds, vocoder, batch,
                     progress=gr.Progress(track_tqdm=True)):
        r = studio.generate(label, sampler, steps, guidance, lo, hi, seed, seconds, vocoder, batch)
        picks = gr.update(choices=[(Path(p).parent.name + "/" + Path(p).name, p) for p in studio.generated])
        return r["audio"][0], r["images"][0], r["images"], r["zip"], r["message"], picks

    def run_edit(path, picked, op, strength, start, end, seconds, seam, label, steps, seed,
                 progress=gr.Progress(track_tqdm=True)):
        r = studio.edit(path or picked, op, strength, start, end, seconds, seam, label, steps, seed)
        return r["before"], r["after"], r["before_image"], r["after_image"], r["message"]

    # delete_cache: Gradio's copies of served files older than an hour go, checked every hour
    with gr.Blocks(title="audiodiff", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# audiodiff\nModel: `{studio.model}` ({pipe.num_classes or 'no'} classes, "
                    f"{pipe.sample_rate} Hz). Clips and edits stay on this machine.")
        with gr.Tab("Generate"):
            with gr.Row():
                label = gr.Dropdown(labels, value=labels[1] if pipe.num_classes else "none", label="label")
                sampler = gr.Dropdown(list(SAMPLER_CHOICES), value="dpmpp", label="sampler")
                steps = gr.Slider(1, 200, value=10, step=1, label="steps")
                guidance = gr.Number(value=3.0 if pipe.num_classes else 1.0, label="guidance")
            with gr.Row():
                lo = gr.Number(value=2.0, label="guide for sigma above")
                hi = gr.Number(value=1e9, label="and up to")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                seconds = gr.Number(value=0, label="seconds (0: the training segment)")
                vocoder = gr.Dropdown(["griffinlim", "hifigan"], value="griffinlim", label="vocoder")
                batch = gr.Slider(1, MAX_CLIPS, value=1, step=1, label="clips")
            go = gr.Button("Generate", variant="primary", elem_id="generate")
            status = gr.Markdown(elem_id="generate-status")
            first = gr.Audio(label="first clip", type="filepath", elem_id="generated-audio")
            image = gr.Image(label="its spectrogram", type="filepath")
            gallery = gr.Gallery(label="all spectrograms", columns=4, height=260)
            archive = gr.File(label="the clips with their clips.jsonl")
        with gr.Tab("Edit"):
            upload = gr.Audio(label="a clip", type="filepath", sources=["upload"])
            picked = gr.Dropdown([], value=None, label="or pick a clip generated in the other tab")
            with gr.Row():
                op = gr.Radio(list(OPS), value="vary", label="operation")
                strength = gr.Slider(0.0, 1.0, value=0.5, label="strength (vary)")
                start = gr.Number(value=0.3, label="region start, s (inpaint)")
                end = gr.Number(value=0.6, label="region end, s (inpaint)")
                more = gr.Number(value=2.0, label="seconds to add (extend)")
                seam = gr.Number(value=0.2, label="seam seconds (loop)")
            with gr.Row():
                edit_label = gr.Dropdown(labels, value="none", label="label")
                edit_steps = gr.Slider(1, 200, value=25, step=1, label="steps")
                edit_seed = gr.Number(value=0, precision=0, label="seed")
            edit_go = gr.Button("Edit", variant="primary", elem_id="edit")
            edit_status = gr.Markdown()
            with gr.Row():
                before, after = gr.Audio(label="before", type="filepath"), gr.Audio(label="after", type="filepath")
            with gr.Row():
                before_image, after_image = gr.Image(type="filepath"), gr.Image(type="filepath")
            edit_go.click(guarded(run_edit), [upload, picked, op, strength, start, end, more, seam, edit_label,
                                              edit_steps, edit_seed],
                          [before, after, before_image, after_image, edit_status], api_name="edit")
        go.click(guarded(run_generate), [label, sampler, steps, guidance, lo, hi, seed, seconds, vocoder, batch],
                 [first, image, gallery, archive, status, picked], api_name="generate")
    app.queue(default_concurrency_limit=1)  # one model run at a time; the rest wait in order
    return app


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    p = OneLineParser(prog="python -m audiodiff.app", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="a run or model directory, or a bundled model's name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-seconds", type=float, default=MAX_UPLOAD_SECONDS, help="longest clip the edit tab takes")
    p.add_argument("--device", default="auto")
    workdir = Path(tempfile.mkdtemp(prefix="audiodiff-app-"))

    def body() -> None:
        args = p.parse_args(argv)
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port {args.port} must be from 1 to 65535")
        try:
            import gradio  # noqa: F401
        except ImportError:
            raise UsageError('the app needs Gradio: pip install -e ".[app]"') from None
        model = resolve_model(args.model, "audiodiff.app")
        try:
            pipe = AudioDiffusionPipeline.from_pretrained(model, device=args.device)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(one_line(e)) from None
        app = build_app(Studio(pipe, model, workdir, args.max_seconds))
        print(f"audiodiff.app: serving {model} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
        app.launch(server_name=args.host, server_port=args.port, share=False, allowed_paths=[str(workdir)],
                   footer_links=[], quiet=True)
    try:
        return run_face("audiodiff.app", body)  # an OSError: the port is taken, for one
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
