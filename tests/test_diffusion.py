"""Schedules, the training objective and classifier-free guidance."""
import math

import pytest
import torch

from audiodiff.diffusion import (NoiseSchedule, classifier_free_guidance, ddim, diffusion_loss, drop_labels,
                                 make_eps_fn, min_snr_weight, q_sample, sample_timesteps, to_eps, to_x0)
from audiodiff.diffusion.objectives import target

# ---------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_strictly_decreasing_in_unit_interval(kind):
    s = NoiseSchedule(kind)
    ab = s.alpha_bar
    assert ab.shape == (1000,) and ab.dtype == torch.float32
    assert (ab > 0).all() and (ab < 1).all()
    assert (ab[1:] < ab[:-1]).all()
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(s.alpha_bar, torch.cumprod(s.alphas.double(), 0).float())


def test_linear_endpoints_match_ho_et_al():
    s = NoiseSchedule("linear", num_steps=1000)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    # Ho et al. 2020: alpha_bar_T ~ 4e-5 (x_T is nearly pure noise)
    assert s.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.02)


def test_cosine_schedule():
    s = NoiseSchedule("cosine", num_steps=1000)
    assert s.alpha_bar[0].item() > 0.9999
    assert s.betas.max().item() == pytest.approx(0.999)  # clipped (Nichol & Dhariwal 2021)
    # alpha_bar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2, at the midpoint t/T = 0.5
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    assert s.alpha_bar[499].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-5)


def test_bad_schedule_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"'quadratic'.*linear.*cosine"):
        NoiseSchedule("quadratic")
    with pytest.raises(ValueError, match="num_steps=0"):
        NoiseSchedule(num_steps=0)


def test_alpha_bar_at_int_and_float_and_snr():
    s = NoiseSchedule()
    t = torch.tensor([0, 10, 999])
    torch.testing.assert_close(s.alpha_bar_at(t), s.alpha_bar[t])
    torch.testing.assert_close(s.alpha_bar_at(t.float()), s.alpha_bar[t], rtol=1e-5, atol=1e-7)
    mid = s.alpha_bar_at(torch.tensor([10.5]))
    assert s.alpha_bar[11] < mid < s.alpha_bar[10]
    # log-SNR interpolation: the midpoint's log-SNR is the mean of the neighbours'
    lam = lambda ab: torch.log(ab / (1 - ab))
    assert lam(mid).item() == pytest.approx(0.5 * (lam(s.alpha_bar[10]) + lam(s.alpha_bar[11])).item(), rel=1e-4)
    ab = s.alpha_bar[t].double()
    torch.testing.assert_close(s.snr(t).double(), ab / (1 - ab), rtol=1e-3, atol=0)
    assert s.to("cpu") is s


def test_schedule_builds_from_hydra_config():
    hydra_utils = pytest.importorskip("hydra.utils")
    s = hydra_utils.instantiate({"_target_": "audiodiff.diffusion.schedules.NoiseSchedule",
                                 "kind": "cosine", "num_steps": 50})
    assert isinstance(s, NoiseSchedule) and s.kind == "cosine" and s.alpha_bar.shape == (50,)


# ---------------------------------------------------------------- objectives

def _batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, 4, 5, generator=g)
    noise = torch.randn(B, 4, 5, generator=g)
    t = torch.tensor([0, 1, 100, 500, 900, 999])[:B]
    return x0, noise, t


def _true_output(x0, noise, ab, prediction):
    ab = ab.view(-1, 1, 1)
    return {"eps": noise, "x0": x0, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[prediction]


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_loss_is_zero_for_the_true_target_and_shape_is_batch(prediction):
    s = NoiseSchedule()
    x0, noise, t = _batch()
    ab = s.alpha_bar[t]
    perfect = lambda x_t, tt: _true_output(x0, noise, ab, prediction)
    loss = diffusion_loss(perfect, x0, t, noise, s, prediction=prediction)
    assert loss.shape == (6,)
    assert loss.abs().max().item() < 1e-10
    wrong = "x0" if prediction != "x0" else "eps"
    assert (diffusion_loss(lambda x_t, tt: _true_output(x0, noise, ab, wrong), x0, t, noise, s,
                           prediction=prediction) > 1e-3).all()


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_converters_recover_eps_and_x0(prediction):
    s = NoiseSchedule()
    x0, noise, t = _batch()
    x_t = q_sample(x0, t, noise, s)
    ab = s.alpha_bar[t].view(-1, 1, 1)
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    out = _true_output(x0, noise, s.alpha_bar[t], prediction)
    torch.testing.assert_close(to_eps(out, x_t, ab, prediction), noise, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(to_x0(out, x_t, ab, prediction), x0, atol=2e-3, rtol=1e-3)


def test_net_gets_labels_only_when_given():
    s = NoiseSchedule()
    x0, noise, t = _batch()
    seen = {}

    def net(x_t, tt, *rest):
        seen["args"] = rest
        return torch.zeros_like(x_t)
    diffusion_loss(net, x0, t, noise, s)
    assert seen["args"] == ()
    labels = torch.arange(6)
    diffusion_loss(net, x0, t, noise, s, labels=labels)
    assert seen["args"][0] is labels


def test_min_snr_weights_at_known_snr():
    snr = torch.tensor([0.5, 5.0, 50.0])
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "eps"), torch.tensor([1.0, 1.0, 0.1]))
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "v"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "x0"), torch.tensor([0.5, 5.0, 5.0]))
    with pytest.raises(ValueError, match="'score'.*eps"):
        min_snr_weight(snr, 5.0, "score")


