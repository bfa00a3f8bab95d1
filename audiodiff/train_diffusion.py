"""The diffusion training loop: one function, top to bottom (EDM's training_loop, nanoGPT's train.py).

    from audiodiff.config import compose_config
    from audiodiff.train_diffusion import train_diffusion
    train_diffusion(compose_config(["+experiment=digits_smoke", "data.dir=dump/train", "run_dir=exp/smoke"]))

`python -m audiodiff.train` is its face (Hydra, flags, task dispatch). Each step: draw noise,
timesteps and label dropout for the global batch -> accumulate gradients -> clip -> update
weights -> EMA -> log -> checkpoint -> preview clips. Set-up lives in the named helpers below.

Noise, timesteps and label dropout are drawn for the whole global batch from one checkpointed
generator, identically on every rank, and each rank and micro-batch takes its rows: DDP over N
processes and gradient accumulation give the update of one process with the same global batch,
and a stopped and resumed run ends bit for bit where an unstopped one does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from .checkpoint import CheckpointError, resume_state, save_checkpoint
from .cli import UsageError, one_line
from .config import build, instantiate, to_plain
from .data import MelDataset, batches, bin_statistics, make_loader
from .diffusion import objectives
from .diffusion.scaling import DataScaler
from .hub import ModelLoadError, load_weights, match_weights, read_model_config
from .manifest import check_prepared_audio
from .optim import ema_copy, ema_update, optimizer_kwargs, warmup_cosine
from .runtime import (StopFlag, all_agree, check_shared_paths, init_distributed, pick_device, rng_state,
                      set_rng_state)
from .train_logging import log_samples, log_scalars, tensorboard_writer

log = logging.getLogger("audiodiff")


def train_diffusion(cfg) -> dict:
    """Train cfg's net on cfg.data.dir in cfg.run_dir (resuming from its newest good checkpoint).
    Returns a summary dict: final step, last loss, stop reason, run_dir, (step, loss) history."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    # Initialize: ranks, device, seed, the net and its schedule.
    world, rank = init_distributed(cfg.device, cfg.train.dist_timeout_s)
    main = rank == 0
    device = _device(cfg.device)
    t = cfg.train
    if t.batch_size % (world * t.grad_accum):
        raise UsageError(f"train.batch_size={t.batch_size} must be divisible by ranks x grad_accum "
                         f"({world} x {t.grad_accum})")
    micro = t.batch_size // (world * t.grad_accum)  # per rank, per micro-step
    perturb = float(cfg.diffusion.get("input_perturbation") or 0.0)  # DDPM-IP's gamma (objectives.diffusion_loss)
    if not 0.0 <= perturb <= 1.0:
        raise UsageError(f"diffusion.input_perturbation={perturb:g} must be from 0 (off) to 1 (0.1 is usual)")
    check_shared_paths(world, rank, Path(cfg.run_dir), {"data.dir": Path(cfg.data.dir) / "manifest.jsonl"})
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    audio, net, schedule = build(cfg)
    schedule = schedule.to(device)

    # Load data: one permutation per epoch shared by all ranks (see audiodiff.data).
    dataset = open_dataset(cfg, audio)
    loader = make_loader(dataset, micro, shuffle=True, seed=cfg.seed, num_workers=t.num_workers,
                         distributed=world > 1, rank=rank, world_size=world, pin_memory=device.type == "cuda")

    # Construct EMA, optimizer, LR schedule; resume (the same checkpoint on every rank).
    net, ema, optimizer, scheduler = _model_and_optimizer(cfg, net, device)
    autocast = _autocast(t.precision, device)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)  # noise, timesteps, label dropout
    step, position, skipped, state = _resume(ckpt_dir, world, main, net, ema, optimizer, scheduler, gen)
    # per-bin statistics: a resumed run keeps its own, a fine-tuned one (train.init_from) its source's
    saved = ((state or {}).get("config") or {}).get("diffusion") or {}
    saved = init_weights(cfg, net, ema) if state is None and t.get("init_from") else saved
    if state is None and main:
        run_dir.mkdir(parents=True, exist_ok=True)
    scaler = data_scaler(cfg, dataset, saved if saved.get("data_mean") is not None else None)
    if scaler is not None:
        scaler.to(device)
    if main:
        OmegaConf.save(cfg, run_dir / "config.yaml")
    saved_step = step if state is not None else None
    model = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        model = torch.compile(model)

    def checkpoint() -> None:
        nonlocal saved_step
        _write_checkpoint(cfg, audio, ckpt_dir, world, main, device, {
            "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "data_position": position,
            "rng": {**rng_state(), "noise": gen.get_state()}, "skipped_steps": skipped})
        saved_step = step

    stop = StopFlag(verbose=main)
    stop.install()
    crash_at = _test_crash_step(rank)
    writer = tensorboard_writer(run_dir) if main else None
    label_dropout = cfg.data.label_dropout if cfg.data.num_classes else 0.0
    bar = tqdm(total=t.max_steps, initial=step, disable=not main, desc="train", dynamic_ncols=True,
               file=sys.stderr, mininterval=1.0)
    it = batches(loader, position)
    reason, last_loss, nonfinite = "finished", float("nan"), 0
    history: list[tuple[int, float]] = []  # (step, loss) at log steps
    tick, tick_step = time.perf_counter(), step
    net.train()
    stopping = False
    while step < t.max_steps:
        if stopping or step == t.stop_at:  # a signal arrived during the last step, or train.stop_at
            if saved_step != step:
                checkpoint()
            reason = (f"{_stop_cause(stopping, stop)} at step {step}; checkpoint written. "
                      "Re-run the same command to resume")
            break
        if step == crash_at:  # fault injection for tests (see _test_crash_step)
            os._exit(1)

        # Draw noise (and the input perturbation), timesteps and label dropout for the whole global batch,
        # identically on every rank; each micro-batch and rank takes its rows.
        B = t.batch_size
        noise_all = torch.randn((B, audio.n_mels, cfg.data.segment_frames), generator=gen)
        xi_all = torch.randn(noise_all.shape, generator=gen) if perturb else None  # input perturbation
        t_all = torch.randint(0, schedule.num_steps, (B,), generator=gen)
        keep_all = torch.rand(B, generator=gen) >= label_dropout

        # Accumulate gradients over grad_accum micro-batches.
        total: float | torch.Tensor = 0.0
        for m in range(t.grad_accum):
            position, batch = next(it)
            x0 = batch["mel"].to(device, non_blocking=True)  # [b, n_mels, F]
            if scaler is not None:
                x0 = scaler.encode(x0)
            rows = slice(m * micro * world + rank, (m + 1) * micro * world, world)
            noise = noise_all[rows].to(device, non_blocking=True)
            xi = None if xi_all is None else xi_all[rows].to(device, non_blocking=True)
            timesteps = t_all[rows].to(device, non_blocking=True)
            labels = None
            if cfg.data.num_classes:
                keep = keep_all[rows].to(device)
                labels = torch.where(keep, batch["label"].to(device),
                                     torch.full_like(keep, cfg.data.num_classes, dtype=torch.long))
            sync = contextlib.nullcontext() if world == 1 or m == t.grad_accum - 1 else model.no_sync()
            with sync:
                with autocast():
                    loss = objectives.diffusion_loss(model, x0, timesteps, noise, schedule,
                                                     prediction=cfg.diffusion.prediction, labels=labels,
                                                     min_snr_gamma=cfg.diffusion.min_snr_gamma,
                                                     input_perturbation=perturb, perturbation=xi).mean()
                (loss / t.grad_accum).backward()
            total += loss.detach().float() / t.grad_accum
        assert isinstance(total, torch.Tensor)  # grad_accum >= 1 micro-batches were added

        # Update weights. A non-finite loss or gradient skips the step; all ranks agree on that
        # and on stopping (a signal may reach the ranks at different steps).
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip if t.grad_clip else float("inf"))
        finite, going = all_agree([bool(torch.isfinite(total) and torch.isfinite(grad_norm)), stop.signal is None],
                                  device, world)
        stopping = not going
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            nonfinite, skipped = nonfinite + 1, skipped + 1
            if main:
                log.warning("step %d: non-finite loss or gradient (%d in a row, %d in all); step skipped",
                            step + 1, nonfinite, skipped)
            if nonfinite >= t.max_nonfinite:
                reason = (f"stopped at step {step + 1}: {nonfinite} non-finite losses/gradients in a row "
                          f"(train.max_nonfinite={t.max_nonfinite}); the last good checkpoint is kept in "
                          f"{ckpt_dir}. Lower optim.optimizer.lr or check the data")
                break
            continue
        nonfinite = 0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1

        # Update EMA.
        ema_update(ema, net, t.ema_decay if step > cfg.optim.warmup_steps else min(t.ema_decay, 0.9))

        # Log, checkpoint, preview.
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_steps:
            last_loss = total.item()  # a host sync: only at log steps
            history.append((step, last_loss))
        if main and step % t.log_every == 0:
            now = time.perf_counter()
            log_scalars(writer, bar, step, last_loss, scheduler.get_last_lr()[0], float(grad_norm), skipped,
                        (step - tick_step) * t.batch_size / (now - tick))
            tick, tick_step = now, step
        if step % t.ckpt_every == 0 or step == t.max_steps:
            checkpoint()
        if main and t.sample_every and step % t.sample_every == 0:
            log_samples(writer, ema, schedule, audio, cfg, step)
    bar.close()
    stop.restore()
    if writer is not None:
        writer.close()
    if world > 1:
        dist.barrier()
    return {"step": step, "loss": last_loss, "reason": reason, "run_dir": str(run_dir), "history": history,
            "skipped_steps": skipped}


