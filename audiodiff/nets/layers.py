"""Shared U-Net building blocks for 1D (time) and 2D (mel x time) signals.

Every block takes ``dims`` (1 or 2) and picks its conv class from it, so one
definition serves both the mel-as-channels 1D net and the mel-as-image 2D net.
The design follows the "ADM" U-Net of Dhariwal & Nichol 2021 (Diffusion Models
Beat GANs on Image Synthesis), itself an extension of Ho et al. 2020.

Shape comments use ``*S`` for the spatial axes: ``[F]`` when dims=1 and
``[M, F]`` (mel bins, frames) when dims=2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d}


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv1d`` or ``nn.Conv2d``."""
    if dims not in CONV:
        raise ValueError(f"dims={dims!r} is not supported; use 1 (time only) or 2 (mel x time)")
    return CONV[dims](*args, **kwargs)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` and return it.

    Used on the last layer of each residual branch and on the output conv so
    that every block starts as the identity and the net starts at exactly 0
    (Dhariwal & Nichol 2021, appendix; Goyal et al. 2017 for the residual trick).
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``.

    Small test nets have channel counts (e.g. 12) that 8 or 32 groups do not divide;
    ``gcd`` keeps the requested grouping where it can and degrades gracefully.
    GroupNorm normalises each sample on its own, so outputs never depend on the
    other samples in the batch.
    """
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-5)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    Transformer positional encoding (Vaswani et al. 2017) applied to the diffusion
    step, as in Ho et al. 2020: ``[cos(t w_k), sin(t w_k)]`` with
    ``w_k = max_period ** (-k / half)``. Float ``t`` is fine, so continuous-time
    samplers can query between training steps.

    t: ``[B]`` (any real dtype) -> ``[B, dim]`` float32.
    """
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * w[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, 2 * half]
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, with the conditioning embedding as FiLM.

    The embedding (timestep + label) sets a per-channel scale and shift after the
    second norm, ``h = norm(h) * (1 + scale) + shift`` ("scale-shift norm",
    Dhariwal & Nichol 2021 sec. 3; FiLM, Perez et al. 2018). The second conv is
    zero-initialised so the block starts as the identity (or a 1x1 projection
    of the input when the channel count changes).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float = 0.0,
        groups: int = 32,
    ):
        super().__init__()
        self.in_layers = nn.Sequential(
            group_norm(in_channels, groups),
            nn.SiLU(),
            conv_nd(dims, in_channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = group_norm(out_channels, groups)
        self.out_layers = nn.Sequential(
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_module(conv_nd(dims, out_channels, out_channels, 3, padding=1)),
        )
        if in_channels == out_channels:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = conv_nd(dims, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, *S], emb: [B, emb_dim]
        h = self.in_layers(x)  # [B, C_out, *S]
        film = self.emb_layers(emb).to(h.dtype)  # [B, 2 * C_out]
        film = film.reshape(*film.shape, *([1] * (h.ndim - 2)))  # [B, 2 * C_out, 1(, 1)]
        scale, shift = film.chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        h = self.out_layers(h)
        return self.skip(x) + h  # [B, C_out, *S]


class Attention(nn.Module):
    """Multi-head self-attention over all positions, pre-norm, residual.

    Positions are the frames (1D) or the mel x frame pixels (2D), flattened to one
    sequence; the kernel is ``F.scaled_dot_product_attention`` (flash / memory-
    efficient on GPU). The output projection is zero-initialised so the block
    starts as the identity.
    """

    def __init__(self, channels: int, num_heads: int = 4, head_dim: int | None = None, groups: int = 32):
        super().__init__()
        if head_dim is not None:
            if channels % head_dim:
                raise ValueError(
                    f"head_dim={head_dim} does not divide the {channels} channels of an attention "
                    f"level; pick a head_dim that divides every attended width, or set num_heads instead"
                )
            num_heads = channels // head_dim
        if channels % num_heads:
            raise ValueError(
                f"num_heads={num_heads} does not divide the {channels} channels of an attention level; "
                f"pick a divisor of {channels}"
            )
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, *S = x.shape
        h = self.norm(x).reshape(B, C, -1).transpose(1, 2)  # [B, L, C], L = prod(S)
        q, k, v = self.qkv(h).reshape(B, -1, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, C / heads]
        h = self.proj(h.transpose(1, 2).reshape(B, -1, C))  # [B, L, C]
        return x + h.transpose(1, 2).reshape(B, C, *S)


class Downsample(nn.Module):
    """Halve every spatial axis with a stride-2 3x3 conv (Ho et al. 2020)."""

    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # [B, C, *S] -> [B, C, *S / 2]


class Upsample(nn.Module):
    """Double every spatial axis: nearest-neighbour upsampling then a 3x3 conv.

    Nearest + conv instead of a transposed conv avoids checkerboard artefacts
    (Odena et al. 2016).
    """

    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, C, *S * 2]
        return self.conv(x)