def test_min_snr_weighted_loss_is_the_same_for_every_prediction_type():
    """Hang et al. 2023: each weight turns the loss into min(snr, gamma) * ||x0_hat - x0||^2."""
    s = NoiseSchedule()
    x0, noise, t = _batch()
    x_t = q_sample(x0, t, noise, s)
    ab = s.alpha_bar[t].view(-1, 1, 1)
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    outputs = {"x0": x0_hat,
               "eps": (x_t - ab.sqrt() * x0_hat) / (1 - ab).sqrt(),
               "v": (ab.sqrt() * x_t - x0_hat) / (1 - ab).sqrt()}
    expected = s.snr(t).clamp(max=5.0) * (x0_hat - x0).pow(2).flatten(1).mean(1)
    for prediction, out in outputs.items():
        loss = diffusion_loss(lambda *_: out, x0, t, noise, s, prediction=prediction, min_snr_gamma=5.0)
        torch.testing.assert_close(loss, expected, rtol=2e-2, atol=1e-5, msg=prediction)


def test_input_perturbation_moves_the_input_and_keeps_the_target():
    """DDPM-IP (Ning et al. 2023): the net sees x_t made with noise + gamma * xi, the target is still noise's."""
    s = NoiseSchedule()
    x0, noise, t = _batch()
    xi = torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    seen = {}

    def net(x_t, t_):
        seen["x_t"] = x_t
        return target(x0, noise, s.alpha_bar[t_].view(-1, 1, 1), "v")

    loss = diffusion_loss(net, x0, t, noise, s, prediction="v", input_perturbation=0.1, perturbation=xi)
    torch.testing.assert_close(seen["x_t"], q_sample(x0, t, noise + 0.1 * xi, s))
    assert not torch.allclose(seen["x_t"], q_sample(x0, t, noise, s))
    torch.testing.assert_close(loss, torch.zeros_like(loss))  # the target ignores the perturbation
    with pytest.raises(ValueError, match="input_perturbation=1.5"):
        diffusion_loss(net, x0, t, noise, s, input_perturbation=1.5)


def test_sample_timesteps_range_and_generator():
    s = NoiseSchedule(num_steps=50)
    t = sample_timesteps(10000, s, generator=torch.Generator().manual_seed(0))
    assert t.shape == (10000,) and t.dtype == torch.long and t.min() == 0 and t.max() == 49
    assert torch.equal(t, sample_timesteps(10000, s, generator=torch.Generator().manual_seed(0)))


def test_label_dropout_rate():
    labels = torch.randint(0, 10, (100_000,), generator=torch.Generator().manual_seed(0))
    out = drop_labels(labels, 0.1, null_label=10, generator=torch.Generator().manual_seed(1))
    dropped = out == 10
    assert dropped.float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert torch.equal(out[~dropped], labels[~dropped])
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)
    with pytest.raises(ValueError, match="p=1.5"):
        drop_labels(labels, 1.5, 10)


# ---------------------------------------------------------------- guidance

class _CountingModel:
    """model_fn(x, t, labels): eps depends on the label so cond and uncond differ."""

    def __init__(self):
        self.calls, self.batch_sizes = 0, []

    def __call__(self, x, t, labels):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        return 0.1 * x + labels.float().view(-1, 1)


def test_guidance_scale_one_is_conditional_and_zero_is_unconditional():
    x, t = torch.randn(3, 8), torch.full((3,), 500)
    labels, null = torch.tensor([1, 2, 3]), 7
    model = _CountingModel()
    cond = 0.1 * x + labels.float().view(-1, 1)
    uncond = 0.1 * x + 7.0
    torch.testing.assert_close(classifier_free_guidance(model, labels, null, 1.0)(x, t), cond)
    assert model.batch_sizes == [3]  # scale 1 skips the unconditional half
    torch.testing.assert_close(classifier_free_guidance(model, labels, null, 0.0)(x, t), uncond)
    torch.testing.assert_close(classifier_free_guidance(model, labels, null, 3.0)(x, t), uncond + 3.0 * (cond - uncond))