# --------------------------------------------------------------------------- set-up

def _device(name: str) -> torch.device:
    try:
        return pick_device(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def open_dataset(cfg, audio, dataset_class=MelDataset):
    """The training MelDataset of cfg.data, checked against the config's audio and the batch;
    one-line UsageErrors."""
    if not Path(cfg.data.dir).is_dir():
        raise UsageError(f"data.dir={cfg.data.dir!r} is not a folder; make one with `python -m audiodiff.prepare`")
    try:
        dataset = dataset_class(cfg.data.dir, segment_frames=cfg.data.segment_frames, seed=cfg.seed,
                                in_memory=cfg.data.in_memory)
    except (FileNotFoundError, ValueError) as e:
        message = one_line(e)
        where = "" if str(cfg.data.dir) in message else f"data.dir={cfg.data.dir!r}: "
        raise UsageError(where + message) from None
    check_prepared_audio(cfg.data.dir, dataset.audio_config, audio)
    if dataset.num_classes > cfg.data.num_classes:
        raise UsageError(f"{cfg.data.dir} has labels up to {dataset.num_classes - 1} but data.num_classes="
                         f"{cfg.data.num_classes}; set data.num_classes={dataset.num_classes}")
    if len(dataset) < cfg.train.batch_size:
        raise UsageError(f"{cfg.data.dir} has {len(dataset)} clips, fewer than train.batch_size={cfg.train.batch_size}")
    return dataset


def data_scaler(cfg, dataset, saved: dict | None = None):
    """The DataScaler of diffusion.standardize (None when off): a resumed run's own statistics (`saved`,
    its checkpoint's diffusion config, even if the data folder changed since), else diffusion.data_mean/
    data_std when the config gives them, else the training set's per-bin statistics. Written into cfg so
    that config.yaml and every checkpoint carry them to the pipeline."""
    from omegaconf import open_dict

    d = cfg.diffusion
    given = d.get("data_mean") is not None or d.get("data_std") is not None
    if not d.get("standardize", False):
        if given:
            raise UsageError("diffusion.data_mean/data_std are set but diffusion.standardize=false; set "
                             "diffusion.standardize=true to use them, or drop them")
        return None
    try:
        if saved is not None:
            scaler = DataScaler.from_config(saved, dataset.n_mels)
        elif given:
            scaler = DataScaler.from_config(to_plain(d), dataset.n_mels)
        else:
            scaler = DataScaler(*bin_statistics(dataset))
    except ValueError as e:
        raise UsageError(one_line(e)) from None
    assert scaler is not None  # from_config gives None only when neither statistic is set: ruled out above
    with open_dict(cfg.diffusion):
        cfg.diffusion.update(scaler.to_config())
    return scaler


def _model_and_optimizer(cfg, net: nn.Module, device: torch.device):
    """(net on the device, its EMA copy, optimizer, LambdaLR warmup-cosine scheduler)."""
    net = net.to(device)
    if device.type == "cuda" and getattr(net, "dims", 1) == 2 and cfg.train.channels_last in ("auto", True):
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stub
    ema = ema_copy(net)
    optimizer = instantiate(optimizer_kwargs(to_plain(cfg.optim.optimizer), device), params=net.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.optim.warmup_steps, cfg.train.max_steps, cfg.optim.min_lr_ratio))
    return net, ema, optimizer, scheduler


