"""audiodiff.fast: the fast sampling path gives the plain path's samples; thread policy; label checks.

The CUDA tests run on a GPU machine only (benchmarks/gpu_check.sh runs this file there).
"""

import pytest
import torch

from audiodiff import fast
from audiodiff.audio import AudioConfig
from audiodiff.diffusion.schedules import NoiseSchedule
from audiodiff.nets.unet import UNet
from audiodiff.pipeline import AudioDiffusionPipeline

N_MELS, FRAMES, CLASSES = 16, 12, 3
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_pipe(dims=1, num_classes=CLASSES, device="cpu"):
    torch.manual_seed(0)
    net = UNet(dims=dims, n_mels=N_MELS, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
               attention_levels=(1,), num_heads=2, groups=4, num_classes=num_classes)
    with torch.no_grad():  # move every weight off its init, so the output is not identically zero
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pipe = AudioDiffusionPipeline(net, NoiseSchedule(), AudioConfig(n_mels=N_MELS), num_classes=num_classes,
                                  segment_frames=FRAMES)
    return pipe.to(device)


def sample(pipe, fast_mode, **kw):
    pipe.fast = fast_mode
    return pipe.sample_mel(progress=False, **kw)


@pytest.mark.parametrize("sampler", ["dpmpp", "ddim", "ddpm"])
def test_cpu_fast_path_gives_the_plain_samples_on_one_thread(sampler, monkeypatch):
    monkeypatch.delenv("AUDIODIFF_CPU_THREADS", raising=False)
    pipe = tiny_pipe()
    seen = []
    pipe.net.register_forward_hook(lambda m, i, o: seen.append(torch.get_num_threads()))
    kw = dict(batch_size=3, steps=6, sampler=sampler, seed=2, labels=[0, 1, 2], guidance_scale=2.0)
    before = torch.get_num_threads()
    with fast.cpu_threads(2):
        plain = sample(pipe, False, **kw)
        plain_threads, seen[:] = list(seen), []
        quick = sample(pipe, True, **kw)
        assert torch.get_num_threads() == 2  # restored after the call
    assert torch.get_num_threads() == before
    assert set(plain_threads) == {2} and set(seen[1:]) == {1}  # seen[0]: the FLOP estimate's forward
    # one thread against two: float32 sums in another order (1.5e-5 seen on one mel cell of 576)
    torch.testing.assert_close(quick, plain, rtol=1e-4, atol=5e-5)
    assert quick.abs().mean() > 1e-2


def test_thread_policy(monkeypatch):
    monkeypatch.delenv("AUDIODIFF_CPU_THREADS", raising=False)
    assert fast.cpu_threads_for(1e8) == 1
    assert fast.cpu_threads_for(1e12) is None
    assert fast.cpu_threads_for(None) is None
    monkeypatch.setenv("AUDIODIFF_CPU_THREADS", "3")
    assert fast.cpu_threads_for(1e8) == 3
    monkeypatch.setenv("AUDIODIFF_CPU_THREADS", "zero")
    with pytest.raises(ValueError, match="AUDIODIFF_CPU_THREADS='zero'"):
        fast.cpu_threads_for(1e8)


def test_flop_estimate_matches_the_exact_count():
    from audiodiff.nets.unet import PRESET_INPUTS, forward_flops, from_preset

    net = tiny_pipe().net
    estimate = fast.net_forward_flops(net, N_MELS, 24)
    exact = forward_flops(net, 24)
    # The estimate leaves out attention scores: 6.6% of this tiny net (one 16-channel attention level).
    assert 0.9 * exact < estimate <= exact
    assert fast.net_forward_flops(net, N_MELS, 24) is estimate  # cached
    # benchmarks/RESULTS.md: "within 1% of the exact count for digits_cpu: 0.1152 vs 0.1161 GFLOP"
    # (measured 115,200,000 vs 116,129,280: 0.80% under).
    n_mels, frames = PRESET_INPUTS["digits_cpu"]
    with torch.device("meta"):  # shapes only: no weights, no init time
        preset = from_preset("digits_cpu")
    estimate, exact = fast.net_forward_flops(preset, n_mels, frames), forward_flops(preset, frames)
    assert 0.99 * exact <= estimate <= exact, (estimate, exact)


