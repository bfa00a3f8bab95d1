"""Train the evaluation classifier (audiodiff.nets.classifier.MelClassifier) on a prepared split.

    from audiodiff.train_classifier import train_classifier
    result = train_classifier("dump/digits/train", "exp/classifier", valid_dir="dump/digits/valid",
                              test_dir="dump/digits/test")
    result["test_accuracy"]

Also `python -m audiodiff.train task=classifier` (its kwargs come from the config). One function,
top to bottom: batch -> augment -> loss -> backward -> clip -> step -> (evaluate on valid) ->
the best-on-valid weights go to run_dir/classifier.pt, written atomically and loadable with
torch.load(weights_only=True) (audiodiff.evaluate.load_classifier). The file holds the state
dict, the constructor kwargs, the audio config, the segment length, the train label counts, the
accuracies and the folders it was trained on (evaluate uses them as defaults).

Augmentation (on the batch, on the device): a random gain (a constant shift of the log-mel), a
random time shift, SpecAugment frequency and time masks (Park et al. 2019) and, optionally,
mixup (Zhang et al. 2018).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from .audio import AudioConfig
from .checkpoint import atomic_torch_save
from .data import MelDataset, batches, make_loader
from .clipsets import read_prepared_split
from .metrics import accuracy, classify
from .nets.classifier import CLASSIFIER_FORMAT, CLASSIFIER_FORMAT_VERSION, MelClassifier
from .optim import warmup_cosine
from .runtime import pick_device

log = logging.getLogger("audiodiff")


def augment_batch(mel: torch.Tensor, silence: float, gain: float, shift: int, freq_masks: int, freq_width: int,
                  time_masks: int, time_width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random gain, time shift and SpecAugment masks on normalised log-mels [B, n_mels, F].

    gain: the largest log-mel offset (normalised units), applied per clip, never below silence.
    shift: the largest time shift in frames (the gap is silence). Masks are filled with the
    clip's mean, as SpecAugment (Park et al. 2019, sec. 2) does after normalisation.
    """
    b, n_mels, frames = mel.shape
    dev = mel.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    def randint(high, *shape):
        return torch.randint(0, high, shape, generator=generator).to(dev)

    if gain > 0:
        offset = (rand(b, 1, 1) * 2 - 1) * gain
        mel = torch.where(mel > silence, (mel + offset).clamp_min(silence), mel)
    if shift > 0:
        s = randint(2 * shift + 1, b, 1) - shift  # [B, 1]
        src = torch.arange(frames, device=dev).unsqueeze(0) - s  # [B, F]
        valid = (src >= 0) & (src < frames)
        mel = torch.gather(mel, 2, src.clamp(0, frames - 1).unsqueeze(1).expand(b, n_mels, frames))
        mel = torch.where(valid.unsqueeze(1), mel, torch.full_like(mel, silence))
    fill = mel.mean(dim=(1, 2), keepdim=True)  # [B, 1, 1]
    for count, width, axis, size in ((freq_masks, freq_width, 1, n_mels), (time_masks, time_width, 2, frames)):
        pos = torch.arange(size, device=dev).unsqueeze(0)  # [1, size]
        for _ in range(count):
            w = randint(width + 1, b, 1)  # [B, 1]
            start = (rand(b, 1) * (size - w + 1).float()).long()
            hit = (pos >= start) & (pos < start + w)  # [B, size]
            mask = hit.unsqueeze(2) if axis == 1 else hit.unsqueeze(1)
            mel = torch.where(mask, fill, mel)
    return mel


@torch.no_grad()
def split_accuracy(net, clips, frames: int, silence: float, device, batch_size: int = 256) -> float | None:
    """Accuracy on a ClipSet (audiodiff.evaluate), each clip fitted to `frames`; None when no clip has a label."""
    probs, _ = classify(net, clips.mels, frames, silence, batch_size=batch_size, device=device)
    return accuracy(probs, clips.labels)


def _read_splits(prepared_dir, valid_dir, test_dir, config):
    """(valid or None, test or None, train) ClipSets scored during and after training."""
    valid = read_prepared_split(valid_dir, "valid", config) if valid_dir is not None else None
    if valid is not None and (valid.labels < 0).all():
        raise ValueError(f"{valid_dir}: no clip has a label, so validation cannot pick the best weights; "
                         "label the valid split or drop valid_dir")
    test = read_prepared_split(test_dir, "test", config) if test_dir is not None else None
    return valid, test, read_prepared_split(prepared_dir, "train", config)


