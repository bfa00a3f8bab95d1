"""python -m audiodiff.train [OVERRIDES...]: train a mel diffusion model (or a vocoder).

Configuration is Hydra's (recipes/config.yaml and its groups); arguments are Hydra
overrides, e.g. `+experiment=digits_smoke data.dir=dump/train run_dir=exp/smoke`.
Re-running the same command in the same run_dir resumes from its last good checkpoint.
Under `torchrun --nproc_per_node N` the same command trains with DDP; with
`torchrun --max-restarts K` a rank that dies brings the job back from the last checkpoint.
`task=vocoder` trains a HiFi-GAN (kwargs: the `vocoder_train` group) and `task=classifier`
the evaluation classifier (kwargs: the `classifier_train` block) on data.dir instead.

Interrupting: SIGTERM or SIGINT (Ctrl-C) finishes the current step, writes a checkpoint and
exits 0 saying how to resume; a second signal exits at once (checkpoints are atomic, so
nothing is corrupted). A checkpoint that is truncated, damaged or has no checksum is
skipped on resume with a warning naming it; one that holds pickled code is refused.

Flags: `--dry-run` composes and builds everything, prints the config and exits;
`--cfg` prints the resolved config only; `--get KEY` prints one resolved value (recipes
read their settings this way, so no data-dependent value lives in bash).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from audiodiff.checkpoint import CheckpointError

log = logging.getLogger("audiodiff")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TASKS = ("diffusion", "vocoder", "classifier")


class UsageError(Exception):
    """A user's mistake in arguments or config: printed as one line, exit code 2."""


# --------------------------------------------------------------------------- config

def compose_config(overrides: list[str], recipes: Path | None = None, check_missing: bool = True):
    """Compose recipes/config.yaml with Hydra overrides; errors become one-line UsageErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    recipes = Path(os.environ.get("AUDIODIFF_RECIPES", recipes or RECIPES))
    if not (recipes / "config.yaml").exists():
        raise UsageError(f"recipes folder {recipes} has no config.yaml; set AUDIODIFF_RECIPES to the "
                         "recipes/ folder of an audiodiff checkout")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipes), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
    except Exception as e:  # Hydra's errors are multi-line; keep the first informative line
        raise UsageError(_hydra_message(e, recipes, overrides)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and check_missing:
        raise UsageError(f"config value(s) missing: {', '.join(missing)} (pass e.g. {missing[0]}=...)")
    try:
        for key in cfg:  # resolve interpolations, leaving ??? values for --get and --cfg
            if key not in missing:
                OmegaConf.select(cfg, key)
        if not missing:
            OmegaConf.resolve(cfg)
    except Exception as e:
        raise UsageError(f"config does not resolve: {str(e).splitlines()[0]}") from None
    if cfg.task not in TASKS:
        raise UsageError(f"task={cfg.task!r} is not one of {', '.join(TASKS)}")
    return cfg


def _hydra_message(e: Exception, recipes: Path, overrides=()) -> str:
    text = " ".join(str(e).split())
    import re

    m = re.search(r"Could not find '([^']+)'", text) or re.search(r"Could not load '([^']+)'", text)
    if m:
        group = m.group(1).split("/")[0]
        choices = sorted(p.stem for p in (recipes / group).glob("*.yaml")) if (recipes / group).is_dir() else []
        hint = f"; valid {group}: {', '.join(choices)}" if choices else ""
        return f"unknown config option {m.group(1)!r}{hint}"
    m = re.search(r"Key '([^']+)' is not in struct", text) or re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        valid = _sibling_keys(key, recipes, overrides)
        where = f" under {key.rsplit('.', 1)[0]}" if "." in key else ""
        hint = f"; valid keys{where}: {', '.join(valid)}" if valid else ""
        return f"unknown config key {key!r}{hint} (or add a new one with +{key}=...)"
    return text.split(". ")[0][:300]


def _sibling_keys(key: str, recipes: Path, overrides) -> list[str]:
    """The keys next to an unknown `key`, from the config composed without that override."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(recipes), version_base="1.3"):
            cfg = compose("config", overrides=rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return sorted(str(k) for k in node.keys()) if OmegaConf.is_dict(node) else []
    except Exception:  # another override is broken too: the message without the list
        return []


def instantiate(node, **kwargs):
    """The one place config becomes objects (`_target_` plus plain kwargs)."""
    from hydra.utils import instantiate as _inst

    try:
        return _inst(node, **kwargs, _convert_="all")
    except Exception as e:
        cause = e.__cause__ or e
        target = node.get("_target_", "?") if hasattr(node, "get") else "?"
        raise UsageError(f"cannot build {target}: {str(cause).splitlines()[0]}") from None


def build(cfg):
    """Config -> (audio_config, net, schedule). Used by training, the pipeline and dry runs."""
    from omegaconf import OmegaConf

    from audiodiff.audio import AudioConfig

    audio = AudioConfig.from_dict(OmegaConf.to_container(cfg.audio))
    net = instantiate(cfg.net)
    schedule = instantiate(cfg.diffusion.schedule)
    return audio, net, schedule


# --------------------------------------------------------------------------- helpers

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name!r} but no CUDA GPU is available; use device=cpu")
    return device


