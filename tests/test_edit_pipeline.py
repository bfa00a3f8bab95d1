"""Edits on a tiny CPU model (../shared/editing-spec.md section 8.4, the checks that need a real net):
strength 0 returns the input bit for bit, strength 1 is plain generation with the same seed, kept
mel cells (and kept samples) are bit-exact for every sampler and mask, a batch equals its clips one
by one, extension and loops have exactly the length asked, encode/decode round trips."""
import math

import pytest
import torch

from audiodiff.diffusion.editing import window_eps_fn
from audiodiff.outputs import AudioOutput
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.regions import crossfade_splice, parse_time
from test_pipeline import make_run

SR = 22050


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("edit") / "run", num_classes=3)
    return AudioDiffusionPipeline.from_pretrained(run, device="cpu")


def wave(seconds=0.5, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * SR)) / SR
    tone = 0.3 * torch.sin(2 * math.pi * 330 * t)
    return (tone + 0.05 * torch.randn(batch, t.numel(), generator=g)).clamp(-1, 1)


def test_vary_strength_zero_is_the_input_and_one_is_plain_generation(pipe):
    x = wave()
    out = pipe.vary(x, strength=0, sample_rate=SR, labels=1, progress=False)
    src = pipe.load_source(x, SR)
    assert torch.equal(out.mel, src.mel) and torch.equal(out.audio, x) and not out.mask.any()
    assert out.edit["nfe"] == 0 and out.edit["metrics"]["kept_max_abs"] == 0
    seconds = x.shape[-1] / SR
    for sampler in ("ddpm", "ddim", "dpmpp"):
        varied = pipe.vary(x, strength=1, sampler=sampler, steps=6, seed=3, sample_rate=SR, labels=2,
                           guidance_scale=2.0, progress=False)
        plain = pipe(steps=6, sampler=sampler, seed=3, labels=2, guidance_scale=2.0, seconds=seconds,
                     return_mel=True, progress=False)
        assert torch.equal(varied.mel, plain.mel), sampler
        assert torch.equal(varied.audio, plain.audio[:, :x.shape[-1]]), sampler
    mid = pipe.vary(x, strength=0.5, steps=6, sample_rate=SR, progress=False)
    assert mid.mask.all() and not torch.equal(mid.mel, src.mel)
    inverted = pipe.vary(x, strength=0.3, steps=6, invert=True, refine=1, sample_rate=SR, progress=False)
    assert inverted.edit["invert"] and inverted.edit["nfe"] > mid.edit["nfe"] // 2


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("bins", [None, (4, 12)])
def test_inpaint_keeps_every_kept_cell_and_sample(pipe, sampler, bins):
    x = wave()
    regions = [(0.1, 0.2), ("-0:00.1", None)]
    out = pipe.inpaint(x, regions=regions, bins=bins, steps=5, sampler=sampler, resample=2, sample_rate=SR,
                       progress=False)
    src = pipe.load_source(x, SR)
    kept = ~full_mask(out)
    assert torch.equal(out.mel[kept], src.mel[kept]) and out.edit["metrics"]["kept_max_abs"] == 0
    assert not torch.equal(out.mel[~kept], src.mel[~kept])
    assert out.mask.shape == ((1, 16, 44) if bins else (1, 44))
    assert out.audio.shape == x.shape and out.edit["metrics"]["kept_audio_max_abs"] == 0
    fade = round(0.02 * SR)
    hop = pipe.audio_config.hop_length
    outside = torch.ones(x.shape[-1], dtype=torch.bool)
    for a, b in out.edit["regions_frames"]:
        outside[max(0, a * hop - fade):b * hop + fade] = False
    assert torch.equal(out.audio[:, outside], x[:, outside])
    (a0, b0), (a1, b1) = out.edit["regions_frames"]
    assert b1 == out.mel.shape[-1] and abs(a0 * hop / SR - 0.1) <= hop / SR


def full_mask(out):
    """The output's mask as [B, n_mels, F] (a time mask [B, F] covers every bin)."""
    return out.mask if out.mask.dim() == 3 else out.mask[:, None].expand_as(out.mel)