def test_modes():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert fast.resolve_mode(True, cpu) == "eager"
    assert fast.resolve_mode(True, gpu) == "graph"
    assert fast.resolve_mode("compile", gpu) == "compile"
    assert fast.resolve_mode(False, gpu) == "eager"
    with pytest.raises(ValueError, match="fast='fastest' is not one of"):
        fast.resolve_mode("fastest", cpu)
    with pytest.raises(ValueError, match="needs a CUDA tensor"):
        fast.DenoiserGraph(lambda x, t: x, torch.zeros(2, 3))


def test_label_check_modes():
    net = tiny_pipe().net
    x, t = torch.randn(2, N_MELS, 8), torch.zeros(2, dtype=torch.long)
    bad = torch.tensor([0, CLASSES + 1])
    with pytest.raises(ValueError, match=f"label {CLASSES + 1} is out of range"):
        net(x, t, bad)  # "auto" checks CPU labels on every call
    with pytest.raises(ValueError, match=f"label {CLASSES + 1} is out of range"):
        net(x, t, bad)
    net.label_check = "never"
    with pytest.raises(IndexError):  # unchecked: the embedding lookup fails instead
        net(x, t, bad)
    net.label_check = "sometimes"
    with pytest.raises(ValueError, match="label_check='sometimes'"):
        net(x, t, bad)


@cuda
@pytest.mark.parametrize("dims", [1, 2])
def test_cuda_graph_path_matches_eager_and_is_cached(dims):
    pipe = tiny_pipe(dims, device="cuda")
    kw = dict(batch_size=4, steps=8, sampler="dpmpp", seed=0, guidance_scale=3.0)
    eager = sample(pipe, False, labels=[0, 1, 2, 0], **kw)
    graphed = sample(pipe, True, labels=[0, 1, 2, 0], **kw)
    torch.testing.assert_close(graphed, eager, rtol=2e-2, atol=2e-2)  # bf16 kernels may differ
    assert len(pipe._graphs) == 1
    assert isinstance(next(iter(pipe._graphs.values()))[0], fast.DenoiserGraph)  # captured, no fallback
    if dims == 2:
        conv = pipe.net.input_conv
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # New label values go through the cached graph (copied into its static buffer).
    eager2 = sample(pipe, False, labels=[2, 2, 1, 1], **kw)
    graphed2 = sample(pipe, True, labels=[2, 2, 1, 1], **kw)
    assert len(pipe._graphs) == 1
    torch.testing.assert_close(graphed2, eager2, rtol=2e-2, atol=2e-2)
    assert not torch.allclose(graphed2, graphed, atol=1e-3)
    # Another batch shape captures a second graph.
    sample(pipe, True, batch_size=2, steps=2, labels=[0, 1])
    assert len(pipe._graphs) == 2


@cuda
def test_cuda_graph_step_has_no_host_sync():
    pipe = tiny_pipe(2, device="cuda")
    sample(pipe, True, batch_size=2, steps=2, labels=[0, 1])  # capture
    graph = next(iter(pipe._graphs.values()))[0]
    x = torch.randn(2, N_MELS, FRAMES, device="cuda")
    t = torch.full((2,), 500, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        eps = graph(x, t)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert eps.shape == x.shape and torch.isfinite(eps).all()


@cuda
def test_label_range_checked_on_first_cuda_call_only():
    net = tiny_pipe(1, device="cuda").net
    x, t = torch.randn(2, N_MELS, 8, device="cuda"), torch.zeros(2, dtype=torch.long, device="cuda")
    with pytest.raises(ValueError, match="out of range"):
        net(x, t, torch.tensor([0, 9], device="cuda"))
    net(x, t, torch.tensor([0, 1], device="cuda"))
    labels = torch.tensor([1, 2], device="cuda")  # made before: a host-to-device copy syncs
    torch.cuda.set_sync_debug_mode("error")
    try:
        net(x, t, labels)  # no device-to-host read any more
    finally:
        torch.cuda.set_sync_debug_mode("default")
