"""The fast sampling path: what `AudioDiffusionPipeline` does differently when `pipe.fast` is on.

`pipe.fast` is True by default; `pipe.fast = False` gives the plain eager path, and
`pipe.fast = "compile"` adds torch.compile. Results match the plain path to float rounding
(tests/test_fast.py); benchmarks/RESULTS.md has the measurements behind each choice.

On CUDA:
  - bf16 autocast at the network boundary, float32 sampler arithmetic (the pipeline's
    precision="auto"); autocast runs with cache_enabled=False, which CUDA graph capture needs
    and which costs nothing here (each weight is cast once per forward either way).
  - 2D nets keep their conv weights channels_last (NHWC, cuDNN's native bf16 layout), so
    every conv activation stays NHWC.
  - The denoiser step (net forward, prediction-type conversion, classifier-free guidance) is
    captured once in a CUDA graph per (batch shape, labels, guidance, precision, weights) and
    replayed at every sampler step: one launch per step instead of a few hundred, and no host
    sync inside the step (the U-Net's label range check, a device-to-host read, runs on the
    first call only: `UNet.label_check`). Graphs are cached on the pipeline (`GRAPH_CACHE_SIZE`
    shapes), so repeated calls with the same batch shape pay the capture once.
  - Attention goes through `F.scaled_dot_product_attention`, which picks the flash kernel for
    bf16 inputs: `layers.Attention` hands it q, k, v as [B, heads, L, head_dim] views of the
    packed qkv projection with unit last-dim stride, which flash attention takes without a copy
    (benchmarks/gpu_check.sh verifies the kernel choice).
  - Optionally ("compile") the net is torch.compile'd (Inductor fusions) before capture.
On the CPU: eager under inference_mode, with ONE intra-op thread when a net call is small
  (`SMALL_CALL_FLOPS`): such ops take tens of microseconds, too little for splitting them across
  cores to pay for the fork/join, and on a shared machine a join waits for a descheduled thread
  (measured on 2 shared cores, load average 7-10: a 1 s clip from the digits_cpu net,
  DPM-Solver++ 25 steps + Griffin-Lim 32, 0.18-0.39 s with one thread against 1.6-6.3 s with two).
  `AUDIODIFF_CPU_THREADS=N` fixes the thread count instead.

The training fast path (bf16 autocast, channels_last, fused AdamW, optional torch.compile) lives
in `audiodiff.train`; benchmarks/train_throughput.py measures it.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections import OrderedDict
from typing import Callable

import torch

from .diffusion.guidance import make_eps_fn

MODES = ("graph", "compile", "eager")
# A net call below this many FLOPs runs on one CPU thread (digits_cpu: 0.12 GFLOP per clip).
SMALL_CALL_FLOPS = 2e9
# CUDA graphs kept per pipeline (each holds the activation memory of one batch shape).
GRAPH_CACHE_SIZE = 4


def resolve_mode(fast, device: torch.device) -> str:
    """`pipe.fast` (True, False, "graph", "compile", "eager") -> the mode used on `device`."""
    if fast is True or fast == "auto":
        fast = "graph"
    elif fast is False or fast is None or fast == "off":
        fast = "eager"
    if fast not in MODES:
        raise ValueError(f"fast={fast!r} is not one of True, False, {', '.join(MODES)}")
    # CUDA graphs and the compiled net are CUDA-only; the CPU path is eager (plus the thread policy).
    return fast if torch.device(device).type == "cuda" else "eager"


# --------------------------------------------------------------------------- CPU threads

def cpu_threads_for(flops_per_call: float | None) -> int | None:
    """Intra-op threads for a CPU call of `flops_per_call` FLOPs; None = leave torch's setting.

    AUDIODIFF_CPU_THREADS=N (N >= 1) fixes the answer; otherwise one thread below SMALL_CALL_FLOPS.
    """
    env = os.environ.get("AUDIODIFF_CPU_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"AUDIODIFF_CPU_THREADS={env!r} must be a whole number >= 1 (or unset)")
        return int(env)
    if flops_per_call is not None and flops_per_call < SMALL_CALL_FLOPS:
        return 1
    return None


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with `n` intra-op threads (None: unchanged), restoring the old count after."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def net_forward_flops(net: torch.nn.Module, n_mels: int, n_frames: int) -> float | None:
    """Approximate forward FLOPs per sample of `net` at [n_mels, n_frames] (convolutions and linear
    layers: 2 x weights x output positions), from one batch-1 forward with hooks (milliseconds on
    the CPU; `nets.unet.forward_flops` is exact but its first call costs seconds), cached on the
    net per shape. Attention score FLOPs are left out; None if the net cannot be run that way."""
    cache = net.__dict__.setdefault("_audiodiff_flops", {})
    key = (int(n_mels), int(n_frames))
    if key in cache:
        return cache[key]
    total = 0.0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Linear):
            total += 2.0 * module.weight.numel() * (output.numel() // output.shape[-1])
        else:  # ConvNd: output [1, C_out, *S]
            total += 2.0 * module.weight.numel() * output[0, 0].numel()

    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, layers)]
    try:
        param = next(net.parameters())
        x = torch.zeros(1, n_mels, n_frames, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            net(x, torch.zeros(1, dtype=torch.long, device=param.device))
    except Exception:  # a net of another signature: no estimate, no thread policy
        return None
    finally:
        for h in hooks:
            h.remove()
    cache[key] = total
    return total


def griffinlim_flops(vocoder, batch: int, n_frames: int) -> float | None:
    """Rough FLOPs of one Griffin-Lim call: an STFT and an inverse STFT per iteration, 2.5 N log2 N
    per real FFT of size N. None for other vocoders."""
    n_iter, config = getattr(vocoder, "n_iter", None), getattr(vocoder, "audio_config", None)
    if getattr(vocoder, "name", None) != "griffinlim" or n_iter is None or config is None:
        return None
    n_fft = config.n_fft
    return batch * n_iter * 2 * n_frames * 2.5 * n_fft * math.log2(n_fft)


# --------------------------------------------------------------------------- CUDA

def prepare_net(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """On CUDA, store a 2D net's weights channels_last (in place; idempotent). Returns net."""
    if torch.device(device).type == "cuda" and getattr(net, "dims", None) == 2:
        conv = next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)
        if conv is not None and not conv.weight.is_contiguous(memory_format=torch.channels_last):
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stub
    return net