def train_classifier(prepared_dir, run_dir, valid_dir=None, test_dir=None, num_classes: int | None = None,
                     segment_frames: int = 87, steps: int = 2000, batch_size: int = 32, lr: float = 3e-3,
                     weight_decay: float = 0.05, warmup_steps: int = 100, grad_clip: float = 5.0,
                     width: int = 32, blocks=(1, 1, 1, 1), cardinality: int = 8, dropout: float = 0.2,
                     augment: bool = True, gain_db: float = 6.0, time_shift: int = 8, freq_masks: int = 2,
                     freq_mask_width: int = 8, time_masks: int = 2, time_mask_width: int = 10,
                     mixup: float = 0.0, label_smoothing: float = 0.0, eval_every: int = 250, log_every: int = 50,
                     seed: int = 0, device="auto", num_workers: int = 0) -> dict:
    """Train a MelClassifier on prepared_dir's labelled clips; write run_dir/classifier.pt; return accuracies.

    AdamW with linear warmup then cosine decay to 0 over `steps`. With valid_dir, the weights with
    the best valid accuracy (seen every `eval_every` steps and at the end) are kept; without, the
    last ones. Returns {"train_accuracy", "valid_accuracy", "test_accuracy" (None when no folder),
    "best_step", "steps", "seconds", "path", "num_parameters"}.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be >= 1")
    started = time.time()
    device = pick_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    run_dir = Path(run_dir)
    train_ds = MelDataset(prepared_dir, segment_frames, random_crop=True, seed=seed)
    config: AudioConfig = train_ds.audio_config
    labels = np.array(train_ds.labels)
    if (labels < 0).any():
        raise ValueError(f"{prepared_dir}: {int((labels < 0).sum())} clip(s) have no label; the classifier needs "
                         "a label on every clip (a \"label\" key in the manifest given to audiodiff.prepare)")
    num_classes = int(num_classes or train_ds.num_classes)
    if labels.max() >= num_classes:
        raise ValueError(f"{prepared_dir}: label {labels.max()} does not fit num_classes={num_classes}")
    silence = config.silence
    # one dB in normalised log-mel units: ln(10) / 20 nats, times the normalisation's scale
    scale = 2.0 / (config.log_max - math.log(config.log_floor)) if config.normalization == "minmax" else 1.0
    gain = gain_db * math.log(10) / 20 * scale

    valid, test, train_eval = _read_splits(prepared_dir, valid_dir, test_dir, config)

    kwargs: dict = {"n_mels": config.n_mels, "num_classes": num_classes, "width": int(width), "blocks": list(blocks),
                    "cardinality": int(cardinality), "dropout": float(dropout)}
    net = MelClassifier(**kwargs).to(device)
    n_params = sum(p.numel() for p in net.parameters())
    decay = [p for p in net.parameters() if p.dim() > 1]
    no_decay = [p for p in net.parameters() if p.dim() <= 1]  # BN and biases: no weight decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warmup_steps, steps))
    loader = make_loader(train_ds, batch_size=min(batch_size, len(train_ds)), shuffle=True, seed=seed,
                         num_workers=num_workers, drop_last=True)
    log.info("classifier: %s clips, %d classes, %s parameters, %d steps of %d on %s", len(train_ds), num_classes,
             f"{n_params:,}", steps, loader.batch_size, device)

    best: dict = {"accuracy": -1.0, "step": 0, "state": None}

    def evaluate_valid(step: int) -> float | None:
        if valid is None:
            return None
        # never None: _read_splits refuses a valid split without labels
        acc = cast(float, split_accuracy(net, valid, segment_frames, silence, device))
        if acc >= best["accuracy"]:  # ties: the later (more trained) weights
            best.update(accuracy=acc, step=step,
                        state={k: v.detach().clone().cpu() for k, v in net.state_dict().items()})
        net.train()
        return acc

    net.train()
    running, seen = 0.0, 0
    for step, (_, batch) in enumerate(batches(loader), start=1):
        mel = batch["mel"].to(device)  # [B, n_mels, F]
        target = batch["label"].to(device)
        if augment:
            mel = augment_batch(mel, silence, gain, time_shift, freq_masks, freq_mask_width, time_masks,
                                time_mask_width, gen)
        if mixup > 0:  # mixup (Zhang et al. 2018): convex pairs of inputs and of their targets
            lam = float(np.random.default_rng(seed * 100003 + step).beta(mixup, mixup))
            perm = torch.randperm(mel.shape[0], generator=gen).to(device)
            logits = net(lam * mel + (1 - lam) * mel[perm])
            loss = lam * F.cross_entropy(logits, target, label_smoothing=label_smoothing) + \
                (1 - lam) * F.cross_entropy(logits, target[perm], label_smoothing=label_smoothing)
        else:
            loss = F.cross_entropy(net(mel), target, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        sched.step()
        running, seen = running + loss.item(), seen + 1
        if step % log_every == 0 or step == steps:
            log.info("classifier step %d/%d loss %.4f lr %.2e (%.0f s)", step, steps, running / seen,
                     sched.get_last_lr()[0], time.time() - started)
            running, seen = 0.0, 0
        if step % eval_every == 0 or step == steps:
            acc = evaluate_valid(step)
            if acc is not None:
                log.info("classifier step %d valid accuracy %.2f%% (best %.2f%% at step %d)", step, 100 * acc,
                         100 * best["accuracy"], best["step"])
        if step >= steps:
            break

    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    result: dict = {
        "train_accuracy": split_accuracy(net, train_eval, segment_frames, silence, device),
        "valid_accuracy": best["accuracy"] if valid is not None else None,
        "test_accuracy": split_accuracy(net, test, segment_frames, silence, device) if test is not None else None,
        "best_step": best["step"] if valid is not None else steps,
        "steps": steps,
        "num_parameters": n_params,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "classifier.pt"
    resolve = lambda d: str(Path(d).resolve()) if d is not None else None
    atomic_torch_save({
        "format": CLASSIFIER_FORMAT, "format_version": CLASSIFIER_FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "kwargs": kwargs, "audio_config": config.to_dict(), "segment_frames": int(segment_frames),
        "train_label_counts": np.bincount(labels, minlength=num_classes).tolist(),
        "accuracy": {k: result[k] for k in ("train_accuracy", "valid_accuracy", "test_accuracy")},
        "train_dir": resolve(prepared_dir), "valid_dir": resolve(valid_dir), "test_dir": resolve(test_dir),
        "best_step": int(result["best_step"]), "seed": int(seed),
    }, path)
    result["seconds"] = time.time() - started
    result["path"] = str(path)
    fmt = lambda v: "-" if v is None else f"{100 * v:.2f}%"
    log.info("classifier: train %s, valid %s, test %s (best step %d, %.0f s) -> %s", fmt(result["train_accuracy"]),
             fmt(result["valid_accuracy"]), fmt(result["test_accuracy"]), result["best_step"], result["seconds"], path)
    return result
