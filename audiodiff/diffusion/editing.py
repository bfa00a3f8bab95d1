"""Editing math: pure functions over eps_fn, beside the samplers, so the same code runs on a trained
net and on an analytic denoiser (tests/edit_oracle.py).

    sdedit        variation: noise the input to a strength in [0, 1] and run any sampler from there
    repaint       inpainting: fresh-noise replacement of the kept cells at every level, with resampling
    ddim_invert   encode: the deterministic DDIM trajectory run backwards, with fixed-point refinement
    slerp         per-item spherical interpolation of Gaussian noises
    window_eps_fn long and looping audio: MultiDiffusion (tapered weights, optionally circular) as an
                  eps_fn wrapper, so it composes with every sampler and with guidance

Masks are True where the output is generated and False where the input is kept; they broadcast
against the state [B, ...] (a time mask [B, 1, F] or a time-frequency mask [B, n_mels, F]).
Measured against the ideal Gaussian denoiser (../shared/editing-spec.md section 6; the acceptance
checks of its section 8.4 are tests/test_editing.py).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .samplers import _alpha_bars, _t, ddim_step, ddpm_step, get_sampler, timesteps, visited
from .schedules import NoiseSchedule

REPAINT_SAMPLERS = ("ddpm", "ddim")
WEIGHTS = ("triangular", "uniform")


def strength_start(schedule: NoiseSchedule, strength: float) -> int:
    """The highest training index an SDEdit of `strength` runs from: round(strength T) - 1 (-1: none).
    strength is the fraction of the T training steps, from 0 (the input) to 1 (fresh noise)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength!r} must be a number from 0 (keep the input) to 1 (fresh noise)")
    return round(float(strength) * schedule.num_steps) - 1


def sdedit(eps_fn: Callable, x0: torch.Tensor, schedule: NoiseSchedule, steps: int, strength: float,
           z: torch.Tensor, *, sampler: str = "ddim", noise: Callable | None = None,
           spacing: str = "trailing", callback: Callable | None = None, **kwargs) -> torch.Tensor:
    """SDEdit (Meng et al. 2021): x_t0 = sqrt(ab) x0 + sqrt(1 - ab) z at the first of the sampler's
    indices <= round(strength T) - 1, then the sampler from there. z [B, ...] is the starting noise.

    strength 0 (or one below the sampler's smallest index) returns x0 unchanged; strength 1 starts
    from z itself, so it is plain sampling from z bit for bit.
    """
    start = strength_start(schedule, strength)
    ts = visited(schedule, steps, spacing, start)
    if len(ts) == 0:
        return x0.float().clone()
    if start == schedule.num_steps - 1:
        x_t = z.float()
    else:
        ab = schedule.alpha_bar_at(ts[0]).to(x0.device)
        x_t = ab.sqrt() * x0.float() + (1 - ab).sqrt() * z.float()
    return get_sampler(sampler)(eps_fn, x_t, schedule, steps, noise=noise, spacing=spacing, callback=callback,
                                start=start, **kwargs)


def repaint_plan(n: int, resample: int = 5, jump: int = 1) -> list[int]:
    """The positions RePaint visits, 0 = x_T .. n = clean (Lugmayr et al. 2022, get_schedule_jump):
    down one step at a time; at every `jump`-th position above the clean end, go back up `jump`
    positions and down again, resample - 1 times."""
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample={resample!r} must be a whole number >= 1 (1 = no resampling)")
    if isinstance(jump, bool) or not isinstance(jump, int) or jump < 1:
        raise ValueError(f"jump={jump!r} must be a whole number >= 1")
    plan, k, done = [0], 0, [0] * (n + 1)
    while k < n:
        k += 1
        plan.append(k)
        if k < n and k % jump == 0 and done[k] < resample - 1:
            done[k] += 1
            k -= jump  # one move up: q(x_{k - jump} | x_k) is a single Gaussian step
            plan.append(k)
    return plan


