"""From a network to the eps_fn(x_t, t) -> eps that samplers take, with classifier-free guidance.

Two levels:
  model_fn(x_t, t, labels) -> eps   the network seen through its prediction type (model_eps_fn);
  eps_fn(x_t, t) -> eps             what a sampler calls: labels bound, guidance applied.
classifier_free_guidance wraps a model_fn into an eps_fn; guidance is a wrapper, not a sampler flag.
"""
from __future__ import annotations

import math
from typing import Callable, cast

import torch

from .objectives import _expand, to_eps
from .schedules import NoiseSchedule


def _net_dtype(net) -> torch.dtype | None:
    params = getattr(net, "parameters", None)
    if params is None:
        return None
    p = next(iter(params()), None)
    return p.dtype if p is not None else None


def model_eps_fn(net, schedule: NoiseSchedule, prediction: str = "eps") -> Callable:
    """model_fn(x_t, t, labels) -> eps (float32) from a network trained with `prediction`.

    x_t is cast to the network's parameter dtype only here, at the network boundary; the output
    is converted to eps (objectives.to_eps) in float32. labels=None calls net(x_t, t).
    """
    dtype = _net_dtype(net)

    def model_fn(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x_in = x.to(dtype) if dtype is not None else x
        out = net(x_in, t) if labels is None else net(x_in, t, labels)
        alpha_bar = _expand(schedule.alpha_bar_at(t).to(x.device), x)  # [B, 1, ...]
        return to_eps(out.float(), x.float(), alpha_bar, prediction)
    return model_fn


def check_guidance_interval(interval) -> tuple[float, float] | None:
    """(sigma_low, sigma_high) as two floats with 0 <= low < high (high may be inf), or None.
    Takes a pair of numbers or the command line's "LO,HI" string.

    A ValueError names the bad value; the pipeline, generate and the benchmarks all check here.
    """
    if interval is None:
        return None
    try:
        low, high = (float(v) for v in (interval.split(",") if isinstance(interval, str) else interval))
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval={interval!r} must be two numbers (sigma_low, sigma_high), "
                         "e.g. (2, inf)") from None
    if not (low >= 0 and high > low):  # NaN fails both comparisons
        raise ValueError(f"guidance_interval=({low:g}, {high:g}) must have 0 <= sigma_low < sigma_high "
                         "(sigma_high may be inf)")
    return low, high


def guidance_weights(schedule: NoiseSchedule, t: torch.Tensor, scale: float,
                     interval: tuple[float, float]) -> torch.Tensor:
    """Per-sample guidance scale [B]: `scale` where sigma(t) = sqrt((1 - ab) / ab) is in (low, high],
    1 (the conditional model alone) elsewhere. Computed on t's device, no host sync."""
    ab = schedule.alpha_bar_at(t).float()
    sigma = ((1 - ab) / ab).sqrt()
    inside = (sigma > interval[0]) & (sigma <= interval[1])
    return torch.where(inside, torch.full_like(sigma, scale), torch.ones_like(sigma))


def classifier_free_guidance(model_fn: Callable, labels: torch.Tensor, null_label: int, scale: float,
                             interval: tuple[float, float] | None = None,
                             schedule: NoiseSchedule | None = None) -> Callable:
    """eps_fn(x_t, t) = eps_u + scale (eps_c - eps_u) (Ho & Salimans 2022, eq. 6 with w = scale - 1).

    model_fn(x_t, t, labels) -> eps is the network-level function (model_eps_fn). Conditional and
    unconditional (labels = null_label) are evaluated in ONE batched call of size 2B. scale=1 is the
    conditional model alone and skips the unconditional half; scale=0 is the unconditional model.
    Combining in eps space equals combining in v or x0 space: to_eps is affine in the output.

    interval=(sigma_low, sigma_high) with `schedule`: guidance only where the noise level
    sigma = sqrt((1 - ab) / ab) is in (sigma_low, sigma_high], the conditional model alone elsewhere
    (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"). Guidance at low noise adds
    little class information and mostly oversaturates; on digits_cpu (2, inf] lowered FID from
    14.3 to 13.2 at the same accuracy (egs/digits/README.md). Chosen per sample from t, so a
    CUDA graph of this step stays valid for every step.
    """
    if scale == 1.0:
        return lambda x, t: model_fn(x, t, labels)
    interval = check_guidance_interval(interval)
    if interval is not None and schedule is None:
        raise ValueError("classifier_free_guidance: an interval needs the schedule (sigma of each t)")
    null = torch.full_like(labels, null_label)  # [B]

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))  # [2B, ...]
        eps_c, eps_u = eps.chunk(2)
        if interval is None:
            return eps_u + scale * (eps_c - eps_u)
        assert schedule is not None  # checked above: an interval needs it
        w = _expand(guidance_weights(schedule, t, scale, interval).to(eps.device), eps_c)  # [B, 1, ...]
        return eps_u + w * (eps_c - eps_u)
    return eps_fn