def lr_lambda(warmup_steps: int, max_steps: int, min_lr_ratio: float):
    """Linear warmup, then cosine decay to min_lr_ratio (Loshchilov & Hutter 2017)."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    e = list(ema.parameters())
    torch._foreach_lerp_(e, [p.detach().to(q.dtype) for p, q in zip(model.parameters(), e)], 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


class StopFlag:
    """SIGTERM/SIGINT: finish the current step, checkpoint, exit. A second signal exits at
    once; checkpoints are written atomically, so that never corrupts one. (DataLoader
    workers ignore both signals, see audiodiff.data: the main process decides.)"""

    def __init__(self, verbose: bool = True) -> None:
        self.signal: int | None = None
        self.verbose = verbose

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore(self) -> None:
        """The handlers from before install() (train() called from a notebook or a test)."""
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            if self.verbose:
                sys.stderr.write(f"\n{signal.Signals(signum).name} again: exiting now; the last complete "
                                 "checkpoint is intact (second signal)\n")
            os._exit(128 + signum)
        self.signal = signum
        if self.verbose:
            sys.stderr.write(f"\n{signal.Signals(signum).name}: finishing this step and writing a checkpoint "
                             "(send again to exit at once)\n")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- training

def train(cfg) -> dict:
    """The training loop, top to bottom: batch -> loss -> backward -> clip -> step -> EMA
    -> log -> checkpoint. Returns a summary dict (final step, last loss, stop reason)."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from audiodiff.checkpoint import save_checkpoint
    from audiodiff.data import MelDataset, batches, make_loader
    from audiodiff.diffusion.objectives import diffusion_loss

    # ---- distributed setup: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        from datetime import timedelta

        timeout = timedelta(seconds=float(cfg.train.dist_timeout_s))
        # torchrun keeps one key-value store across restarts, and gloo publishes each rank's
        # address there: without a fresh namespace per attempt, a restarted rank can read the
        # dead attempt's address and wait on it forever. So each attempt gets its own prefix.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True",
                              timeout=timeout)
        dist.init_process_group(backend, store=dist.PrefixStore(f"audiodiff/attempt{attempt}", store),
                                rank=rank, world_size=world, timeout=timeout)
    main = rank == 0
    device = pick_device(cfg.device)
    t = cfg.train
    if t.batch_size % (world * t.grad_accum):
        raise UsageError(f"train.batch_size={t.batch_size} must be divisible by ranks x grad_accum "
                         f"({world} x {t.grad_accum})")
    micro = t.batch_size // (world * t.grad_accum)  # per rank, per micro-step

    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    audio, net, schedule = build(cfg)
    schedule = schedule.to(device)

    # ---- data: one permutation per epoch shared by all ranks (see audiodiff.data)
    dataset = open_dataset(cfg, audio, MelDataset)
    if dataset.num_classes > cfg.data.num_classes:
        raise UsageError(f"{cfg.data.dir} has labels up to {dataset.num_classes - 1} but data.num_classes="
                         f"{cfg.data.num_classes}; set data.num_classes={dataset.num_classes}")
    if len(dataset) < t.batch_size:
        raise UsageError(f"{cfg.data.dir} has {len(dataset)} clips, fewer than train.batch_size={t.batch_size}")
    loader = make_loader(dataset, micro, shuffle=True, seed=cfg.seed, num_workers=t.num_workers,
                         distributed=world > 1, rank=rank, world_size=world, pin_memory=device.type == "cuda")

    # ---- model, EMA, optimizer, LR schedule
    net = net.to(device)
    two_d = getattr(net, "dims", 1) == 2
    if device.type == "cuda" and two_d and t.channels_last in ("auto", True):
        net = net.to(memory_format=torch.channels_last)
    ema = _copy_module(net).requires_grad_(False)
    opt_kwargs = OmegaConf.to_container(cfg.optim.optimizer)
    if device.type == "cuda" and opt_kwargs.get("_target_") == "torch.optim.AdamW":
        opt_kwargs["fused"] = True
    optimizer = instantiate(opt_kwargs, params=net.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, t.max_steps, cfg.optim.min_lr_ratio))
    use_bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)  # noise, timesteps, label dropout

    # ---- resume: every rank loads the checkpoint rank 0 picked (the newest that verifies)
    step, position, nonfinite, skipped, last_loss = 0, None, 0, 0, float("nan")
    state, path = resume_state(ckpt_dir, world, main)
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, position = state["step"], state["data_position"]
        skipped = state.get("skipped_steps", 0)
        gen.set_state(state["rng"]["noise"])
        set_rng_state(state["rng"])
        if main:
            log.info("resuming from %s (step %d)", path, step)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
    # per-bin standardisation of the diffusion state (or None): a resumed run keeps its own statistics
    saved = ((state or {}).get("config") or {}).get("diffusion") or {}
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
        """Rank 0 writes; every rank waits for it (a barrier that also carries rank 0's
        success), so no rank runs ahead of, or restarts from, a half-visible checkpoint."""
        nonlocal saved_step
        error = None
        if main:
            try:
                save_checkpoint({
                    "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "data_position": position,
                    "rng": {**rng_state(), "noise": gen.get_state()}, "skipped_steps": skipped,
                    "config": OmegaConf.to_container(cfg), "audio": audio.to_dict(), "format": 1,
                }, ckpt_dir, step, keep=t.keep_checkpoints)
            except CheckpointError as e:
                error = e
        if world > 1:
            ok = torch.tensor([0.0 if error else 1.0], device=device)
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            if error is None and not ok.item():
                error = CheckpointError(f"rank 0 could not write the step {step} checkpoint (see its message)")
        if error is not None:
            raise error
        saved_step = step

    stop = StopFlag(verbose=main)
    stop.install()
    crash_at = _test_crash_step(rank)
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
    label_dropout = cfg.data.label_dropout if cfg.data.num_classes else 0.0
    null_label = cfg.data.num_classes
    bar = tqdm(total=t.max_steps, initial=step, disable=not main, desc="train", dynamic_ncols=True,
               file=sys.stderr, mininterval=1.0)
    it = batches(loader, position)
    reason = "finished"
    history: list[tuple[int, float]] = []  # (step, loss) at log steps
    tick, tick_step = time.perf_counter(), step
    net.train()
    stopping = False
    while step < t.max_steps:
        if stopping or step == t.stop_at:  # a signal arrived during the last step, or train.stop_at
            if saved_step != step:
                checkpoint()
            why = "stopped"
            if stopping:  # under DDP, another rank's signal stops this one too
                why = f"stopped by {signal.Signals(stop.signal).name}" if stop.signal else "stopped by another rank"
            reason = f"{why} at step {step}; checkpoint written. Re-run the same command to resume"
            break
        if step == crash_at:  # fault injection for tests (see _test_crash_step)
            os._exit(1)
        # ---- batch -> loss -> backward (grad_accum micro-batches)
        total = 0.0
        # Noise, timesteps and label dropout for the whole global batch, drawn identically on
        # every rank; each micro-batch and rank takes its rows. So DDP and gradient
        # accumulation match one process with the same global batch.
        B = t.batch_size
        noise_all = torch.randn((B, audio.n_mels, cfg.data.segment_frames), generator=gen)
        t_all = torch.randint(0, schedule.num_steps, (B,), generator=gen)
        keep_all = torch.rand(B, generator=gen) >= label_dropout
        for m in range(t.grad_accum):
            position, batch = next(it)
            x0 = batch["mel"].to(device, non_blocking=True)  # [b, n_mels, F]
            if scaler is not None:
                x0 = scaler.encode(x0)
            rows = slice(m * micro * world + rank, (m + 1) * micro * world, world)
            noise = noise_all[rows].to(device, non_blocking=True)
            timesteps = t_all[rows].to(device, non_blocking=True)
            labels = None
            if cfg.data.num_classes:
                keep = keep_all[rows].to(device)
                labels = torch.where(keep, batch["label"].to(device), torch.full_like(keep, null_label, dtype=torch.long))
            sync = contextlib.nullcontext() if world == 1 or m == t.grad_accum - 1 else model.no_sync()
            with sync:
                with autocast():
                    loss = diffusion_loss(model, x0, timesteps, noise, schedule, prediction=cfg.diffusion.prediction,
                                          labels=labels, min_snr_gamma=cfg.diffusion.min_snr_gamma).mean()
                (loss / t.grad_accum).backward()
            total += loss.detach().float() / t.grad_accum
        # ---- clip -> step. A non-finite loss or gradient skips the step; all ranks agree on
        # that and on stopping (a signal may reach the ranks at different steps).
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip if t.grad_clip else float("inf"))
        finite = bool(torch.isfinite(total) and torch.isfinite(grad_norm))
        stopping = stop.signal is not None
        if world > 1:
            flags = torch.tensor([float(finite), float(not stopping)], device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
            finite, stopping = bool(flags[0].item()), not bool(flags[1].item())
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            nonfinite += 1
            skipped += 1
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
        # ---- EMA -> log -> checkpoint -> samples
        ema_update(ema, net, t.ema_decay if step > cfg.optim.warmup_steps else min(t.ema_decay, 0.9))
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_steps:
            last_loss = total.item()  # a host sync: only at log steps
            history.append((step, last_loss))
        if main and step % t.log_every == 0:
            now = time.perf_counter()
            rate = (step - tick_step) * t.batch_size / (now - tick)
            tick, tick_step = now, step
            lr = scheduler.get_last_lr()[0]
            writer.add_scalar("train/loss", last_loss, step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/grad_norm", float(grad_norm), step)
            writer.add_scalar("train/samples_per_s", rate, step)
            writer.add_scalar("train/skipped_steps", skipped, step)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", sps=f"{rate:.0f}")
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


def data_scaler(cfg, dataset, saved: dict | None = None):
    """The DataScaler of diffusion.standardize (None when off): a resumed run's own statistics (`saved`,
    its checkpoint's diffusion config, even if the data folder changed since), else diffusion.data_mean/
    data_std when the config gives them, else the training set's per-bin statistics. Written into cfg so
    that config.yaml and every checkpoint carry them to the pipeline."""
    from omegaconf import OmegaConf, open_dict

    from audiodiff.data import bin_statistics
    from audiodiff.diffusion.scaling import DataScaler

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
            scaler = DataScaler.from_config(OmegaConf.to_container(d), dataset.n_mels)
        else:
            scaler = DataScaler(*bin_statistics(dataset))
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    with open_dict(cfg.diffusion):
        cfg.diffusion.update(scaler.to_config())
    return scaler


def open_dataset(cfg, audio, dataset_class):
    """The training MelDataset of cfg.data, checked against the config's audio; one-line UsageErrors."""
    if not Path(cfg.data.dir).is_dir():
        raise UsageError(f"data.dir={cfg.data.dir!r} is not a folder; make one with `python -m audiodiff.prepare`")
    try:
        dataset = dataset_class(cfg.data.dir, segment_frames=cfg.data.segment_frames, seed=cfg.seed,
                                in_memory=cfg.data.in_memory)
    except (FileNotFoundError, ValueError) as e:
        message = str(e).splitlines()[0]
        where = "" if str(cfg.data.dir) in message else f"data.dir={cfg.data.dir!r}: "
        raise UsageError(where + message) from None
    mismatch = dataset.audio_config.describe_mismatch(audio, "data", "config")
    if mismatch:
        raise UsageError(f"{cfg.data.dir} was prepared with another audio config ({mismatch}); "
                         "re-run prepare with this config or set audio.* to match")
    return dataset


def resume_state(ckpt_dir: Path, world: int, main: bool) -> tuple[dict | None, Path | None]:
    """(state, path) of the checkpoint to resume from, the same on every rank: rank 0 picks the
    newest one that verifies and loads, the others load that file. Damaged newer ones are renamed
    `*.damaged` (kept for inspection, out of the way of pruning). A run whose checkpoints all
    fail to load is refused rather than silently restarted from step 0."""
    from audiodiff.checkpoint import load_latest, safe_load

    state = path = error = None
    if main:
        skipped: list = []
        state, path = load_latest(ckpt_dir, skipped=skipped)
        if state is None and skipped:
            first, why = skipped[0]
            error = (f"{ckpt_dir}: none of its {len(skipped)} checkpoint(s) loads ({first.name}: {why}); "
                     "move the folder away to start over, or use another run_dir")
        elif state is not None:
            for bad, _ in skipped:
                bad.rename(bad.with_name(bad.name + ".damaged"))
                log.warning("renamed %s to %s.damaged", bad.name, bad.name)
    if world > 1:
        shared = [str(path) if path is not None else None, error]
        dist.broadcast_object_list(shared, src=0)
        if not main:
            path, error = (Path(shared[0]) if shared[0] else None), shared[1]
            state = safe_load(path) if path is not None else None
    if error is not None:
        raise CheckpointError(error if main else f"rank 0 refused to resume: {error}")
    return state, path


def _test_crash_step(rank: int) -> int | None:
    """Fault injection for tests/test_reliability.py: with AUDIODIFF_TEST_CRASH_AT_STEP=N, rank
    AUDIODIFF_TEST_CRASH_RANK (default 1) dies (os._exit(1)) on reaching step N, on the first
    attempt of a torchrun job only (TORCHELASTIC_RESTART_COUNT=0)."""
    at = os.environ.get("AUDIODIFF_TEST_CRASH_AT_STEP")
    if not at or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    return int(at) if rank == int(os.environ.get("AUDIODIFF_TEST_CRASH_RANK", "1")) else None


@torch.no_grad()
def log_samples(writer, ema: nn.Module, schedule, audio, cfg, step: int) -> None:
    """train.sample_num clips from the EMA weights (DPM-Solver++, train.sample_steps steps,
    Griffin-Lim) to TensorBoard as audio and as one mel image. Draws from its own generators
    in a forked RNG, so training (and its resume exactness) is unaffected."""
    from audiodiff.pipeline import AudioDiffusionPipeline

    n = int(cfg.train.get("sample_num", 4))
    classes = int(cfg.data.num_classes)
    labels = [i % classes for i in range(n)] if classes else None
    was_training = ema.training
    device = next(ema.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        pipe = AudioDiffusionPipeline(ema, schedule, audio, prediction=cfg.diffusion.prediction,
                                      num_classes=classes, vocoder="griffinlim",
                                      config={"net": _container(cfg.net), "diffusion": {
                                          k: _container(cfg.diffusion)[k] for k in ("data_mean", "data_std")
                                          if cfg.diffusion.get(k) is not None}},
                                      segment_frames=int(cfg.data.segment_frames))
        out = pipe(batch_size=n, steps=int(cfg.train.sample_steps), sampler="dpmpp", seed=0, labels=labels,
                   progress=False, return_mel=True)
    ema.train(was_training)
    for i in range(n):
        tag = f"samples/{i}" + (f"_label{labels[i]}" if labels else "")
        writer.add_audio(tag, out.audio[i:i + 1], step, sample_rate=audio.sample_rate)
    # the mels side by side, low frequencies at the bottom, [-1, 1] -> [0, 1]
    low = -1.0 if audio.normalization == "minmax" else math.log(audio.log_floor)
    high = 1.0 if audio.normalization == "minmax" else audio.log_max
    image = torch.cat(list(out.mel), dim=-1).flip(0)  # [n_mels, n * F]
    writer.add_image("samples/mel", ((image - low) / (high - low)).clamp(0, 1), step, dataformats="HW")
    writer.flush()


def _container(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _copy_module(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


# --------------------------------------------------------------------------- other tasks

def task_call(cfg):
    """(function, kwargs) for task=vocoder (audiodiff.train_vocoder.train_vocoder, kwargs from the
    `vocoder_train` group) or task=classifier (audiodiff.train_classifier.train_classifier, kwargs
    from `classifier_train`). run_dir, data.dir, the audio config, seed and device come from the
    top level; a key the function does not take is a UsageError listing the ones it does."""
    from omegaconf import OmegaConf

    from audiodiff.audio import AudioConfig

    data_dir = cfg.data.dir
    if not Path(data_dir).exists():
        raise UsageError(f"data.dir={data_dir!r} does not exist; pass a folder from `python -m audiodiff.prepare`"
                         + (" or of audio files" if cfg.task == "vocoder" else ""))
    if cfg.task == "vocoder":
        from audiodiff.train_vocoder import train_vocoder as fn

        block = "vocoder_train"
        given = {"run_dir": cfg.run_dir, "data": data_dir,
                 "audio_config": AudioConfig.from_dict(OmegaConf.to_container(cfg.audio)).to_dict()}
        defaults = {"seed": cfg.seed, "device": cfg.device}
    else:
        from audiodiff.data import read_prepared
        from audiodiff.train_classifier import train_classifier as fn

        block = "classifier_train"
        try:
            _, cache = read_prepared(data_dir)
        except (FileNotFoundError, ValueError) as e:
            message = str(e).splitlines()[0]
            raise UsageError(message if str(data_dir) in message else f"data.dir={data_dir!r}: {message}") from None
        audio = AudioConfig.from_dict(OmegaConf.to_container(cfg.audio))
        mismatch = AudioConfig.from_dict(cache["audio_config"]).describe_mismatch(audio, "data", "config")
        if mismatch:  # the classifier scores generated mels: it must see the same mel
            raise UsageError(f"{data_dir} was prepared with another audio config ({mismatch}); "
                             "re-run prepare with this config or set audio.* to match")
        given = {"prepared_dir": data_dir, "run_dir": cfg.run_dir}
        defaults = {"segment_frames": cfg.data.segment_frames, "num_classes": cfg.data.num_classes or None,
                    "seed": cfg.seed, "device": cfg.device}
    params = inspect.signature(fn).parameters
    kwargs = OmegaConf.to_container(cfg[block], resolve=True) if cfg.get(block) is not None else {}
    valid = sorted(k for k in params if k not in given)
    for key in kwargs:
        if key in given:
            source = "data.dir" if key in ("data", "prepared_dir") else "audio" if key == "audio_config" else key
            raise UsageError(f"{block}.{key} is set from the top level ({source}); remove {block}.{key}")
        if key not in params:
            raise UsageError(f"unknown key {block}.{key}; valid keys: {', '.join(valid)}")
    return fn, {**{k: v for k, v in defaults.items() if k in params}, **kwargs, **given}


def _task_summary(result) -> str:
    if not isinstance(result, dict):
        return str(result)
    parts = []
    for key, value in result.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, (int, str)) or value is None:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    get = None
    if "--get" in argv:
        i = argv.index("--get")
        if i + 1 >= len(argv):
            print("audiodiff.train: --get needs a KEY, e.g. --get recipe.per_digit", file=sys.stderr)
            return 2
        get = argv.pop(i + 1)
        argv.pop(i)
    dry_run = "--dry-run" in argv
    show = "--cfg" in argv
    flags = [a for a in argv if a.startswith("--") and a not in ("--dry-run", "--cfg")]
    if flags:
        print(f"audiodiff.train: unknown flag {flags[0]!r}; valid flags: --dry-run, --cfg, --get KEY, -h "
              "(everything else is a Hydra override key=value)", file=sys.stderr)
        return 2
    overrides = [a for a in argv if not a.startswith("--")]
    try:
        cfg = compose_config(overrides, check_missing=get is None and not show)
        from omegaconf import OmegaConf

        if get is not None:
            value = OmegaConf.select(cfg, get, default="__missing__")
            if value == "__missing__":
                raise UsageError(f"config has no key {get!r}")
            print(OmegaConf.to_yaml(value).strip() if OmegaConf.is_config(value) else value)
            return 0
        if show:
            print(OmegaConf.to_yaml(cfg))
            return 0
        if cfg.task in ("vocoder", "classifier"):
            fn, kwargs = task_call(cfg)
            if dry_run:
                print(OmegaConf.to_yaml(cfg))
                print(f"dry run: {fn.__module__}.{fn.__name__}({', '.join(sorted(kwargs))})")
                return 0
            try:
                result = fn(**kwargs)
            except ValueError as e:  # the task's own checks of its data and settings: one line
                raise UsageError(f"task={cfg.task}: {str(e).splitlines()[0]}") from None
            print(f"audiodiff.train: task={cfg.task} finished: {_task_summary(result)}", file=sys.stderr)
            return 0
        if dry_run:
            audio, net, schedule = build(cfg)
            n = sum(p.numel() for p in net.parameters())
            print(OmegaConf.to_yaml(cfg))
            print(f"dry run: net {type(net).__name__} with {n:,} parameters, schedule T={schedule.num_steps}, "
                  f"audio {audio.sample_rate} Hz x {audio.n_mels} mels")
            return 0
        summary = train(cfg)
    except UsageError as e:
        print(f"audiodiff.train: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a known library error type with a one-line message
        from audiodiff.audio import AudioConfigError
        from audiodiff.checkpoint import CheckpointError

        if isinstance(e, (AudioConfigError, CheckpointError)):
            print(f"audiodiff.train: {e}", file=sys.stderr)
            return 2 if isinstance(e, AudioConfigError) else 1
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"audiodiff.train: {summary['reason']} (step {summary['step']}, loss {summary['loss']:.4f}, "
              f"run {summary['run_dir']})", file=sys.stderr)
    return 0 if summary["reason"] in ("finished",) or " checkpoint written" in summary["reason"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `--get KEY | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
