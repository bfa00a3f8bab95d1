"""Samplers: pure functions  f(eps_fn, x_T, schedule, steps, *, noise=None, spacing=..., callback=None) -> x0.

eps_fn(x_t, t) -> eps takes float32 x_t [B, ...] and a long tensor t [B] of training indices; casting
to the network's dtype happens inside eps_fn (see guidance.make_eps_fn), never here: all sampler
arithmetic is float32. noise(i) -> Tensor like x_T is the fresh Gaussian noise of step i (called at
most once per step, in increasing i, only by stochastic steps); default torch.randn_like.
callback(i, n) is called after each of the n steps.

Every sampler walks the decreasing training indices from `timesteps(...)` (those <= start when
start is given: SDEdit) and, after the last one, lands on clean data (alpha_bar = 1), so each
returns an estimate of x0. ddpm_step and ddim_step are single steps, shared with the editing math.
"""
from __future__ import annotations

from typing import Callable, cast

import torch

from .objectives import to_x0
from .schedules import NoiseSchedule

SPACINGS = ("trailing", "leading", "linspace")


def timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "trailing") -> torch.Tensor:
    """Decreasing training indices, long [steps] (Lin et al. 2024, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed", Table 2).

    trailing: round(T - i*T/steps) - 1 -> starts at T-1, ends at T/steps - 1 (the default).
    leading:  i * (T // steps), reversed -> ends at 0, never reaches T-1 (DDIM's original choice).
    linspace: round(linspace(0, T-1, steps)), reversed -> covers T-1 .. 0 (steps=1 gives [0]).
    """
    T = schedule.num_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps={steps!r} is out of range: use an integer from 1 to {T} "
                         f"(the schedule's num_steps).")
    if spacing == "trailing":
        ts = (T - torch.arange(steps, dtype=torch.float64) * T / steps).round() - 1
    elif spacing == "leading":
        ts = (torch.arange(steps, dtype=torch.float64) * (T // steps)).flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().flip(0)
    else:
        raise ValueError(f"spacing={spacing!r} is not known; choose one of {SPACINGS}.")
    return ts.long()


def _alpha_bars(schedule: NoiseSchedule, ts: torch.Tensor, x: torch.Tensor):
    """alpha_bar at each visited index and at the one after it (1.0 = clean data after the last): [n], [n]."""
    alpha_bar = schedule.alpha_bar_at(ts).to(x.device)  # [n]
    alpha_bar_prev = torch.cat([alpha_bar[1:], alpha_bar.new_ones(1)])  # [n]
    return alpha_bar, alpha_bar_prev


def _t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.device, non_blocking=True).expand(x.shape[0])  # [B]; no host sync on CUDA


def ddpm_step(x: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, ab_prev: torch.Tensor,
              z: torch.Tensor | None) -> torch.Tensor:
    """One ancestral step from level ab to ab_prev (> ab), Ho et al. 2020 Alg. 2 with sigma^2 = beta~
    and respaced beta = 1 - ab / ab_prev (Nichol & Dhariwal 2021, sec. 4); z = None adds no noise."""
    alpha = ab / ab_prev  # not 1 - beta: with ab ~ 1e-9 (cosine, t = T-1) float32 1 - beta is 0
    beta = 1 - alpha
    x = (x - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()
    if z is not None:
        x = x + ((1 - ab_prev) / (1 - ab) * beta).sqrt() * z.float()
    return x


def ddim_step(x: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, ab_prev: torch.Tensor, eta: float = 0.0,
              z: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step from level ab to ab_prev, Song et al. 2021 eq. 12, sigma from eq. 16 (see ddim);
    z = None adds no noise (eta = 0, or the last step)."""
    x0 = to_x0(eps, x, ab, "eps")
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    if z is not None and eta > 0:
        x = x + sigma * z.float()
    return x


def visited(schedule: NoiseSchedule, steps: int, spacing: str = "trailing", start: int | None = None) -> torch.Tensor:
    """The training indices a sampler walks: timesteps(...), only those <= start when start is given
    (SDEdit's truncated trajectory, audiodiff.diffusion.editing.sdedit; start < 0 leaves none)."""
    ts = timesteps(schedule, steps, spacing)
    return ts if start is None else ts[ts <= start]


def ddpm(eps_fn: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
         noise: Callable | None = None, spacing: str = "trailing", callback: Callable | None = None,
         start: int | None = None) -> torch.Tensor:
    """Ancestral sampling, Ho et al. 2020 Alg. 2, with sigma_t^2 = beta~_t (the posterior variance).

    For steps < T the betas are respaced over the visited indices (Nichol & Dhariwal 2021, sec. 4):
    beta_i = 1 - alpha_bar_i / alpha_bar_prev_i. start: begin at the first index <= start (visited).
    """
    ts = visited(schedule, steps, spacing, start)
    alpha_bar, alpha_bar_prev = _alpha_bars(schedule, ts, x_T)  # [n], [n]
    x = x_T.float()  # [B, ...]
    for i, t in enumerate(ts):
        eps = eps_fn(x, _t(t, x)).float()
        last = i == len(ts) - 1  # the last step lands on x0: beta~ = 0, no noise
        z = None if last else (noise(i) if noise is not None else torch.randn_like(x))
        x = ddpm_step(x, eps, alpha_bar[i], alpha_bar_prev[i], z)
        if callback is not None:
            callback(i, len(ts))
    return x


def ddim(eps_fn: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
         noise: Callable | None = None, spacing: str = "trailing", callback: Callable | None = None,
         eta: float = 0.0, start: int | None = None) -> torch.Tensor:
    """DDIM, Song et al. 2021 eq. 12 (eta=0: deterministic; eta=1: DDPM-like ancestral), sigma from eq. 16:

    x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev). start: as in ddpm.
    """
    ts = visited(schedule, steps, spacing, start)
    alpha_bar, alpha_bar_prev = _alpha_bars(schedule, ts, x_T)  # [n], [n]
    x = x_T.float()  # [B, ...]
    for i, t in enumerate(ts):
        eps = eps_fn(x, _t(t, x)).float()
        noisy = eta > 0 and i < len(ts) - 1  # sigma = 0 on the last step
        z = (noise(i) if noise is not None else torch.randn_like(x)) if noisy else None
        x = ddim_step(x, eps, alpha_bar[i], alpha_bar_prev[i], eta, z)
        if callback is not None:
            callback(i, len(ts))
    return x


def dpmpp_2m(eps_fn: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
             noise: Callable | None = None, spacing: str = "trailing",
             callback: Callable | None = None, start: int | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 Alg. 2: multistep second order in the data prediction x0_hat,
    with lambda = log(alpha / sigma), alpha = sqrt(ab), sigma = sqrt(1 - ab). Deterministic (noise unused).

    The first step is first order (no previous x0_hat). The last step lands on sigma = 0 where
    lambda = inf, so it is first order too (the lower-order-final trick, which also keeps few-step
    sampling stable): x = x0_hat. Prefer trailing spacing: linspace/leading end with a long step into
    t = 0 (step ratio r ~ 0.2) where the extrapolation overshoots (Gaussian test: var 0.48 for 0.25 at 10 steps).
    start: as in ddpm.
    """
    ts = visited(schedule, steps, spacing, start)
    log_snr = schedule.log_snr_at(ts).to(x_T.device)  # [n], from the float64 table: precise near t = 0
    alpha, sigma = torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()  # [n], [n]
    lam = 0.5 * log_snr  # [n]
    x = x_T.float()  # [B, ...]
    x0_last, h_last = None, None
    for i, t in enumerate(ts):
        x0 = to_x0(eps_fn(x, _t(t, x)).float(), x, alpha[i] ** 2, "eps")
        if i == len(ts) - 1:
            x = x0
        else:
            h = lam[i + 1] - lam[i]
            # D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h_i
            D = x0 if x0_last is None else x0 + (h / (2 * cast(torch.Tensor, h_last))) * (x0 - x0_last)
            x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * torch.expm1(-h) * D
            x0_last, h_last = x0, h
        if callback is not None:
            callback(i, len(ts))
    return x


SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "dpmpp": dpmpp_2m}


def get_sampler(name: str) -> Callable:
    """The sampler function registered under `name` (one of SAMPLERS)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r} is not known; choose one of {sorted(SAMPLERS)}.")
    return SAMPLERS[name]


def per_sample_noise(generators: list[torch.Generator], like: torch.Tensor) -> Callable[[int], torch.Tensor]:
    """noise(i) drawing each sample's noise from its own generator, so a sample's result does not
    depend on the batch it is drawn in. Draws happen in call order; samplers call noise(i) in
    increasing i, at most once per step. like: a tensor [B, ...] giving shape/dtype/device."""
    if len(generators) != like.shape[0]:
        raise ValueError(f"per_sample_noise got {len(generators)} generators for a batch of {like.shape[0]}; "
                         f"pass one generator per sample.")

    def noise(i: int) -> torch.Tensor:
        # non_blocking: a CPU -> CUDA copy from pageable memory is staged at once, with no wait for
        # the GPU's queue (a plain .to() would sync the host on every step)
        return torch.stack([torch.randn(like.shape[1:], generator=g, device=g.device, dtype=torch.float32)
                            for g in generators]).to(like.device, non_blocking=True)
    return noise
