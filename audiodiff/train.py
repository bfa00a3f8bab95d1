"""python -m audiodiff.train [OVERRIDES...]: train a mel diffusion model (or a vocoder).

Configuration is Hydra's (recipes/config.yaml and its groups); arguments are Hydra
overrides, e.g. `+experiment=digits_smoke data.dir=dump/train run_dir=exp/smoke`.
Re-running the same command in the same run_dir resumes from its last good checkpoint.
Under `torchrun --nproc_per_node N` the same command trains with DDP.

Flags: `--dry-run` composes and builds everything, prints the config and exits;
`--cfg` prints the resolved config only; `--get KEY` prints one resolved value (recipes
read their settings this way, so no data-dependent value lives in bash).
"""

from __future__ import annotations

import contextlib
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

log = logging.getLogger("audiodiff")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TASKS = ("diffusion", "vocoder")


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
        raise UsageError(_hydra_message(e, recipes)) from None
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


def _hydra_message(e: Exception, recipes: Path) -> str:
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
        return f"unknown config key {m.group(1)!r} (check the spelling, or add it with +{m.group(1)}=...)"
    return text.split(". ")[0][:300]


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
    once; checkpoints are written atomically, so that never corrupts one."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            sys.stderr.write("\nsecond signal: exiting now; the last checkpoint is intact\n")
            os._exit(128 + signum)
        self.signal = signum
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

    from audiodiff.checkpoint import CheckpointError, load_latest, save_checkpoint
    from audiodiff.data import MelDataset, batches, make_loader
    from audiodiff.diffusion.objectives import diffusion_loss, drop_labels

    # ---- distributed setup: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
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
    if not Path(cfg.data.dir).is_dir():
        raise UsageError(f"data.dir={cfg.data.dir!r} is not a folder; make one with `python -m audiodiff.prepare`")
    dataset = MelDataset(cfg.data.dir, segment_frames=cfg.data.segment_frames, seed=cfg.seed,
                         in_memory=cfg.data.in_memory)
    mismatch = dataset.audio_config.describe_mismatch(audio, "data", "config")
    if mismatch:
        raise UsageError(f"{cfg.data.dir} was prepared with another audio config ({mismatch}); "
                         "re-run prepare with this config or set audio.* to match")
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

    # ---- resume
    step, position, nonfinite, last_loss = 0, None, 0, float("nan")
    state, path = load_latest(ckpt_dir)
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, position = state["step"], state["data_position"]
        gen.set_state(state["rng"]["noise"])
        set_rng_state(state["rng"])
        if main:
            log.info("resuming from %s (step %d)", path, step)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        OmegaConf.save(cfg, run_dir / "config.yaml")

    model = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        model = torch.compile(model)

    def checkpoint() -> None:
        if not main:
            return
        save_checkpoint({
            "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "data_position": position,
            "rng": {**rng_state(), "noise": gen.get_state()},
            "config": OmegaConf.to_container(cfg), "audio": audio.to_dict(), "format": 1,
        }, ckpt_dir, step, keep=t.keep_checkpoints)

    stop = StopFlag()
    stop.install()
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
    while step < t.max_steps:
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
        # ---- clip -> step (non-finite losses or gradients skip the step)
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip if t.grad_clip else float("inf"))
        finite = bool(torch.isfinite(total) and torch.isfinite(grad_norm))
        if world > 1:  # every rank must agree to skip
            flag = torch.tensor([float(finite)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item())
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            nonfinite += 1
            if main:
                log.warning("step %d: non-finite loss or gradient (%d in a row); step skipped", step + 1, nonfinite)
            if nonfinite >= t.max_nonfinite:
                reason = (f"stopped at step {step + 1}: {nonfinite} non-finite losses/gradients in a row "
                          f"(train.max_nonfinite={t.max_nonfinite}); last good checkpoint kept in {ckpt_dir}. "
                          "Lower optim.optimizer.lr or check the data")
                break
            continue
        nonfinite = 0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        # ---- EMA -> log -> checkpoint
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
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", sps=f"{rate:.0f}")
        if step % t.ckpt_every == 0 or step == t.max_steps:
            checkpoint()
        if stop.signal is not None or step == t.stop_at:
            if step % t.ckpt_every and step != t.max_steps:
                checkpoint()
            why = f"stopped by {signal.Signals(stop.signal).name}" if stop.signal is not None else "stopped"
            reason = f"{why} at step {step}; checkpoint written. Re-run the same command to resume"
            break
    bar.close()
    if writer is not None:
        writer.close()
    if world > 1:
        dist.barrier()
    return {"step": step, "loss": last_loss, "reason": reason, "run_dir": str(run_dir), "history": history}


def _copy_module(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


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
        if cfg.task == "vocoder":
            from audiodiff.train_vocoder import train_vocoder

            kwargs = OmegaConf.to_container(cfg.vocoder_train) if "vocoder_train" in cfg else {}
            if dry_run:
                print(OmegaConf.to_yaml(cfg))
                return 0
            train_vocoder(run_dir=cfg.run_dir, audio_config=OmegaConf.to_container(cfg.audio), **kwargs)
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
    print(f"audiodiff.train: {summary['reason']} (step {summary['step']}, loss {summary['loss']:.4f}, "
          f"run {summary['run_dir']})", file=sys.stderr)
    return 0 if summary["reason"] in ("finished",) or " checkpoint written" in summary["reason"] else 1


if __name__ == "__main__":
    sys.exit(main())
