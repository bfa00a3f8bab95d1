"""Noise schedules: the forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

Timesteps are training indices t = 0 .. T-1 with alpha_bar[t] = prod_{s <= t} (1 - beta[s]),
so t = 0 is the least noisy training step and t = T-1 the noisiest. "Clean data" (alpha_bar = 1)
is not a training index; samplers land on it after their last step.
"""
from __future__ import annotations

import math

import torch

SCHEDULE_KINDS = ("linear", "cosine")


class NoiseSchedule:
    """Discrete-time variance schedule (betas, alphas, alpha_bar, each float32 [T]).

    kind="linear": beta linear from beta_start to beta_end (Ho et al. 2020, 1e-4 .. 0.02, T=1000).
    kind="cosine": alpha_bar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2, betas clipped
    at 0.999 (Nichol & Dhariwal 2021, eq. 17). Computed in float64, stored as float32.
    """

    def __init__(self, kind: str = "linear", num_steps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, cosine_s: float = 0.008):
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"NoiseSchedule kind={kind!r} is not known; choose one of {SCHEDULE_KINDS}.")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"NoiseSchedule num_steps={num_steps!r} must be an integer >= 1 (e.g. 1000).")
        self.kind, self.num_steps = kind, num_steps
        self.beta_start, self.beta_end, self.cosine_s = beta_start, beta_end, cosine_s
        T = num_steps
        if kind == "linear":
            if not 0.0 < beta_start <= beta_end < 1.0:
                raise ValueError(f"linear schedule needs 0 < beta_start <= beta_end < 1, got "
                                 f"beta_start={beta_start}, beta_end={beta_end}.")
            betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)  # [T]
        else:
            steps = torch.arange(T + 1, dtype=torch.float64) / T  # [T+1]
            f = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
            alpha_bar = f / f[0]
            betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)  # [T]
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        # log-SNR from float64, so that t near 0 (1 - alpha_bar ~ 1e-4) keeps its precision.
        log_snr = torch.log(alpha_bar) - torch.log1p(-alpha_bar)
        self.betas = betas.float()  # [T]
        self.alphas = alphas.float()  # [T]
        self.alpha_bar = alpha_bar.float()  # [T]
        self.log_snr = log_snr.float()  # [T]

    def __repr__(self) -> str:
        return f"NoiseSchedule(kind={self.kind!r}, num_steps={self.num_steps})"

    def to(self, device) -> "NoiseSchedule":
        """Move the tables to `device` (in place; returns self)."""
        for name in ("betas", "alphas", "alpha_bar", "log_snr"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def log_snr_at(self, t) -> torch.Tensor:
        """log(alpha_bar / (1 - alpha_bar)) at training index t (int, float or tensor) -> float32, t's shape.

        Integer t is a table look-up. Fractional t interpolates linearly in log-SNR between the two
        neighbouring indices, so the derived alpha_bar stays in (0, 1) and is monotone in t.
        t is clamped to [0, T-1].
        """
        t = torch.as_tensor(t)
        device = t.device
        t = t.to(self.log_snr.device)
        if not t.is_floating_point():
            return self.log_snr[t.long().clamp(0, self.num_steps - 1)].to(device)
        t = t.float().clamp(0, self.num_steps - 1)
        i0 = t.floor().long()
        i1 = (i0 + 1).clamp(max=self.num_steps - 1)
        w = t - i0
        return ((1 - w) * self.log_snr[i0] + w * self.log_snr[i1]).to(device)

    def alpha_bar_at(self, t) -> torch.Tensor:
        """alpha_bar at training index t (int, float or tensor of any shape) -> float32, t's shape and device.

        Integer t: the table entry. Fractional t: sigmoid of the log-SNR interpolation (see log_snr_at).
        """
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            idx = t.to(self.alpha_bar.device).long().clamp(0, self.num_steps - 1)
            return self.alpha_bar[idx].to(t.device)
        return torch.sigmoid(self.log_snr_at(t))

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at training index t (float32, t's shape)."""
        return torch.exp(self.log_snr_at(t))
