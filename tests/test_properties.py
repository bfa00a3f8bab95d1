"""Property-based tests (hypothesis): random audio configs, lengths, sample rates and channel counts
give either a valid result (the right shape, finite) or the documented error with a one-line message.

AudioConfig -> AudioConfigError; MelSpec on too short a waveform -> ValueError; load_audio on a file
with no samples -> AudioFileError; MelDataset on a prepared folder with no usable clip, or a bad
segment length -> ValueError. Small example counts and no deadline keep this under a minute on 2 cores.
"""
import math
import uuid

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from audiodiff.audio import AudioConfig, AudioConfigError, AudioFileError, MelSpec, load_audio

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RATES = st.one_of(st.sampled_from([8000, 11025, 16000, 22050, 24000, 44100, 48000]), st.integers(1000, 96000))


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text, repr(text)
    return text


@st.composite
def any_configs(draw):
    """Anything: plausible values with invalid ones (zero, negative, NaN, above Nyquist) mixed in."""
    sample_rate = draw(st.one_of(RATES, st.integers(-10, 0)))
    n_fft = draw(st.one_of(st.sampled_from([64, 128, 256, 512, 1024, 2048]), st.integers(-2, 2048)))
    return dict(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=draw(st.one_of(st.sampled_from([64, 128, 256]), st.integers(-1, 1024))),
        win_length=draw(st.one_of(st.just(n_fft), st.integers(-1, 2048))),
        n_mels=draw(st.one_of(st.sampled_from([8, 16, 40, 80]), st.integers(-1, 300))),
        fmin=draw(st.one_of(st.just(0.0), st.floats(-100, 30000), st.just(math.nan))),
        fmax=draw(st.one_of(st.just(min(8000.0, max(sample_rate, 2) / 2)), st.floats(-10, 60000),
                            st.just(math.inf))),
        log_floor=draw(st.one_of(st.just(1e-5), st.floats(-1, 2))),
        normalization=draw(st.sampled_from(["minmax", "none", "log"])),
    )


@st.composite
def plausible_configs(draw):
    """Values a user might choose; most are valid (n_mels can still exceed the FFT bins)."""
    sample_rate = draw(RATES)
    n_fft = draw(st.one_of(st.sampled_from([64, 256, 512, 1024, 2048]), st.integers(16, 2048)))
    nyquist = sample_rate / 2
    fmin = draw(st.one_of(st.just(0.0), st.floats(0, nyquist / 2)))
    return dict(
        sample_rate=sample_rate, n_fft=n_fft,
        hop_length=draw(st.integers(16, 512)),
        win_length=draw(st.integers(16, n_fft)),
        n_mels=draw(st.integers(1, 160)),
        fmin=fmin,
        fmax=draw(st.one_of(st.just(nyquist), st.floats(fmin + 1, nyquist))),
        log_floor=draw(st.floats(1e-8, 0.5)),
        normalization=draw(st.sampled_from(["minmax", "none"])),
    )


def config_or_error(values):
    try:
        return AudioConfig(**values)
    except AudioConfigError as e:
        assert "AudioConfig." in one_line(e) and "invalid" in str(e)
        return None


@FAST
@given(values=any_configs())
def test_audio_config_valid_or_one_line_error(values):
    config = config_or_error(values)
    event("valid" if config is not None else "AudioConfigError")
    if config is not None:  # a valid config round-trips through its dict and hash
        assert AudioConfig.from_dict(config.to_dict()) == config and len(config.hash()) == 16
        assert 0 <= config.fmin < config.fmax <= config.sample_rate / 2
        assert config.n_mels <= config.n_fft // 2 + 1 and config.win_length <= config.n_fft


@FAST
@given(values=plausible_configs(), batch=st.integers(1, 2), length=st.integers(0, 6000), seed=st.integers(0, 2**16))
# an odd n_fft pads n_fft - 1 samples: F = 1 + (T - 1) // hop (num_frames once said 1 + T // hop)
@example(values=dict(sample_rate=8000, n_fft=17, hop_length=16, win_length=16, n_mels=1, fmin=0.0, fmax=4000.0,
                     log_floor=0.5, normalization="minmax"), batch=1, length=16, seed=0)
