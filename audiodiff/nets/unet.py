"""The diffusion U-Net on log-mel spectrograms, 1D or 2D.

``UNet(dims=2)`` treats the mel spectrogram as a one-channel image ``[1, M, F]``
and convolves over mel bins and frames (Grad-TTS, Popov et al. 2021, and the
image-style audio-diffusion models). ``UNet(dims=1)`` treats the mel bins as
channels and convolves over time only (as DiffSinger's denoiser does), which is
far cheaper per parameter and the right choice on a CPU.

Both take and return ``[B, n_mels, F]``. The layout is the ADM U-Net of Dhariwal &
Nichol 2021: residual blocks with scale-shift conditioning, self-attention at
chosen resolutions and in the middle, one skip per down-path block, and a
zero-initialised output conv so an untrained net outputs exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .layers import Attention, Downsample, ResBlock, Upsample, conv_nd, group_norm, timestep_embedding, zero_module

# Named sizes, so that recipes (recipes/net/*.yaml) and benchmarks build the same nets:
# ``UNet(**PRESETS[name])`` or ``from_preset(name)``. Parameter counts and forward
# GFLOPs per sample at PRESET_INPUTS are printed by ``python benchmarks/net_report.py``.
PRESETS: dict[str, dict] = {
    # GPU net for spoken digits, 80 mels x 88 frames (1 s at 22,050 Hz, hop 256):
    # 23.0 M params, 26.6 GFLOPs per forward. The bottom level is 10 x 11.
    "digits": dict(
        dims=2, n_mels=80, base_channels=64, channel_mults=(1, 2, 3, 4), num_res_blocks=2,
        attention_levels=(2, 3), head_dim=32, dropout=0.1, num_classes=10, groups=32,
    ),
    # Mel-as-channels net that two CPU cores train in about an hour: 2.2 M params,
    # 0.12 GFLOPs per forward. Full-resolution width = n_mels, so no bottleneck at the output.
    "digits_cpu": dict(
        dims=1, n_mels=80, base_channels=80, channel_mults=(1, 1, 1), num_res_blocks=2,
        attention_levels=(2,), head_dim=40, dropout=0.0, num_classes=10, groups=8,
    ),
    # Tiny net for smoke tests (30 k params): hundreds of CPU steps in well under a minute.
    "smoke": dict(
        dims=1, n_mels=80, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
        attention_levels=(1,), num_heads=2, dropout=0.0, num_classes=10, groups=4,
    ),
    # The diffusers audio-diffusion UNet2DModel (teticio/audio-diffusion-256: 113.7 M
    # params on 1 x 256 x 256, block_out_channels (128, 128, 256, 256, 512, 512), 2 layers
    # per block, attention at the 16 x 16 level down and up, and in the middle), same
    # widths, depth and attention: 118.8 M params (scale-shift conditioning adds 5 M),
    # 496 GFLOPs per forward, equal to the peer's to 0.01 %.
    "peer": dict(
        dims=2, n_mels=256, base_channels=128, channel_mults=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
        attention_levels=(4,), head_dim=64, dropout=0.0, num_classes=0, groups=32,
    ),
}

# The natural input (n_mels, frames) of each preset, for benchmarks and reports.
PRESET_INPUTS: dict[str, tuple[int, int]] = {
    "digits": (80, 88),
    "digits_cpu": (80, 88),
    "smoke": (80, 88),
    "peer": (256, 256),
}


class UNet(nn.Module):
    """Denoising U-Net on (standardised) log-mels ``[B, n_mels, F]``.

    Args:
        dims: 2 = mel spectrogram as a 1-channel image; 1 = mel bins as channels.
        n_mels: mel bins. Fixes the channel count when dims=1; dims=2 accepts any.
        base_channels: width of the first level.
        channel_mults: width multiplier per level; the net has ``len(channel_mults)``
            levels and downsamples ``len - 1`` times.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_levels: level indices (into ``channel_mults``) with self-attention.
            The middle block always has attention.
        num_heads: attention heads, unless ``head_dim`` is given.
        head_dim: channels per head; overrides ``num_heads`` (heads = width / head_dim).
        dropout: dropout inside the residual blocks.
        num_classes: 0 = unconditional. Otherwise labels are ``0..num_classes``, where
            ``num_classes`` itself is the null label used for classifier-free guidance.
        groups: GroupNorm groups (reduced to a divisor of the width where needed).
        use_checkpoint: gradient checkpointing per block (less memory, ~30% more time).

    Attribute ``label_check`` ("auto", "always", "never") says when label values are
    range-checked; "auto" checks CPU labels every call and accelerator labels on the first
    call only (the check is a host sync). See ``audiodiff.fast`` for the GPU fast path.
    """

    def __init__(
        self,
        dims: int = 2,
        n_mels: int = 80,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (2,),
        num_heads: int = 4,
        head_dim: int | None = None,
        dropout: float = 0.0,
        num_classes: int = 0,
        groups: int = 8,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        attention_levels = tuple(int(i) for i in attention_levels)
        if dims not in (1, 2):
            raise ValueError(f"dims={dims!r} is not supported; use 1 (mel bins as channels) or 2 (mel as image)")
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(f"channel_mults={channel_mults} must be a non-empty list of positive integers")
        bad = [i for i in attention_levels if not 0 <= i < len(channel_mults)]
        if bad:
            raise ValueError(
                f"attention_levels {bad} are out of range: levels are 0..{len(channel_mults) - 1} "
                f"(indices into channel_mults={channel_mults})"
            )
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes} must be >= 0 (0 = unconditional)")
        # Plain copy of the constructor arguments, for save_pretrained and reports.
        self.config = dict(
            dims=dims, n_mels=n_mels, base_channels=base_channels, channel_mults=list(channel_mults),
            num_res_blocks=num_res_blocks, attention_levels=list(attention_levels), num_heads=num_heads,
            head_dim=head_dim, dropout=dropout, num_classes=num_classes, groups=groups,
            use_checkpoint=use_checkpoint,
        )
        self.dims = dims
        self.n_mels = n_mels
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint
        self.pad_multiple = 2 ** (len(channel_mults) - 1)

        in_channels = n_mels if dims == 1 else 1
        emb_dim = 4 * base_channels

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(dims, c_in, c_out, emb_dim, dropout, groups)

        def attn(c: int) -> Attention:
            return Attention(c, num_heads, head_dim, groups)

        # Timestep and label embeddings, summed (Ho et al. 2020; Dhariwal & Nichol 2021).
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # Row num_classes is the learned null label (Ho & Salimans 2022, classifier-free guidance).
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

        # Down path: every block's output is a skip for the up path.
        ch = base_channels
        self.input_conv = conv_nd(dims, in_channels, ch, 3, padding=1)
        skip_channels = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                block: list[nn.Module] = [res(ch, mult * base_channels)]
                ch = mult * base_channels
                if level in attention_levels:
                    block.append(attn(ch))
                self.down.append(nn.ModuleList(block))
                skip_channels.append(ch)
            if level != len(channel_mults) - 1:
                self.down.append(nn.ModuleList([Downsample(dims, ch)]))
                skip_channels.append(ch)

        self.middle = nn.ModuleList([res(ch, ch), attn(ch), res(ch, ch)])

        # Up path: one more block per level than the down path, to consume every skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(num_res_blocks + 1):
                block = [res(ch + skip_channels.pop(), mult * base_channels)]
                ch = mult * base_channels
                if level in attention_levels:
                    block.append(attn(ch))
                if level > 0 and i == num_res_blocks:
                    block.append(Upsample(dims, ch))
                self.up.append(nn.ModuleList(block))

        self.out = nn.Sequential(
            group_norm(ch, groups), nn.SiLU(), zero_module(conv_nd(dims, ch, in_channels, 3, padding=1))
        )

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (optionally only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _run(self, block: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        def fn(h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            return h

        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(fn, h, emb, use_reentrant=False)
        return fn(h, emb)

    def _embed(self, t: torch.Tensor, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0 or t.numel() == 1:
            t = t.reshape(1).expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t has shape {tuple(t.shape)}; expected [{batch}] (one timestep per example) or a scalar")
        first = cast(nn.Linear, self.time_mlp[0])
        dtype = first.weight.dtype
        emb = self.time_mlp(timestep_embedding(t, first.in_features).to(dtype))  # [B, emb_dim]

        if labels is None:
            if self.label_emb is None:
                return emb
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        else:
            self._check_labels(labels, batch, device)
        if self.label_emb is None:
            return emb  # unconditional net: only the null label (0) reaches here
        return emb + self.label_emb(torch.as_tensor(labels, device=device).long()).to(emb.dtype)

    # When label values are range-checked: "auto" (every call for CPU labels; on an accelerator
    # only the first call, since reading values back is a host sync that stalls every training
    # or sampling step, and is illegal inside CUDA graph capture), "always" or "never". The
    # pipeline checks labels on the host and training data are checked against num_classes, so
    # those callers lose nothing. Shape and dtype are always checked (free).
    label_check: str = "auto"
    _device_labels_checked: bool = False

    def _check_labels(self, labels: torch.Tensor, batch: int, device) -> None:
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (batch,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"labels must be an integer tensor of shape [{batch}]; got {labels.dtype} {tuple(labels.shape)}"
            )
        if self.label_check not in ("auto", "always", "never"):
            raise ValueError(f"label_check={self.label_check!r} is not one of auto, always, never")
        # The range check reads values: skip it while torch.compile traces, on the meta device
        # (shape-only runs such as FLOP counting) and while a CUDA graph is being captured.
        if self.label_check == "never" or labels.device.type == "meta" or torch.compiler.is_compiling():
            return
        if labels.device.type != "cpu":
            if labels.is_cuda and torch.cuda.is_current_stream_capturing():
                return
            if self.label_check == "auto" and self._device_labels_checked:
                return
        bad = labels[(labels < 0) | (labels > self.num_classes)]
        if bad.numel():
            raise ValueError(
                f"label {int(bad[0])} is out of range: this net takes labels 0..{self.num_classes - 1} "
                f"and {self.num_classes} for 'no label' (num_classes={self.num_classes})"
                if self.num_classes
                else f"label {int(bad[0])} given to an unconditional net (num_classes=0); "
                f"pass labels=None, or build the net with num_classes > 0"
            )
        if labels.device.type != "cpu":
            self._device_labels_checked = True

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the network target (v in the shipped recipes; eps, x0) for noisy states ``x`` at steps ``t``.

        x: ``[B, n_mels, F]`` noisy normalised log-mel, any F >= 1.
        t: ``[B]`` timesteps in training-index units (0..T-1), int or float.
        labels: ``[B]`` long in ``0..num_classes`` (``num_classes`` = null), or None
            (all null on a conditional net).
        Returns ``[B, n_mels, F]``.
        """
        if x.ndim != 3:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected [batch, n_mels, frames]")
        B, M, n_frames = x.shape
        if self.dims == 1 and M != self.n_mels:
            raise ValueError(
                f"x has {M} mel bins but this dims=1 net was built for n_mels={self.n_mels}; "
                f"rebuild it with n_mels={M} or check the audio config"
            )
        emb = self._embed(t, labels, B, x.device)

        # Pad the downsampled axes up to a multiple of 2**(levels - 1) so every
        # skip lines up with its upsampled partner; crop back at the end.
        h = x if self.dims == 1 else x.unsqueeze(1)  # [B, n_mels, F] or [B, 1, M, F]
        sizes = h.shape[2:]
        pads = [-n % self.pad_multiple for n in sizes]
        if any(pads):
            # Reflection keeps the padding statistically like the input; it needs pad < size.
            mode = "reflect" if all(p < n for p, n in zip(pads, sizes)) else "replicate"
            h = F.pad(h, [v for p in reversed(pads) for v in (0, p)], mode=mode)

        h = self.input_conv(h)  # [B, base_channels, *S]
        skips = [h]
        for block in self.down:
            h = self._run(cast(nn.ModuleList, block), h, emb)
            skips.append(h)
        h = self._run(self.middle, h, emb)
        for block in self.up:
            h = self._run(cast(nn.ModuleList, block), torch.cat([h, skips.pop()], dim=1), emb)
        h = self.out(h)  # [B, n_mels, F'] or [B, 1, M', F']

        h = h[(..., *(slice(0, n) for n in sizes))]  # crop the padding
        return h if self.dims == 1 else h.squeeze(1)  # [B, n_mels, F]