def repaint(eps_fn: Callable, known: torch.Tensor, mask: torch.Tensor, schedule: NoiseSchedule, steps: int,
            x_T: torch.Tensor, *, sampler: str = "ddpm", resample: int = 5, jump: int = 1, eta: float = 0.0,
            noise: Callable | None = None, spacing: str = "trailing",
            callback: Callable | None = None) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022): before every reverse step at level ab, the kept cells (mask False)
    become sqrt(ab) known + sqrt(1 - ab) z with fresh z; every `jump` steps the state goes back up
    `jump` steps through q(x_t | x_s), resample - 1 times, so the generated cells harmonise with the
    kept ones (resample 1 is plain replacement: measurably worse, tests/test_editing.py).

    sampler: "ddpm" (ancestral) or "ddim" (with eta; 0 is deterministic between replacements). DPM-Solver++ is refused:
    replacing cells breaks its multistep history. The result keeps `known` exactly where mask is False.
    Network evaluations: the downward moves of repaint_plan(steps, resample, jump), about steps x resample.
    """
    if sampler not in REPAINT_SAMPLERS:
        raise ValueError(f"sampler={sampler!r} cannot inpaint (a replacement breaks a multistep solver's "
                         f"history); use one of {', '.join(REPAINT_SAMPLERS)}")
    ts = timesteps(schedule, steps, spacing)
    n = len(ts)
    alpha_bar, alpha_bar_prev = _alpha_bars(schedule, ts, x_T)  # [n], [n]
    levels = torch.cat([alpha_bar, alpha_bar.new_ones(1)])  # [n + 1]: position k's alpha_bar
    keep = ~mask.to(x_T.device, torch.bool)
    known = known.float()
    draws = 0

    def fresh() -> torch.Tensor:
        nonlocal draws
        draws += 1
        return (noise(draws - 1) if noise is not None else torch.randn_like(x)).float()

    x = x_T.float()
    plan = repaint_plan(n, resample, jump)
    for step, (k, k_next) in enumerate(zip(plan, plan[1:])):
        if k_next > k:  # down: replace the kept cells at this level, then one reverse step
            ab, ab_prev = alpha_bar[k], alpha_bar_prev[k]
            x = torch.where(keep, ab.sqrt() * known + (1 - ab).sqrt() * fresh(), x)
            eps = eps_fn(x, _t(ts[k], x)).float()
            last = k_next == n
            if sampler == "ddpm":
                x = ddpm_step(x, eps, ab, ab_prev, None if last else fresh())
            else:
                x = ddim_step(x, eps, ab, ab_prev, eta, None if last or eta == 0 else fresh())
        else:  # up: q(x_k_next | x_k), the forward process over the levels between them
            ratio = levels[k_next] / levels[k]
            x = ratio.sqrt() * x + (1 - ratio).sqrt() * fresh()
        if callback is not None:
            callback(step, len(plan) - 1)
    return torch.where(keep, known, x)


def ddim_invert(eps_fn: Callable, x0: torch.Tensor, schedule: NoiseSchedule, steps: int, *, refine: int = 3,
                spacing: str = "trailing", callback: Callable | None = None, start: int | None = None) -> torch.Tensor:
    """x_T whose deterministic DDIM trajectory (same eps_fn, steps and spacing) lands on x0.

    Each step solves x_t = sqrt(ab) x0_hat + sqrt(1 - ab) eps(x_t, t), x0_hat from the current x and
    that eps, by fixed-point iteration: the naive inversion evaluates eps once at the current
    (less noisy) x (refine=0: Song et al.'s and diffusers' DDIMInverseScheduler); each refinement
    re-evaluates it at the candidate x_t (ReNoise / AIDI). On the Gaussian oracle at 50 steps the
    round-trip error is 4.8e-2 naive and 4.9e-5 with refine=3. Evaluations: steps x (1 + refine).
    start: invert only up to the first index <= start (the level an SDEdit of that strength starts from).
    """
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine={refine!r} must be a whole number >= 0 (fixed-point iterations per step)")
    ts = visited(schedule, steps, spacing, start)
    alpha_bar, alpha_bar_prev = _alpha_bars(schedule, ts, x0)  # [n], [n]
    x = x0.float()
    for j, i in enumerate(range(len(ts) - 1, -1, -1)):  # from clean data up to x_T
        ab, ab_prev = alpha_bar[i], alpha_bar_prev[i]
        t = _t(ts[i], x)
        candidate = x
        for _ in range(refine + 1):
            eps = eps_fn(candidate, t).float()
            x0_hat = (x - (1 - ab_prev).sqrt() * eps) / ab_prev.sqrt()
            candidate = ab.sqrt() * x0_hat + (1 - ab).sqrt() * eps
        x = candidate
        if callback is not None:
            callback(j, len(ts))
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha) -> torch.Tensor:
    """Spherical interpolation per item of [B, ...] noises (alpha: a number or [B]), in float64:
    alpha 0 gives z0 and 1 gives z1 exactly; (nearly) parallel items fall back to lerp, so no NaN.
    The midpoint of two independent Gaussians keeps their norm (lerp's shrinks it by ~0.71)."""
    if z0.shape != z1.shape:
        raise ValueError(f"slerp needs two noises of one shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    a = torch.as_tensor(alpha, dtype=torch.float64, device=z0.device).reshape(-1)
    a = a.expand(z0.shape[0]) if a.numel() == 1 else a
    if a.numel() != z0.shape[0]:
        raise ValueError(f"slerp got {a.numel()} alphas for a batch of {z0.shape[0]}")
    u, v = z0.double().flatten(1), z1.double().flatten(1)  # [B, D]
    cos = (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)).clamp(min=1e-300)
    theta = cos.clamp(-1, 1).acos()  # [B]
    s = theta.sin()
    near = s < 1e-6
    safe = torch.where(near, torch.ones_like(s), s)
    w0 = torch.where(near, 1 - a, ((1 - a) * theta).sin() / safe)[:, None]
    w1 = torch.where(near, a, (a * theta).sin() / safe)[:, None]
    out = w0 * u + w1 * v
    out = torch.where((a == 0)[:, None], u, torch.where((a == 1)[:, None], v, out))
    return out.reshape(z0.shape).to(z0.dtype)


def window_weights(window: int, kind: str = "triangular") -> torch.Tensor:
    """Per-frame fusion weights of one window [W]: triangular (1/W at the ends, 1 in the middle:
    tapered, so no window edge shows) or uniform (diffusers' get_views; edges show)."""
    if kind == "uniform":
        return torch.ones(window)
    if kind != "triangular":
        raise ValueError(f"weights={kind!r} is not known; choose one of {', '.join(WEIGHTS)}")
    i = torch.arange(window, dtype=torch.float64)
    return (1 - ((2 * i + 1) / window - 1).abs()).float()


def window_starts(frames: int, window: int, stride: int, circular: bool = False) -> list[int]:
    """First frame of each window: every `stride` frames; linear windows end flush with the last frame,
    circular ones wrap past it (frames % stride == 0 keeps every frame equally covered)."""
    if circular:
        return list(range(0, frames, stride))
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts


def window_eps_fn(eps_fn: Callable, frames: int, window: int, stride: int | None = None, *,
                  circular: bool = False, weights: str = "triangular") -> Callable:
    """MultiDiffusion (Bar-Tal et al. 2023) as an eps_fn over the last axis of length `frames`: eps_fn
    runs on each window of `window` frames (one call per window, so labels and guidance bound inside
    eps_fn apply), and the windows' eps are fused by weighted averaging. circular=True wraps windows
    past the end, so the result is a loop: shifting the input by a multiple of `stride` shifts the output.

    stride: default window // 4. Evaluations per step: len(window_starts(...)).
    Triangular weights keep the window edges invisible (oracle: edge step max/mean 1.08; uniform 1.59).
    """
    stride = max(1, window // 4) if stride is None else int(stride)
    if not 1 <= stride <= window:
        raise ValueError(f"stride={stride} must be from 1 to the window ({window} frames)")
    if not circular and window >= frames:
        return eps_fn
    window = min(window, frames)
    starts = window_starts(frames, window, stride, circular)
    w = window_weights(window, weights)

    def windowed(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != frames:
            raise ValueError(f"window_eps_fn was built for {frames} frames, got {x.shape[-1]}")
        ww = w.to(x.device)
        num = torch.zeros_like(x, dtype=torch.float32)
        den = torch.zeros(frames, device=x.device)
        for s in starts:
            idx = (torch.arange(s, s + window, device=x.device) % frames)
            eps = eps_fn(x.index_select(-1, idx).contiguous(), t).float()
            num.index_add_(-1, idx, eps * ww)
            den.index_add_(0, idx, ww)
        return num / den
    return windowed


def windows_per_step(frames: int, window: int | None, stride: int | None = None, circular: bool = False) -> int:
    """How many network calls window_eps_fn makes per sampler step (1 without windows)."""
    if window is None or (not circular and window >= frames):
        return 1
    stride = max(1, window // 4) if stride is None else int(stride)
    return len(window_starts(frames, min(window, frames), stride, circular))


def seam_ratio(x: torch.Tensor, boundaries, wrap: bool = False) -> float:
    """Mean squared frame-to-frame step at the given boundaries (a step from frame b-1 to b) over the
    median step inside, for states [B, ..., F]; wrap=True adds the step from the last frame to the first.
    1 is a seamless join (used for inpainting seams and loop seams alike)."""
    d = x.diff(dim=-1).pow(2).flatten(0, -2).mean(0)  # [F - 1]
    at = [d[b - 1] for b in boundaries if 0 < b < x.shape[-1]]
    if wrap:
        at.append((x[..., 0] - x[..., -1]).pow(2).mean())
    if not at:
        return math.nan
    return float(torch.stack(at).mean() / d.median().clamp(min=1e-12))
