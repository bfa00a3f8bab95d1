"""Diffusion math: schedules, training objective, samplers, classifier-free guidance."""
from .guidance import classifier_free_guidance, make_eps_fn, model_eps_fn
from .objectives import (PREDICTIONS, diffusion_loss, drop_labels, min_snr_weight, q_sample, sample_timesteps, to_eps,
                         to_x0)
from .samplers import SAMPLERS, ddim, ddpm, dpmpp_2m, get_sampler, per_sample_noise, timesteps
from .schedules import NoiseSchedule

__all__ = [
    "NoiseSchedule", "PREDICTIONS", "diffusion_loss", "q_sample", "sample_timesteps", "drop_labels",
    "min_snr_weight", "to_eps", "to_x0", "SAMPLERS", "get_sampler", "ddpm", "ddim", "dpmpp_2m",
    "timesteps", "per_sample_noise", "classifier_free_guidance", "make_eps_fn", "model_eps_fn",
]
