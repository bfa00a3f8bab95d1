"""The diffusion U-Net: shapes, initial state, conditioning, determinism, FLOPs, gradients."""

import pytest
import torch

from audiodiff.nets.unet import PRESETS, UNet, forward_flops, from_preset

N_CLASSES = 3


def tiny(dims: int, n_mels: int = 8, **overrides) -> UNet:
    """A few-thousand-parameter net; three levels so inputs are padded to a multiple of 4."""
    kwargs = dict(
        dims=dims, n_mels=n_mels, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1,
        attention_levels=(2,), num_heads=2, num_classes=N_CLASSES, groups=4,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    return UNet(**kwargs)


@torch.no_grad()
def perturb(net: UNet, std: float = 0.1) -> UNet:
    """Move every weight off its init (the zero-initialised layers hide the conditioning)."""
    torch.manual_seed(1)
    for p in net.parameters():
        p.add_(std * torch.randn_like(p))
    return net


def batch(n_mels: int, n_frames: int, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n_mels, n_frames, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    labels = torch.randint(0, N_CLASSES + 1, (b,), generator=g)
    return x, t, labels


@pytest.mark.parametrize("dims,n_mels", [(1, 8), (2, 8), (2, 9)])
@pytest.mark.parametrize("n_frames", [37, 87, 1, 64])
@pytest.mark.parametrize("use_labels", [False, True])
def test_shape_and_zero_output_at_init(dims, n_mels, n_frames, use_labels):
    net = tiny(dims, n_mels)
    x, t, labels = batch(n_mels, n_frames)
    out = net(x, t, labels if use_labels else None)
    assert out.shape == (2, n_mels, n_frames)
    assert out.dtype == x.dtype
    # The output conv is zero-initialised: an untrained net predicts exactly 0.
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("dims", [1, 2])
def test_output_nonzero_after_one_step(dims):
    net = tiny(dims)
    x, t, labels = batch(8, 37)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = (net(x, t, labels) - x).pow(2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        out = net(x, t, labels)
    assert out.shape == x.shape
    assert out.abs().mean() > 1e-5


@pytest.mark.parametrize("dims", [1, 2])
def test_labels_change_the_output_and_none_is_null(dims):
    net = perturb(tiny(dims)).eval()
    x, t, _ = batch(8, 24)
    with torch.no_grad():
        out = {y: net(x, t, torch.full((2,), y)) for y in range(N_CLASSES + 1)}
        out_none = net(x, t)
    for y in range(N_CLASSES):
        assert not torch.allclose(out[y], out[N_CLASSES], atol=1e-4), f"label {y} has no effect"
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    # labels=None on a conditional net means the null label (index num_classes).
    torch.testing.assert_close(out_none, out[N_CLASSES])


@pytest.mark.parametrize("bad", [N_CLASSES + 1, -1, 100])
def test_label_out_of_range_is_a_clear_error(bad):
    net = tiny(1)
    x, t, _ = batch(8, 12)
    labels = torch.tensor([0, bad])
    with pytest.raises(ValueError, match=rf"label {bad} is out of range.*0\.\.{N_CLASSES - 1}.*{N_CLASSES}"):
        net(x, t, labels)


def test_unconditional_net_takes_only_null_labels():
    net = perturb(tiny(1, num_classes=0))
    x, t, _ = batch(8, 12)
    torch.testing.assert_close(net(x, t, torch.zeros(2, dtype=torch.long)), net(x, t))
    with pytest.raises(ValueError, match="label 1 given to an unconditional net"):
        net(x, t, torch.tensor([1, 0]))


def test_bad_inputs_are_clear_errors():
    net = tiny(1)
    x, t, labels = batch(8, 12)
    with pytest.raises(ValueError, match="9 mel bins.*n_mels=8"):
        net(torch.randn(2, 9, 12), t)
    with pytest.raises(ValueError, match=r"expected \[batch, n_mels, frames\]"):
        net(x[:, None], t)
    with pytest.raises(ValueError, match="integer tensor"):
        net(x, t, labels.float())
    with pytest.raises(ValueError, match=r"t has shape \(3,\)"):
        net(x, torch.zeros(3), labels)
    with pytest.raises(ValueError, match=r"attention_levels \[3\] are out of range: levels are 0\.\.2"):
        tiny(1, attention_levels=(3,))
    with pytest.raises(ValueError, match="dims=3"):
        tiny(3)


@pytest.mark.parametrize("dims", [1, 2])
def test_deterministic_and_batch_independent(dims):
    net = perturb(tiny(dims, n_mels=9 if dims == 2 else 8, dropout=0.5)).eval()
    x, t, labels = batch(net.n_mels, 29, b=4)
    with torch.no_grad():
        out = net(x, t, labels)
        torch.testing.assert_close(net(x, t, labels), out, rtol=0, atol=0)
        assert out.abs().mean() > 1e-3  # not trivially zero
        # Sample i alone, and beside different neighbours, gives the same output.
        for i in range(4):
            alone = net(x[i : i + 1], t[i : i + 1], labels[i : i + 1])
            torch.testing.assert_close(alone, out[i : i + 1], rtol=1e-4, atol=1e-5)
        others = torch.randn_like(x)
        others[1] = x[1]
        mixed = net(others, t, labels)
        torch.testing.assert_close(mixed[1], out[1], rtol=1e-4, atol=1e-5)


def test_timestep_conditioning_float_and_scalar():
    net = perturb(tiny(1)).eval()
    x, _, labels = batch(8, 16)
    with torch.no_grad():
        a = net(x, torch.tensor([10, 10]), labels)
        torch.testing.assert_close(net(x, torch.tensor([10.0, 10.0]), labels), a)
        torch.testing.assert_close(net(x, torch.tensor(10), labels), a)  # scalar broadcasts
        assert not torch.allclose(net(x, torch.tensor([10.5, 10.5]), labels), a, atol=1e-6)
        assert not torch.allclose(net(x, torch.tensor([900, 900]), labels), a, atol=1e-4)


def test_channels_last_2d_matches():
    net = perturb(tiny(2, n_mels=9)).eval()
    x, t, labels = batch(9, 21)
    with torch.no_grad():
        ref = net(x, t, labels)
        out = net.to(memory_format=torch.channels_last)(x, t, labels)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_matches():
    x, t, labels = batch(8, 16)
    grads = []
    for use_checkpoint in (False, True):
        net = perturb(tiny(1, use_checkpoint=use_checkpoint))
        net(x, t, labels).pow(2).mean().backward()
        grads.append([p.grad for p in net.parameters()])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g1, g0)


@pytest.mark.parametrize("dims", [1, 2])
def test_forward_flops_scale_with_frames(dims):
    net = tiny(dims, attention_levels=())
    f64, f128 = forward_flops(net, 64), forward_flops(net, 128)
    assert f64 > 0
    assert 1.9 < f128 / f64 < 2.1
    # Per sample: the batch size does not change the count.
    assert forward_flops(net, 64, batch=3) == f64
    # Attention is counted (PyTorch has no CPU formula for it; forward_flops adds one).
    with_attention = tiny(dims)
    assert forward_flops(with_attention, 64) > f64


@pytest.mark.parametrize("dims", [1, 2])
def test_gradient_reaches_every_parameter(dims):
    net = tiny(dims, dropout=0.1)
    x, t, _ = batch(8, 20, b=8)
    labels = torch.arange(8) % (N_CLASSES + 1)  # every class and the null label
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    # Zero-initialised layers block the gradient to what lies behind them until they
    # move: step 1 moves the output conv, step 2 the residual branches' last convs,
    # and from step 3 every parameter has a non-zero gradient.
    for _ in range(3):
        opt.zero_grad()
        (net(x, t, labels) - x).pow(2).mean().backward()
        opt.step()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    zero = [n for n, p in net.named_parameters() if p.grad is not None and torch.count_nonzero(p.grad) == 0]
    assert not missing, f"no gradient: {missing}"
    assert not zero, f"zero gradient: {zero}"


def test_presets_sizes():
    expected = {  # (min, max) parameters, from the sizing brief
        "digits": (20e6, 30e6),
        "digits_cpu": (1e6, 2.5e6),
        "smoke": (3e3, 50e3),
        "peer": (113.7e6 * 0.9, 113.7e6 * 1.1),  # diffusers audio-diffusion UNet2DModel
    }
    assert set(PRESETS) == set(expected)
    for name, (lo, hi) in expected.items():
        with torch.device("meta"):  # no memory, no init time
            n = from_preset(name).num_parameters()
        assert lo <= n <= hi, f"{name}: {n} parameters, expected {lo:.0f}..{hi:.0f}"
    with pytest.raises(ValueError, match="unknown UNet preset 'nope'.*digits"):
        from_preset("nope")


def test_smoke_preset_runs_forward_backward():
    # Off its init: the zero-initialised output conv would otherwise block every gradient behind it.
    net = perturb(from_preset("smoke"))
    x, t, labels = batch(80, 87)
    out = net(x, t, labels)
    assert out.shape == (2, 80, 87) and torch.isfinite(out).all()
    (out - x).pow(2).mean().backward()
    params = dict(net.named_parameters())
    missing = [n for n, p in params.items() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    bad = [n for n, p in params.items() if not torch.isfinite(p.grad).all()]
    zero = [n for n, p in params.items() if torch.count_nonzero(p.grad) == 0]
    assert not bad and not zero, f"non-finite gradient: {bad}; zero gradient: {zero}"