def init_weights(cfg, net: nn.Module, ema: nn.Module) -> dict:
    """train.init_from: a new run (step 0, fresh optimizer and LR schedule) from the (EMA) weights of a run, a
    checkpoint, a model directory or a bundled name, with its prediction and statistics (returns its diffusion)."""
    source = cfg.train.init_from
    try:
        spec = read_model_config(source)
        weights, path, _ = load_weights(spec)
        match_weights(net, weights, path, spec.path / "config.yaml")
    except ModelLoadError as e:
        raise UsageError(f"train.init_from={source}: {one_line(e)}; pick a model of this net config") from None
    if spec.prediction != cfg.diffusion.prediction:
        raise UsageError(f"train.init_from={source} predicts {spec.prediction!r} but diffusion.prediction="
                         f"{cfg.diffusion.prediction!r}; set diffusion.prediction={spec.prediction}")
    if spec.config["diffusion"].get("data_mean") is not None and not cfg.diffusion.get("standardize", False):
        raise UsageError(f"train.init_from={source} was trained on per-bin standardised mels; set "
                         "diffusion.standardize=true")
    ema.load_state_dict(net.state_dict())
    log.info("starting from the weights of %s (%s)", source, path)
    return dict(spec.config["diffusion"])


def _autocast(precision: str, device: torch.device):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext


