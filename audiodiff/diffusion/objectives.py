"""Training objective and the prediction-type algebra (the math exists here exactly once).

With x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, a network may predict
  "eps": the noise (Ho et al. 2020),
  "v":   v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022),
  "x0":  the clean data.
to_eps / to_x0 convert any of them, so samplers only ever see eps.
"""
from __future__ import annotations

import torch

from .schedules import NoiseSchedule

PREDICTIONS = ("eps", "v", "x0")


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is not known; choose one of {PREDICTIONS}.")


def _expand(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] broadcastable against x."""
    return a.reshape(-1, *([1] * (x.dim() - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Forward process sample x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4)."""
    alpha_bar = _expand(schedule.alpha_bar_at(t).to(x0.device), x0)  # [B, 1, ...]
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def to_eps(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
    """The network's output (of type `prediction`) -> predicted eps. alpha_bar broadcasts against x_t."""
    _check_prediction(prediction)
    if prediction == "eps":
        return output
    if prediction == "v":  # eps = sqrt(ab) v + sqrt(1 - ab) x_t
        return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * x_t
    return (x_t - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()


def to_x0(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
    """The network's output (of type `prediction`) -> predicted x0. alpha_bar broadcasts against x_t."""
    _check_prediction(prediction)
    if prediction == "x0":
        return output
    if prediction == "v":  # x0 = sqrt(ab) x_t - sqrt(1 - ab) v
        return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * output
    return (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()


def target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
    """Regression target for `prediction` given the clean data and the noise that made x_t."""
    _check_prediction(prediction)
    if prediction == "eps":
        return noise
    if prediction == "v":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    return x0


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: str = "eps") -> torch.Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023) for the loss in `prediction` space.

    The x0-space weight is min(snr, gamma); expressed in the space the loss is computed in it becomes
    eps: min(snr, gamma) / snr,  v: min(snr, gamma) / (snr + 1),  x0: min(snr, gamma).
    """
    _check_prediction(prediction)
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped


def diffusion_loss(net, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None, schedule: NoiseSchedule,
                   prediction: str = "eps", labels: torch.Tensor | None = None,
                   min_snr_gamma: float | None = None, input_perturbation: float = 0.0,
                   perturbation: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example denoising loss [B]: mean squared error over all non-batch dims (the loop reduces).

    net is called as net(x_t, t, labels), or net(x_t, t) when labels is None; t is the long tensor
    [B] of training indices. noise=None draws torch.randn_like(x0). The error is taken in float32.
    min_snr_gamma (e.g. 5.0) weights each example by min_snr_weight (Hang et al. 2023).
    input_perturbation gamma (e.g. 0.1; DDPM-IP, Ning et al. 2023) makes x_t with noise + gamma * xi (xi a
    draw, or `perturbation`) while the target keeps noise: the net learns to undo errors like its own at
    sampling time.
    """
    _check_prediction(prediction)
    if not 0.0 <= input_perturbation <= 1.0:
        raise ValueError(f"input_perturbation={input_perturbation!r} must be from 0 (off) to 1 (0.1 is usual)")
    if noise is None:
        noise = torch.randn_like(x0)
    if input_perturbation:
        xi = torch.randn_like(noise) if perturbation is None else perturbation
        x_t = q_sample(x0, t, noise + input_perturbation * xi, schedule)  # [B, ...]
    else:
        x_t = q_sample(x0, t, noise, schedule)
    output = net(x_t, t) if labels is None else net(x_t, t, labels)
    alpha_bar = _expand(schedule.alpha_bar_at(t).to(x0.device), x0)
    goal = target(x0.float(), noise.float(), alpha_bar, prediction)
    loss = (output.float() - goal).pow(2).flatten(1).mean(1)  # [B]
    if min_snr_gamma is not None:
        loss = loss * min_snr_weight(schedule.snr(t).to(loss.device), min_snr_gamma, prediction)
    return loss


def sample_timesteps(batch: int, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor:
    """Uniform training indices t ~ U{0, ..., T-1}: long tensor [batch] on `device`."""
    draw_on = generator.device if generator is not None else device
    t = torch.randint(0, schedule.num_steps, (batch,), generator=generator, device=draw_on)
    return t.to(device) if device is not None else t


def drop_labels(labels: torch.Tensor, p: float, null_label: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by null_label with probability p (classifier-free guidance training,
    Ho & Salimans 2022), so one network learns both the conditional and the unconditional model."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"label dropout p={p} must be in [0, 1] (0.1 is the usual choice).")
    draw_on = generator.device if generator is not None else labels.device
    drop = torch.rand(labels.shape, generator=generator, device=draw_on).to(labels.device) < p  # [B]
    return torch.where(drop, torch.full_like(labels, null_label), labels)
