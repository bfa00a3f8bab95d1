"""Per-bin standardisation of the diffusion state (audiodiff.diffusion.scaling, data.bin_statistics)."""

import numpy as np
import pytest
import torch
from conftest import prepare_clips

from audiodiff.audio import AudioConfig
from audiodiff.data import MelDataset, bin_statistics
from audiodiff.diffusion.scaling import DataScaler
from audiodiff.diffusion.schedules import NoiseSchedule
from audiodiff.nets.unet import UNet
from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError

SMALL = AudioConfig(n_mels=16)


def test_encode_decode_are_inverse_and_bounds_map_the_range():
    mean, std = torch.linspace(-0.5, 0.2, 16), torch.linspace(0.1, 0.4, 16)
    s = DataScaler(mean, std)
    mel = torch.rand(3, 16, 20) * 2 - 1
    x = s.encode(mel)
    assert torch.allclose(s.decode(x), mel, atol=1e-6)
    assert torch.allclose(x[0, :, 0], (mel[0, :, 0] - mean) / std, atol=1e-6)
    lo, hi = s.bounds(-1.0, 1.0)
    assert lo.shape == hi.shape == (16, 1)
    assert torch.allclose(s.decode(lo.expand(16, 5)), torch.full((16, 5), -1.0), atol=1e-6)
    assert torch.allclose(s.decode(hi.expand(16, 5)), torch.full((16, 5), 1.0), atol=1e-6)


def test_config_round_trip_and_errors():
    s = DataScaler([0.0, 1.0], [1.0, 2.0])
    back = DataScaler.from_config(s.to_config(), 2)
    assert torch.equal(back.mean, s.mean) and torch.equal(back.std, s.std)
    assert DataScaler.from_config({"prediction": "v"}, 2) is None
    with pytest.raises(ValueError, match="only one of"):
        DataScaler.from_config({"data_mean": [0.0, 1.0]}, 2)
    with pytest.raises(ValueError, match="n_mels=3"):
        DataScaler.from_config(s.to_config(), 3)
    with pytest.raises(ValueError, match="data_std > 0"):
        DataScaler([0.0], [0.0])
    with pytest.raises(ValueError, match="one value per mel bin"):
        DataScaler([0.0, 1.0], [1.0])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    rng = np.random.default_rng(0)

    def clip(i):
        n = int((0.3 + 0.1 * i) * 22050)  # clips of different lengths
        return 0.2 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(n) / 22050) + 0.01 * rng.standard_normal(n), i % 2
    return prepare_clips(tmp_path_factory.mktemp("clips"), [clip(i) for i in range(6)], SMALL)


@pytest.mark.parametrize("in_memory", [True, False])
def test_bin_statistics_are_over_the_real_frames_of_every_clip(prepared, in_memory):
    ds = MelDataset(prepared, segment_frames=8, in_memory=in_memory)
    frames = torch.cat([ds.clip(i) for i in range(len(ds.entries))], dim=1).double()  # [n_mels, sum F]
    mean, std = bin_statistics(ds)
    assert mean.shape == std.shape == (16,)
    assert torch.allclose(mean.double(), frames.mean(1), atol=1e-5)
    assert torch.allclose(std.double(), frames.std(1, unbiased=False), atol=1e-5)
    # evenly spaced subset: first and last clip always in
    sub_mean, _ = bin_statistics(ds, max_clips=2)
    two = torch.cat([ds.clip(0), ds.clip(len(ds.entries) - 1)], dim=1).double()
    assert torch.allclose(sub_mean.double(), two.mean(1), atol=1e-5)


def _pipe(scaler_config):
    torch.manual_seed(0)
    net = UNet(dims=1, n_mels=16, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(),
               num_classes=0)
    return AudioDiffusionPipeline(net, NoiseSchedule("linear", 100), SMALL, prediction="v",
                                  config={"diffusion": scaler_config}, segment_frames=12)


def test_pipeline_decodes_samples_and_keeps_them_in_the_mel_range(tmp_path):
    stats = DataScaler(torch.linspace(-0.6, 0.0, 16), torch.full((16,), 0.25)).to_config()
    pipe = _pipe(stats)
    mel = pipe.sample_mel(batch_size=2, steps=5, progress=False)
    assert mel.min() >= -1 and mel.max() <= 1
    # the same net without statistics walks the same state trajectory: the scaler only decodes it
    unclipped = pipe.sample_mel(batch_size=2, steps=5, progress=False, clip=False)
    plain = _pipe({}).sample_mel(batch_size=2, steps=5, progress=False, clip=False)
    assert torch.allclose(unclipped, pipe.scaler.decode(plain), atol=1e-5)
    pipe.save_pretrained(tmp_path / "model")
    back = AudioDiffusionPipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert torch.equal(back.scaler.mean, pipe.scaler.mean) and torch.equal(back.scaler.std, pipe.scaler.std)
    assert torch.equal(back.sample_mel(batch_size=2, steps=5, progress=False), mel)


def test_model_with_broken_statistics_is_a_one_line_load_error(tmp_path):
    import yaml

    pipe = _pipe(DataScaler(torch.zeros(16), torch.ones(16)).to_config())
    pipe.save_pretrained(tmp_path / "model")
    cfg_file = tmp_path / "model" / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["diffusion"]["data_std"] = cfg["diffusion"]["data_std"][:8]
    cfg_file.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ModelLoadError, match="one value per mel bin") as e:
        AudioDiffusionPipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert "\n" not in str(e.value)


def test_a_constant_bin_gets_the_minimum_std_not_zero():
    from types import SimpleNamespace

    from audiodiff.data import MIN_STD

    frames = torch.randn(10, 4)
    frames[:, 2] = -1.0  # a bin that never changes (band-limited audio)
    stub = SimpleNamespace(entries=[{"num_frames": 10}], n_mels=4, dir="stub",
                           _frames=lambda clip, start, stop: frames[start:stop])
    mean, std = bin_statistics(stub)
    assert std[2] == pytest.approx(MIN_STD) and mean[2] == pytest.approx(-1.0)
    assert torch.allclose(std[[0, 1, 3]], frames[:, [0, 1, 3]].std(0, unbiased=False), atol=1e-6)
    DataScaler(mean, std)  # usable: no division by zero, no "data_std > 0" error
