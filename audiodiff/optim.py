"""Optimiser helpers shared by the training loops: learning-rate schedule, EMA, the optimiser.

Mirrors recipes/optim/: the config names an optimiser class and its kwargs; these helpers add
what every loop does the same way.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def warmup_cosine(warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0):
    """LambdaLR factor of the step index i (0-based): linear warmup to 1 over warmup_steps, then
    cosine decay to min_lr_ratio at max_steps (Loshchilov & Hutter 2017)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def ema_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of `net` to hold its exponential moving average."""
    return copy.deepcopy(net).requires_grad_(False)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter; buffers are copied."""
    e: list[torch.Tensor] = list(ema.parameters())
    torch._foreach_lerp_(e, [p.detach().to(q.dtype) for p, q in zip(model.parameters(), e)], 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def optimizer_kwargs(config: dict, device: torch.device) -> dict:
    """The optimiser config with the fused AdamW kernel switched on for CUDA."""
    kwargs = dict(config)
    if device.type == "cuda" and kwargs.get("_target_") == "torch.optim.AdamW":
        kwargs["fused"] = True
    return kwargs