def _resume(ckpt_dir: Path, world: int, main: bool, net, ema, optimizer, scheduler, gen):
    """(step, data position, skipped steps, state or None) after loading the newest good checkpoint."""
    state, path = resume_state(ckpt_dir, world, main)
    if state is None:
        return 0, None, 0, None
    net.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    gen.set_state(state["rng"]["noise"])
    set_rng_state(state["rng"])
    if main:
        log.info("resuming from %s (step %d)", path, state["step"])
    return state["step"], state["data_position"], state.get("skipped_steps", 0), state


def _write_checkpoint(cfg, audio, ckpt_dir: Path, world: int, main: bool, device, state: dict) -> None:
    """Rank 0 writes; every rank waits for it (a barrier that also carries rank 0's success), so no
    rank runs ahead of, or restarts from, a half-visible checkpoint."""
    from omegaconf import OmegaConf

    error = None
    if main:
        try:
            save_checkpoint({**state, "config": OmegaConf.to_container(cfg), "audio": audio.to_dict(), "format": 1},
                            ckpt_dir, state["step"], keep=cfg.train.keep_checkpoints)
        except CheckpointError as e:
            error = e
    if not all_agree([error is None], device, world)[0] and error is None:
        error = CheckpointError(f"rank 0 could not write the step {state['step']} checkpoint (see its message)")
    if error is not None:
        raise error


def _stop_cause(stopping: bool, stop: StopFlag) -> str:
    if not stopping:
        return "stopped"
    # under DDP, another rank's signal stops this one too
    return f"stopped by {signal.Signals(stop.signal).name}" if stop.signal else "stopped by another rank"


def _test_crash_step(rank: int) -> int | None:
    """Fault injection for tests/test_reliability.py: with AUDIODIFF_TEST_CRASH_AT_STEP=N, rank
    AUDIODIFF_TEST_CRASH_RANK (default 1) dies (os._exit(1)) on reaching step N, on the first
    attempt of a torchrun job only (TORCHELASTIC_RESTART_COUNT=0)."""
    at = os.environ.get("AUDIODIFF_TEST_CRASH_AT_STEP")
    if not at or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    return int(at) if rank == int(os.environ.get("AUDIODIFF_TEST_CRASH_RANK", "1")) else None