def test_guidance_is_one_batched_call_per_step():
    s = NoiseSchedule()
    model = _CountingModel()
    eps_fn = classifier_free_guidance(model, torch.tensor([1, 2]), 0, 4.0)
    ddim(eps_fn, torch.randn(2, 8), s, 7)
    assert model.calls == 7 and model.batch_sizes == [4] * 7


def test_guidance_interval_guides_only_inside_its_noise_levels():
    """(sigma_low, sigma_high]: the guided combination where sigma(t) is inside, the conditional
    model alone outside, chosen per sample from t; (0, inf) is plain guidance."""
    s = NoiseSchedule()
    sigma = ((1 - s.alpha_bar) / s.alpha_bar).sqrt()
    labels, null = torch.tensor([1, 2, 3]), 7
    x = torch.randn(3, 8)
    t = torch.tensor([999, 500, 5])  # high, middle and low noise
    assert sigma[999] > 10 and 0.5 < sigma[500] < 10 and sigma[5] < 0.5
    model = _CountingModel()
    cond = 0.1 * x + labels.float().view(-1, 1)
    guided = 0.1 * x + 7.0 + 3.0 * (cond - (0.1 * x + 7.0))
    plain = classifier_free_guidance(model, labels, null, 3.0)(x, t)
    torch.testing.assert_close(classifier_free_guidance(model, labels, null, 3.0, (0, float("inf")), s)(x, t), plain)
    out = classifier_free_guidance(model, labels, null, 3.0, (0.5, 10.0), s)(x, t)
    torch.testing.assert_close(out[1], guided[1])  # inside
    torch.testing.assert_close(out[[0, 2]], cond[[0, 2]])  # outside: conditional alone
    high = classifier_free_guidance(model, labels, null, 3.0, (float(sigma[500]), float("inf")), s)(x, t)
    torch.testing.assert_close(high[0], guided[0])
    torch.testing.assert_close(high[1:], cond[1:])  # the bound itself is outside: (low, high]


def test_eps_scaling_with_a_sigma_bound_scales_only_the_low_noise_samples():
    """scale_eps(max_sigma=S): eps / lambda where sigma(t) <= S, eps untouched above, chosen per sample from t;
    a bound above every sigma is the constant scaling; bad bounds are one-line ValueErrors naming the value."""
    from audiodiff.diffusion.guidance import check_eps_scaling_max_sigma, scale_eps

    s = NoiseSchedule()
    sigma = ((1 - s.alpha_bar) / s.alpha_bar).sqrt()
    x = torch.randn(3, 4, 5)
    t = torch.tensor([999, 500, 5])  # high, middle and low noise
    eps_fn = lambda x_, t_: x_ * 2  # noqa: E731
    out = scale_eps(eps_fn, 0.8, s, float(sigma[500]))(x, t)  # the bound itself is inside
    torch.testing.assert_close(out[0], 2 * x[0])
    torch.testing.assert_close(out[1:], 2 * x[1:] / 0.8)
    torch.testing.assert_close(scale_eps(eps_fn, 0.8, s, 1e9)(x, t), scale_eps(eps_fn, 0.8)(x, t))
    torch.testing.assert_close(scale_eps(eps_fn, 0.8, s, 1.0)(x, torch.tensor(5)), 2 * x / 0.8)  # scalar t
    assert scale_eps(eps_fn, 1.0, s, 1.0) is eps_fn
    for bad in (0, -1, float("nan"), "x", True):
        with pytest.raises(ValueError, match="eps_scaling_max_sigma") as e:
            check_eps_scaling_max_sigma(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="needs the schedule"):
        scale_eps(eps_fn, 0.8, None, 1.0)


@pytest.mark.parametrize("interval", [(2,), (3, 1), (-1, 2), ("a", 2), (float("nan"), 1), 5])
def test_guidance_interval_errors_name_the_value(interval):
    from audiodiff.diffusion.guidance import check_guidance_interval

    with pytest.raises(ValueError, match="guidance_interval") as e:
        check_guidance_interval(interval)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="schedule"):
        classifier_free_guidance(_CountingModel(), torch.tensor([1]), 0, 2.0, (1, 2))


def test_make_eps_fn_casts_at_the_net_boundary_and_binds_labels():
    s = NoiseSchedule()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), dtype=torch.bfloat16))
            self.seen = []

        def forward(self, x, t, labels=None):
            self.seen.append((x.dtype, None if labels is None else labels.tolist()))
            return self.w * x

    net = Net()
    x, t = torch.randn(2, 8), torch.full((2,), 10)
    eps = make_eps_fn(net, s)(x, t)
    assert eps.dtype == torch.float32 and net.seen[-1] == (torch.bfloat16, None)
    make_eps_fn(net, s, labels=torch.tensor([3, 4]), guidance_scale=2.0, null_label=0)(x, t)
    assert net.seen[-1] == (torch.bfloat16, [3, 4, 0, 0])
    with pytest.raises(ValueError, match="null_label"):
        make_eps_fn(net, s, labels=torch.tensor([3, 4]), guidance_scale=2.0)