def test_melspec_shape_or_documented_error(values, batch, length, seed):
    config = config_or_error(values)
    assume(config is not None)
    assume((length // config.hop_length + 1) * (config.n_fft // 2 + 1) <= 2_000_000)  # keep each example fast
    melspec = MelSpec(config)
    wave = 0.5 * torch.randn(batch, length, generator=torch.Generator().manual_seed(seed))
    try:
        mel = melspec(wave)
    except ValueError as e:
        assert "too short" in one_line(e) and length <= config.n_fft // 2
        event("too short")
        return
    event("mel")
    frames = config.num_frames(length)
    assert mel.shape == (batch, config.n_mels, frames) and mel.dtype == torch.float32
    assert torch.isfinite(mel).all()
    if config.normalization == "minmax":  # silence is -1; nothing lies below it
        assert mel.min() >= -1 - 1e-5
    magnitude = melspec.inverse_magnitude(mel)
    assert magnitude.shape == (batch, config.n_fft // 2 + 1, frames) and torch.isfinite(magnitude).all()


@SLOW
@given(file_rate=RATES, target=st.one_of(st.none(), RATES), channels=st.integers(1, 6),
       frames=st.integers(0, 4000), subtype=st.sampled_from(["PCM_16", "PCM_24", "FLOAT"]),
       seed=st.integers(0, 2**16))
# rates whose ratio reduces to large numbers: torchaudio's kernel alone would take 8 GB here
@example(file_rate=22051, target=22050, channels=2, frames=4000, subtype="PCM_16", seed=0)
def test_load_audio_any_rate_and_channels(tmp_path_factory, file_rate, target, channels, frames, subtype, seed):
    path = tmp_path_factory.getbasetemp() / f"prop_{uuid.uuid4().hex}.wav"
    data = np.random.default_rng(seed).uniform(-0.9, 0.9, (frames, channels)).astype(np.float32)
    sf.write(path, data, file_rate, subtype=subtype)
    try:
        wave = load_audio(path, target)
    except AudioFileError as e:
        assert frames == 0 and "no samples" in one_line(e) and str(path) in str(e)
        event("no samples")
        return
    finally:
        path.unlink()
    assert wave.dim() == 1 and wave.dtype == torch.float32 and torch.isfinite(wave).all()
    if target is None or target == file_rate:
        assert wave.shape[0] == frames
        tolerance = 1e-6 if subtype == "FLOAT" else 2.0 ** -14
        np.testing.assert_allclose(wave.numpy(), data.mean(axis=1), atol=tolerance)  # the mono mixdown
    else:
        assert wave.shape[0] == math.ceil(frames * target / file_rate)
        assert wave.abs().max() < 2.0  # band-limited resampling overshoots a little, never explodes


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tmp_path_factory.mktemp("prop_clips")


@SLOW
@given(values=plausible_configs(), file_rate=RATES, seconds=st.lists(st.floats(0.0, 0.6), min_size=1, max_size=3),
       segment_frames=st.integers(-1, 64), split_frames=st.one_of(st.none(), st.integers(1, 64)),
       in_memory=st.booleans(), seed=st.integers(0, 2**16))
def test_mel_dataset_shape_or_documented_error(clips, values, file_rate, seconds, segment_frames, split_frames,
                                               in_memory, seed):
    """Clips of random length at a random rate, prepared with a random audio config, then cut into
    random segments: items are [n_mels, segment_frames], finite, with length <= segment_frames."""
    from audiodiff.data import MelDataset
    from audiodiff.prepare import PrepareArgumentError, prepare

    config = config_or_error(values)
    assume(config is not None and config.sample_rate <= 48000 and config.hop_length >= 32)
    root = clips / uuid.uuid4().hex
    root.mkdir()
    rng = np.random.default_rng(seed)
    for i, s in enumerate(seconds):
        n = int(s * file_rate)
        if n == 0:
            (root / f"c{i}.wav").write_bytes(b"")  # an empty file: skipped by prepare, never an exception
        else:
            sf.write(root / f"c{i}.wav", rng.uniform(-0.5, 0.5, n).astype(np.float32), file_rate)
    try:
        report = prepare(root, root / "prepared", config, workers=0, progress=False, min_seconds=0.05)
    except PrepareArgumentError as e:  # an audio config prepare cannot use (e.g. n_fft beyond the clips)
        event("prepare refused the arguments")
        one_line(e)
        return
    try:
        ds = MelDataset(root / "prepared", segment_frames, split_frames=split_frames, in_memory=in_memory, seed=seed)
    except ValueError as e:
        message = one_line(e)
        bad_length = segment_frames < 1 or (split_frames is not None and split_frames < segment_frames)
        if bad_length:  # checked first, before the folder is read
            assert f"segment_frames={segment_frames}" in message or f"split_frames={split_frames}" in message, message
        else:
            assert report.usable == 0 and "no usable clips" in message, message
        event("MelDataset error: " + ("bad segment or split length" if bad_length else "no usable clips"))
        return
    event("valid dataset")
    assert report.usable >= 1 and len(ds) >= report.usable and ds.n_mels == config.n_mels
    for epoch in (0, 1):
        for index in range(len(ds)):
            item = ds[(index, epoch)]
            assert item["mel"].shape == (config.n_mels, segment_frames)
            assert torch.isfinite(item["mel"]).all() and 1 <= item["length"] <= segment_frames
            assert (item["mel"][:, item["length"]:] == ds.silence).all()  # the padding is silence
