"""TensorBoard logging of the diffusion training loop (audiodiff.train_diffusion): the writer, the
scalars each log step, and preview clips of the EMA weights every train.sample_every steps."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .config import model_config, to_plain
from .pages import mel_figure
from .pipeline import AudioDiffusionPipeline


def tensorboard_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tb"))


def log_scalars(writer, bar, step: int, loss: float, lr: float, grad_norm: float, skipped: int, rate: float) -> None:
    for name, value in (("loss", loss), ("lr", lr), ("grad_norm", grad_norm), ("samples_per_s", rate),
                        ("skipped_steps", skipped)):
        writer.add_scalar(f"train/{name}", value, step)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", sps=f"{rate:.0f}")


@torch.no_grad()
def log_samples(writer, ema: nn.Module, schedule, audio, cfg, step: int) -> None:
    """train.sample_num clips from the EMA weights (DPM-Solver++, train.sample_steps steps,
    Griffin-Lim) to TensorBoard as audio and as one mel image. Draws from its own generators
    in a forked RNG, so training (and its resume exactness) is unaffected."""
    n = int(cfg.train.get("sample_num", 4))
    classes = int(cfg.data.num_classes)
    labels = [i % classes for i in range(n)] if classes else None
    was_training = ema.training
    device = next(ema.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        pipe = AudioDiffusionPipeline(ema, schedule, audio, prediction=cfg.diffusion.prediction,
                                      num_classes=classes, vocoder="griffinlim",
                                      config=model_config(to_plain(cfg)))
        out = pipe(batch_size=n, steps=int(cfg.train.sample_steps), sampler="dpmpp", seed=0, labels=labels,
                   progress=False, return_mel=True)
    ema.train(was_training)
    for i in range(n):
        tag = f"samples/{i}" + (f"_label{labels[i]}" if labels else "")
        writer.add_audio(tag, out.audio[i:i + 1], step, sample_rate=audio.sample_rate)
    # the mels side by side, with time, frequency and level axes
    assert out.mel is not None  # return_mel=True
    writer.add_figure("samples/mel", mel_figure(torch.cat(list(out.mel), dim=-1).numpy(), audio,
                                                title=f"step {step}: {n} samples side by side"), step)
    writer.flush()