def make_eps_fn(net, schedule: NoiseSchedule, prediction: str = "eps", labels: torch.Tensor | None = None,
                guidance_scale: float = 1.0, null_label: int | None = None,
                guidance_interval: tuple[float, float] | None = None) -> Callable:
    """The sampler-ready eps_fn(x_t, t) for `net`: unconditional when labels is None, else conditional
    on labels, with classifier-free guidance when guidance_scale != 1 (needs null_label), only for
    noise levels sigma in guidance_interval when one is given (classifier_free_guidance)."""
    model_fn = model_eps_fn(net, schedule, prediction)
    if labels is None:
        return lambda x, t: model_fn(x, t, None)
    if guidance_scale != 1.0 and null_label is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs null_label (the label the network was "
                         f"trained with for 'no class'); pass it or use guidance_scale=1.0.")
    # null_label is checked above wherever guidance uses it (scale 1 ignores it)
    return classifier_free_guidance(model_fn, labels, cast(int, null_label), guidance_scale, guidance_interval,
                                    schedule)


def _finite(value) -> float:
    """value as a float, or NaN for anything that is not a finite number (bools included)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number if math.isfinite(number) and not isinstance(value, bool) else float("nan")


def check_eps_scaling(value) -> float:
    """A valid epsilon-scaling lambda (scale_eps) as a float; ValueError naming the value otherwise."""
    lam = _finite(value)
    if not 0.5 <= lam <= 2.0:
        raise ValueError(f"eps_scaling={value!r} must be a number from 0.5 to 2 (1 = off; the noise prediction "
                         "is divided by it)")
    return lam


def check_eps_scaling_max_sigma(value) -> float | None:
    """A valid noise-level bound for scale_eps (None = every step) as a float; ValueError naming it otherwise."""
    if value is None:
        return None
    bound = _finite(value)
    if not bound > 0:
        raise ValueError(f"eps_scaling_max_sigma={value!r} must be a positive number (the noise level sigma at "
                         "and below which the noise estimate is scaled; none: every step)")
    return bound


def scale_eps(eps_fn: Callable, lam: float, schedule: NoiseSchedule | None = None,
              max_sigma: float | None = None) -> Callable:
    """Epsilon scaling (Ning et al. 2024, "Elucidating the exposure bias in diffusion models"): the sampler
    sees eps_fn(x_t, t) / lam, at every step. It corrects, without retraining, a net whose noise estimate on
    its own sampled x_t is off in scale (exposure bias: at sampling the net sees its earlier errors, never
    seen in training). lam < 1 enlarges the estimate, so each step takes away more noise: for the digits
    models the residual noise otherwise left in is extra energy in the mel (egs/digits/README.md).
    max_sigma (with `schedule`) scales only the steps whose noise level sigma = sqrt((1 - ab) / ab) is at or
    below it: at high noise (1/lam - 1) sigma eps moves the clean estimate by many data deviations."""
    lam = check_eps_scaling(lam)
    max_sigma = check_eps_scaling_max_sigma(max_sigma)
    if lam == 1.0:
        return eps_fn
    if max_sigma is None:
        def scaled(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return eps_fn(x, t) / lam
        return scaled
    if schedule is None:
        raise ValueError("scale_eps: max_sigma needs the schedule (sigma of each t)")

    def bounded(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x, t)
        ab = schedule.alpha_bar_at(t).float()
        factor = torch.where(((1 - ab) / ab).sqrt() <= max_sigma, 1.0 / lam, 1.0)  # t's shape, no host sync
        return eps * _expand(factor.to(eps.device), eps)
    return bounded


def clip_x0(eps_fn: Callable, schedule: NoiseSchedule, low: float | torch.Tensor,
            high: float | torch.Tensor) -> Callable:
    """eps_fn whose implied clean estimate x0_hat stays in [low, high] at every step.

    Static thresholding (the x0 clipping of Ho et al. 2020's code; Saharia et al. 2022, sec. 2.3):
    x0_hat = (x_t - sqrt(1 - ab) eps) / sqrt(ab) is clamped to the data range and eps recomputed
    from it, so every sampler (each works through eps) keeps its trajectory among plausible mels.
    Early in training the eps error at high noise is amplified by 1 / sqrt(ab) ~ 160 (linear
    schedule, t = T - 1); without the clamp that error walks the whole trajectory off the data.
    """
    def clipped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x, t).float()
        ab = _expand(schedule.alpha_bar_at(t).to(x.device), x)  # [B, 1, ...]
        x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(low, high)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    return clipped