def from_preset(name: str, **overrides) -> UNet:
    """Build ``UNet(**PRESETS[name], **overrides)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown UNet preset {name!r}; choose one of {sorted(PRESETS)}")
    return UNet(**{**PRESETS[name], **overrides})


def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts attention on the CPU.

    PyTorch registers FLOP formulas for the GPU attention kernels only; the CPU
    kernel gets the same formula here. Works on the meta device (shapes only).
    """
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}
    return FlopCounterMode(display=False, custom_mapping=cpu_attention)


def forward_flops(net: UNet, n_frames: int, batch: int = 1, n_mels: int | None = None) -> int:
    """Forward-pass FLOPs per sample (multiply-add = 2 FLOPs) at ``[n_mels, n_frames]``.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` on a real forward
    pass (convs, matmuls and attention; norms and activations are not counted).
    ``n_mels`` defaults to ``net.n_mels``. A net built under ``torch.device("meta")``
    is counted in a fraction of a second without allocating weights.
    """
    n_mels = net.n_mels if n_mels is None else n_mels
    param = next(net.parameters())
    x = torch.zeros(batch, n_mels, n_frames, device=param.device, dtype=param.dtype)
    t = torch.zeros(batch, device=param.device)
    with torch.no_grad(), flop_counter() as counter:
        net(x, t)
    return math.ceil(counter.get_total_flops() / batch)