def test_a_batch_equals_its_clips_one_by_one(pipe):
    x = wave(batch=2, seed=4)
    both = pipe.inpaint(x, regions=[(0.2, 0.3)], steps=4, resample=2, seed=10, sample_rate=SR, progress=False)
    for i in range(2):
        one = pipe.inpaint(x[i:i + 1], regions=[(0.2, 0.3)], steps=4, resample=2, seed=10 + i, sample_rate=SR,
                           progress=False)
        assert torch.allclose(both.mel[i], one.mel[0], atol=1e-4)
    varied = pipe.vary(x, strength=0.6, steps=4, seed=7, sample_rate=SR, progress=False)
    alone = pipe.vary(x[1:], strength=0.6, steps=4, seed=8, sample_rate=SR, progress=False)
    assert torch.allclose(varied.mel[1], alone.mel[0], atol=1e-4)


@pytest.mark.parametrize("side", ["right", "left", "both"])
def test_extend_gives_exactly_the_length_asked_and_keeps_the_source(pipe, side):
    x = wave(0.4)
    hop = pipe.audio_config.hop_length
    out = pipe.extend(x, seconds=0.5, side=side, steps=4, resample=2, sample_rate=SR, progress=False)
    added = out.edit["added_frames"]
    assert added == round(0.5 * SR / hop)
    assert out.audio.shape[-1] == x.shape[-1] + added * hop
    src = pipe.load_source(x, SR)
    assert out.mel.shape[-1] == src.mel.shape[-1] + added
    left = {"right": 0, "left": added, "both": added // 2}[side]
    assert torch.equal(out.mel[..., left:left + src.mel.shape[-1]], src.mel)
    fade = round(0.02 * SR)
    core = slice(left * hop + fade, left * hop + x.shape[-1] - fade)
    assert torch.equal(out.audio[:, core], x[:, core.start - left * hop:core.stop - left * hop])
    assert out.edit["nfe"] > 4 * 2  # windows: the 0.9 s mel is longer than the 12-frame segment


def test_long_and_looping_generation_by_windows(pipe):
    long = pipe(seconds=0.77, steps=3, labels=0, progress=False, return_mel=True)
    assert long.audio.shape[-1] == round(0.77 * SR)
    assert long.edit["window_frames"] == pipe.segment_frames and long.edit["nfe"] > 3
    loop = pipe(seconds=0.5, loop=True, steps=3, labels=0, progress=False, return_mel=True)
    frames = round(0.5 * SR / pipe.audio_config.hop_length)
    assert loop.mel.shape[-1] == frames and loop.audio.shape[-1] == frames * pipe.audio_config.hop_length
    assert loop.edit["op"] == "loop"
    # the circular windows of the real net are shift-equivariant by multiples of the stride
    eps = pipe.sampling_eps_fn([0], clip=False)
    fn = window_eps_fn(eps, 48, 12, 3, circular=True)
    x = torch.randn(1, pipe.audio_config.n_mels, 48, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([400])
    with torch.inference_mode():
        assert torch.allclose(fn(torch.roll(x, 6, -1), t), torch.roll(fn(x, t), 6, -1), atol=1e-4)


def test_make_loop_regenerates_the_seam_only(pipe):
    x = wave(0.6)
    out = pipe.make_loop(x, seam_seconds=0.05, steps=4, resample=2, sample_rate=SR, progress=False)
    hop = pipe.audio_config.hop_length
    assert out.audio.shape[-1] == (x.shape[-1] // hop) * hop
    frames = out.mel.shape[-1]
    seam = out.edit["regions_frames"][0][1]
    assert out.mask[0, :seam].all() and out.mask[0, frames - seam:].all()
    assert not out.mask[0, seam:frames - seam].any()
    m = out.edit["metrics"]
    assert {"loop_seam_ratio", "wrap_click", "kept_max_abs"} <= set(m) and m["kept_max_abs"] == 0


def test_encode_decode_round_trip_and_interpolation(pipe):
    x = wave(0.3)
    naive = pipe.encode(x, steps=8, refine=0, sample_rate=SR, labels=1, progress=False)
    refined = pipe.encode(x, steps=8, refine=3, sample_rate=SR, labels=1, progress=False)
    assert refined.roundtrip_error[0] < naive.roundtrip_error[0]
    back = pipe.decode(refined, progress=False)
    src = pipe.load_source(x, SR)
    err = ((back.mel - src.mel).norm() / src.mel.norm()).item()
    assert abs(err - refined.roundtrip_error[0]) < 1e-4
    y = wave(0.35, seed=5)
    mix = pipe.interpolate(x, y, alphas=(0, 0.5, 1), steps=6, refine=2, sample_rate=SR, labels=1, progress=False)
    assert mix.audio.shape[0] == 3 and mix.edit["op"] == "interpolate"
    frames = mix.mel.shape[-1]
    ends = [pipe.decode(pipe.encode(None, mel=s[..., :frames], steps=6, refine=2, labels=1, progress=False),
                         progress=False)
            for s in (src.mel, pipe.load_source(y, SR).mel)]
    # a batch of 3 against batches of 1: batched rounding (1e-4), amplified a little by 6 DDIM steps of random weights
    for i, end in ((0, ends[0]), (2, ends[1])):
        assert torch.allclose(mix.mel[i], end.mel[0], atol=5e-4)


def test_inputs_of_every_kind(pipe, tmp_path):
    import soundfile as sf

    x = wave(0.3)
    sf.write(tmp_path / "a.wav", x[0].numpy(), SR, subtype="FLOAT")
    from_file = pipe.load_source(tmp_path / "a.wav")
    assert torch.equal(from_file.audio, x)
    out = pipe(steps=2, return_mel=True, progress=False, labels=0)
    assert torch.equal(pipe.load_source(out).mel, out.mel)
    assert torch.equal(pipe.load_source(None, mel=out.mel).mel, out.mel)
    at_16k = pipe.load_source(x[:, ::2], sample_rate=SR // 2)
    assert at_16k.audio.shape[-1] == 2 * x[:, ::2].shape[-1]  # resampled to the model rate
    assert isinstance(pipe.vary(None, mel=out.mel, strength=0.2, steps=3, progress=False), AudioOutput)


@pytest.mark.parametrize("call, match", [
    (lambda p, x: p.vary(x, strength=1.5, sample_rate=SR), "strength"),
    (lambda p, x: p.vary(x), "sample_rate"),
    (lambda p, x: p.inpaint(x, regions=[(0.3, 0.2)], sample_rate=SR), "empty"),
    (lambda p, x: p.inpaint(x, regions=[], sample_rate=SR), "regions is empty"),
    (lambda p, x: p.inpaint(x, regions=[("1:xx", None)], sample_rate=SR), "mm:ss"),
    (lambda p, x: p.inpaint(x, regions=[(0.1, 0.2)], sampler="dpmpp", sample_rate=SR), "dpmpp"),
    (lambda p, x: p.inpaint(x, regions=[(0.1, 0.2)], bins=(5, 99), sample_rate=SR), "bins"),
    (lambda p, x: p.inpaint(x, regions=[(0.1, 0.2)], resample=0, sample_rate=SR), "resample"),
    (lambda p, x: p.inpaint(x, regions=[(0.1, 0.2)], crossfade_ms=-1, sample_rate=SR), "crossfade_ms"),
    (lambda p, x: p.extend(x, seconds=0, sample_rate=SR), "seconds"),
    (lambda p, x: p.extend(x, seconds=1, side="up", sample_rate=SR), "side"),
    (lambda p, x: p.make_loop(x, seam_seconds=5, sample_rate=SR), "seam_seconds"),
    (lambda p, x: p.encode(x, refine=-1, sample_rate=SR), "refine"),
    (lambda p, x: p.interpolate(x, x, alphas=(0, 2), sample_rate=SR), "alphas"),
    (lambda p, x: p.vary(x, strength=0.5, labels=7, sample_rate=SR), "label 7"),
])
def test_bad_arguments_raise_one_line_value_errors(pipe, call, match):
    with pytest.raises(ValueError, match=match) as e:
        call(pipe, wave(0.3))
    assert "\n" not in str(e.value)


def test_times_and_the_crossfade():
    assert parse_time(1.5, 10) == 1.5 and parse_time("0:01.5", 10) == 1.5 and parse_time("-0:00.5", 10) == 9.5
    assert parse_time(-2, 10) == 8 and parse_time("1:00", 100) == 60
    kept, new = torch.zeros(1, 100), torch.ones(1, 100)
    out = crossfade_splice(kept, new, [(40, 60)], 10)
    assert torch.equal(out[:, :30], kept[:, :30]) and torch.equal(out[:, 70:], kept[:, 70:])
    assert torch.equal(out[:, 40:60], new[:, 40:60])
    ramp = out[0, 30:40]
    assert (ramp.diff() > 0).all() and 0 < ramp[0] < ramp[-1] < 1