def bf16_eps_fn(eps_fn: Callable, device_type: str) -> Callable:
    """eps_fn under bf16 autocast at the network boundary; returns float32."""
    def wrapped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # cache_enabled=False: CUDA graph capture must not keep autocast's cast-weight cache.
        with torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False):
            return eps_fn(x, t).float()
    return wrapped


class DenoiserGraph:
    """eps_fn(x, t) captured once in a CUDA graph and replayed for each call.

    x_like fixes the shape, dtype and device of x; t is a long [B] tensor. A call whose x or t
    does not fit the captured shapes runs eps_fn eagerly. The result is a fresh tensor (a copy
    of the graph's static output), so callers may keep it across steps.
    """

    def __init__(self, eps_fn: Callable, x_like: torch.Tensor, warmup: int = 3):
        if x_like.device.type != "cuda":
            raise ValueError(f"DenoiserGraph needs a CUDA tensor, got one on {x_like.device}; "
                             "call eps_fn directly on other devices")
        self.eps_fn = eps_fn
        device = x_like.device
        self.x = torch.zeros_like(x_like)  # [B, ...]
        self.t = torch.zeros(x_like.shape[0], dtype=torch.long, device=device)  # [B]
        # Warm up on a side stream (cuDNN/cuBLAS choose algorithms and allocate workspaces,
        # lazy modules initialise), then capture; the documented CUDA graph recipe.
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                eps_fn(self.x, self.t)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = eps_fn(self.x, self.t)

    def fits(self, x: torch.Tensor, t: torch.Tensor) -> bool:
        return (x.shape == self.x.shape and x.dtype == self.x.dtype and x.device == self.x.device
                and t.shape == self.t.shape and t.device == self.t.device
                and not t.dtype.is_floating_point)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.fits(x, t):
            return self.eps_fn(x, t)
        self.x.copy_(x)
        self.t.copy_(t)
        self.graph.replay()
        return self.out.clone()


def _storage_key(tensors) -> tuple:
    return tuple((t.data_ptr(), tuple(t.shape), t.dtype) for t in tensors)


def graphed_eps_fn(cache: OrderedDict, net, schedule, prediction: str, x_like: torch.Tensor,
                   labels: torch.Tensor | None, guidance_scale: float, null_label: int | None,
                   bf16: bool, mode: str = "graph", guidance_interval: tuple[float, float] | None = None) -> Callable:
    """A cached DenoiserGraph of the pipeline's eps_fn for this request (see the module docstring).

    cache: the pipeline's OrderedDict of graphs. The key holds everything a graph bakes in: the
    batch shape, labels present or not, the guidance scale and interval, the precision, the prediction type and
    the addresses of the weights and schedule tables (moving or replacing them captures anew;
    updating them in place is seen by the graph). Label values are copied in per call.
    """
    if mode not in ("graph", "compile"):
        raise ValueError(f"graphed_eps_fn: mode={mode!r} must be graph or compile")
    tables = [v for v in vars(schedule).values() if isinstance(v, torch.Tensor)]
    key = (tuple(x_like.shape), x_like.dtype, str(x_like.device), None if labels is None else tuple(labels.shape),
           float(guidance_scale), guidance_interval, null_label, prediction, bool(bf16), mode, id(net),
           _storage_key(net.parameters()), _storage_key(net.buffers()), _storage_key(tables))
    entry = cache.get(key)
    if entry is None:
        runner = net
        if mode == "compile":
            compiled = cache.setdefault(("compiled", id(net)), torch.compile(net, dynamic=False))
            runner = compiled
        static_labels = None if labels is None else labels.clone()
        eps_fn = make_eps_fn(runner, schedule, prediction, labels=static_labels, guidance_scale=guidance_scale,
                             null_label=null_label, guidance_interval=guidance_interval)
        if bf16:
            eps_fn = bf16_eps_fn(eps_fn, x_like.device.type)
        try:
            runner = DenoiserGraph(eps_fn, x_like)
        except Exception as e:  # an op that cannot be captured: sample eagerly, say so once per key
            warnings.warn(f"audiodiff.fast: CUDA graph capture failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); sampling eagerly. Set "
                          f"pipe.fast = False to skip the attempt")
            runner = eps_fn
        entry = (runner, static_labels)
        cache[key] = entry
        graphs = [k for k in cache if k[0] != "compiled"]
        while len(graphs) > GRAPH_CACHE_SIZE:
            del cache[graphs.pop(0)]
    else:
        cache.move_to_end(key)
    runner, static_labels = entry
    if labels is not None:
        assert static_labels is not None  # the key holds the labels' shape, so this entry cloned them
        static_labels.copy_(labels)
    return runner
