"""The run-time every training loop and command shares: device, RNG state, processes, signals.

    world, rank = init_distributed("auto", 600)   # torchrun's WORLD_SIZE/RANK, or (1, 0)
    device = pick_device("auto")                  # this rank's GPU, or the CPU; ValueError for a bad name
    state = rng_state(); set_rng_state(state)     # torch (and CUDA) generators, for checkpoints
    stop = StopFlag(); stop.install()             # SIGTERM/SIGINT: finish the step, then stop

As EDM's torch_utils/distributed.py: one module, imported by training and by inference, that
imports nothing of audiodiff but its UsageError.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .cli import UsageError


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None): the current CUDA GPU when there is one, else the CPU; otherwise a torch
    device name. ValueError naming the value when it is no device or names a GPU this machine lacks."""
    if isinstance(name, torch.device):
        device = name
    elif name in (None, "auto"):
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise ValueError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(name)!r} but no CUDA GPU is available; use device=cpu")
    return device


def rng_state() -> dict:
    """The global torch generator's state, and every CUDA device's when there are GPUs."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def init_distributed(device_name: str, timeout_s: float) -> tuple[int, int]:
    """(world size, rank) from torchrun's environment; joins the process group when world > 1:
    nccl, each rank on GPU LOCAL_RANK, unless device_name is "cpu" or there is no GPU (gloo).
    Call it before pick_device, so that "auto" picks this rank's GPU.

    Where the agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True), it outlives restarts, and
    gloo publishes each rank's address there: without a fresh namespace per attempt, a restarted
    rank can read the dead attempt's address and wait on it forever, so each attempt gets its own
    prefix, by torchrun's restart count. That count is each agent's own: an agent started again
    after its node died counts from 0 while the others do not, and the ranks would wait in different
    namespaces (pytorch/pytorch#135712). audiodiff.launch therefore turns the shared store off; rank
    0 then hosts a new store for every attempt, at the port its agent publishes for that round, and
    no prefix is needed.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device_name != "cpu" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = timedelta(seconds=float(timeout_s))
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") if agent_store else "0"
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=rank == 0 and not agent_store, timeout=timeout)
        dist.init_process_group(backend, store=dist.PrefixStore(f"audiodiff/attempt{attempt}", store),
                                rank=rank, world_size=world, timeout=timeout)
    return world, rank


def check_shared_paths(world: int, rank: int, run_dir: Path, files: dict[str, Path]) -> None:
    """Several processes, maybe on several machines: every rank must see `files` and the run directory
    (one filesystem that every node mounts, at the same path), else every rank raises the same one-line
    UsageError naming the rank, its host and the path, instead of some ranks waiting for the rest forever.
    files: {name in the config: a file that must exist}."""
    if world == 1:
        return
    marker = Path(run_dir) / f".ranks-{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}"
    if rank == 0:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(socket.gethostname())
    dist.barrier()
    seen = {name: Path(path).is_file() for name, path in {**files, "run_dir": marker}.items()}
    views: list = [None] * world
    dist.all_gather_object(views, (rank, socket.gethostname(), seen))
    if rank == 0:
        marker.unlink(missing_ok=True)
    for other, host, sees in views:
        for name, ok in sees.items():
            if not ok:
                where = run_dir if name == "run_dir" else Path(files[name]).parent
                raise UsageError(f"rank {other} on {host} cannot see {name}={str(where)!r}: dump/ and exp/ must "
                                 "be on a filesystem every node mounts, at the same path (README: Training across "
                                 "machines)")


def all_agree(flags: list[bool], device: torch.device, world: int) -> list[bool]:
    """Each flag true on every rank (an all-reduce MIN); the flags themselves when world == 1."""
    if world == 1:
        return list(flags)
    values = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return [bool(v) for v in values.tolist()]


class StopFlag:
    """SIGTERM/SIGINT: finish the current step, checkpoint, exit. A second signal exits at
    once; checkpoints are written atomically, so that never corrupts one. (DataLoader
    workers ignore both signals, see audiodiff.data: the main process decides.)"""

    def __init__(self, verbose: bool = True) -> None:
        self.signal: int | None = None
        self.verbose = verbose
        self._previous: dict = {}

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore(self) -> None:
        """The handlers from before install() (a loop called from a notebook or a test)."""
        for sig, handler in self._previous.items():
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
