"""Samplers: timestep spacing, analytic Gaussian checks, per-sample determinism, errors.

For data x0 ~ N(mu, s^2 I) the ideal noise predictor is closed form,
E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab),
so the samplers can be checked without trained weights.
"""
import functools

import pytest
import torch

from audiodiff.diffusion import (SAMPLERS, NoiseSchedule, ddim, ddpm, dpmpp_2m, get_sampler, make_eps_fn,
                                 per_sample_noise, timesteps)

S, MU = 0.5, 0.3  # data std and mean
N, D = 4096, 8


def ideal_eps(schedule, s=S, mu=MU):
    def eps_fn(x, t):  # x [B, ...], t [B]
        ab = schedule.alpha_bar_at(t).view(-1, *([1] * (x.dim() - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)
    return eps_fn


@functools.lru_cache(maxsize=None)
def run(name, steps, kind="linear"):
    """Sample N x D with the ideal denoiser; returns (variance error, mean error)."""
    schedule = NoiseSchedule(kind)
    g = torch.Generator().manual_seed(1234)
    x_T = torch.randn(N, D, generator=g)
    x = get_sampler(name)(ideal_eps(schedule), x_T, schedule, steps,
                          noise=lambda i: torch.randn(N, D, generator=g))
    var_err, mean_err = abs(x.var().item() - S**2), abs(x.mean().item() - MU)
    print(f"{kind} {name:5s} steps={steps:4d}: |var - s^2| = {var_err:.4f}  |mean - mu| = {mean_err:.4f}")
    return var_err, mean_err


# ---------------------------------------------------------------- timesteps

def test_timestep_spacings():
    s = NoiseSchedule(num_steps=1000)
    assert timesteps(s, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert timesteps(s, 10, "leading").tolist() == list(range(900, -1, -100))
    assert timesteps(s, 10, "linspace").tolist() == list(range(999, -1, -111))
    assert timesteps(s, 1, "trailing").tolist() == [999]
    assert timesteps(s, 1000).tolist() == list(range(999, -1, -1))


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 333, 999, 1000])
def test_timesteps_strictly_decreasing_in_range(spacing, steps):
    ts = timesteps(NoiseSchedule(), steps, spacing)
    assert ts.dtype == torch.long and ts.shape == (steps,)
    assert ts.min() >= 0 and ts.max() <= 999
    assert (ts[1:] < ts[:-1]).all()


@pytest.mark.parametrize("steps", [0, 1001, -3, 2.5])
def test_steps_out_of_range_raise(steps):
    with pytest.raises(ValueError, match=rf"steps={steps}.*1 to 1000"):
        ddim(ideal_eps(NoiseSchedule()), torch.randn(2, 3), NoiseSchedule(), steps)


def test_unknown_sampler_and_spacing_raise():
    with pytest.raises(ValueError, match=r"'euler'.*ddim.*ddpm.*dpmpp"):
        get_sampler("euler")
    with pytest.raises(ValueError, match=r"'even'.*trailing"):
        timesteps(NoiseSchedule(), 10, "even")
    assert get_sampler("dpmpp") is dpmpp_2m and set(SAMPLERS) == {"ddpm", "ddim", "dpmpp"}


# ---------------------------------------------------------------- analytic Gaussian checks
# Sampling noise with N*D = 32768 values: std of the variance estimate ~ 0.002, of the mean ~ 0.003.
# Measured (seed 1234, linear schedule, trailing): see the printed lines (pytest -s).

@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp"])
def test_variance_error_shrinks_with_steps(name):
    e10, e20, e50 = (run(name, n)[0] for n in (10, 20, 50))
    # margins well above the ~0.002 sampling noise; ddpm improves slowest (0.14, 0.10, 0.05)
    assert e20 < 0.8 * e10 and e50 < 0.8 * e20


def test_ddpm_1000_steps_matches_data():
    var_err, mean_err = run("ddpm", 1000)
    assert var_err < 0.012  # < 5 % of s^2 = 0.25 (measured ~0.001-0.003)
    assert mean_err < 0.015


@pytest.mark.parametrize("name,tol", [("ddim", 0.015), ("dpmpp", 0.006)])
def test_deterministic_samplers_converge(name, tol):
    # true errors at 200 steps (8 seeds): ddim ~0.007 (first order), dpmpp at the ~0.001 noise floor
    assert run(name, 200)[0] < tol
    assert run(name, 50)[1] < 0.015


def test_dpmpp_beats_ddim_at_20_steps():
    ddim_err, dpm_err = run("ddim", 20)[0], run("dpmpp", 20)[0]
    assert dpm_err < 0.5 * ddim_err  # measured ~0.02 vs ~0.06
    assert run("dpmpp", 50)[0] < 0.01


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp"])
def test_cosine_schedule_samplers(name):
    # cosine alpha_bar[T-1] ~ 2e-9: few-step sampling must stay finite
    assert run(name, 1, "cosine")[0] == pytest.approx(S**2, abs=1e-3)  # one step = E[x0 | x_T] ~ mu
    assert run(name, 50, "cosine")[0] < run(name, 10, "cosine")[0]


def test_ddim_eta_one_equals_ddpm():
    """Song et al. 2021: eta = 1 gives the DDPM posterior (sigma^2 = beta~) for any respacing."""
    s = NoiseSchedule()
    x_T = torch.randn(64, D, generator=torch.Generator().manual_seed(0))
    out = []
    for sampler, kw in ((ddpm, {}), (ddim, {"eta": 1.0})):
        g = torch.Generator().manual_seed(1)
        out.append(sampler(ideal_eps(s), x_T, s, 25, noise=lambda i: torch.randn(64, D, generator=g), **kw))
    torch.testing.assert_close(out[0], out[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_other_prediction_types_sample_the_same(prediction):
    """A v- or x0-predicting network through make_eps_fn gives the eps network's samples."""
    s = NoiseSchedule()
    eps_fn = ideal_eps(s)

    def net(x, t):
        ab = s.alpha_bar_at(t).view(-1, 1)
        eps = eps_fn(x, t)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0 if prediction == "v" else x0

    x_T = torch.randn(256, D, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dpmpp_2m(make_eps_fn(net, s, prediction), x_T, s, 20),
                               dpmpp_2m(eps_fn, x_T, s, 20), atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- determinism, dtype, callback

@pytest.mark.parametrize("name,kw", [("ddpm", {}), ("ddim", {"eta": 0.5}), ("dpmpp", {})])
def test_a_sample_does_not_depend_on_its_batch(name, kw):
    s = NoiseSchedule()
    shape = (D, 5)

    def draw(seeds):
        gens = [torch.Generator().manual_seed(seed) for seed in seeds]
        x_T = torch.stack([torch.randn(shape, generator=g) for g in gens])
        return get_sampler(name)(ideal_eps(s), x_T, s, 12, noise=per_sample_noise(gens, x_T), **kw)

    both, alone = draw([11, 22]), draw([11])
    assert torch.equal(both[:1], alone)
    assert not torch.equal(both[0], both[1])


def test_deterministic_samplers_draw_no_noise_and_stay_float32():
    s = NoiseSchedule()

    def no_noise(i):
        raise AssertionError("a deterministic sampler asked for noise")
    x_T = torch.randn(4, D).bfloat16()
    bf16_eps = lambda x, t: ideal_eps(s)(x, t).bfloat16()
    for sampler in (ddim, dpmpp_2m):
        assert sampler(bf16_eps, x_T, s, 5, noise=no_noise).dtype == torch.float32


def test_callback_reports_every_step_and_t_is_long_batch():
    s = NoiseSchedule()
    seen, ts = [], []

    def eps_fn(x, t):
        ts.append(t)
        return torch.zeros_like(x)
    ddpm(eps_fn, torch.randn(3, D), s, 4, callback=lambda i, n: seen.append((i, n)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert all(t.dtype == torch.long and t.shape == (3,) for t in ts)
    assert [t[0].item() for t in ts] == [999, 749, 499, 249]


def test_clip_x0_keeps_the_clean_estimate_in_range():
    """The thresholding wrapper: the x0 implied by its eps lies in [low, high]; inside the range it
    changes nothing; every sampler then ends inside the range."""
    from audiodiff.diffusion.guidance import clip_x0
    from audiodiff.diffusion.objectives import to_x0
    from audiodiff.diffusion.samplers import SAMPLERS
    from audiodiff.diffusion.schedules import NoiseSchedule

    schedule = NoiseSchedule("linear", 1000)
    wild = lambda x, t: torch.full_like(x, 0.5)  # an eps whose x0 estimate is far out of range
    clipped = clip_x0(wild, schedule, -1.0, 1.0)
    x = torch.randn(4, 8)
    for step in (999, 500, 10):
        t = torch.full((4,), step)
        ab = schedule.alpha_bar_at(t)[:, None]
        x0 = to_x0(clipped(x, t), x, ab, "eps")
        assert x0.min() >= -1 - 1e-4 and x0.max() <= 1 + 1e-4
        assert to_x0(wild(x, t), x, ab, "eps").abs().max() > 1.5  # the clamp did something
    tame = lambda x, t: torch.zeros_like(x) + 0.001 * x
    t = torch.full((4,), 10)
    x_small = 0.1 * torch.randn(4, 8)
    torch.testing.assert_close(clip_x0(tame, schedule, -1, 1)(x_small, t), tame(x_small, t), atol=1e-5, rtol=1e-5)
    for name, fn in SAMPLERS.items():
        out = fn(clipped, torch.randn(4, 8), schedule, 10)
        assert out.min() >= -1 - 1e-3 and out.max() <= 1 + 1e-3, name
