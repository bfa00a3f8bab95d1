"""Training: config dry runs, the smoke objective, resume exactness, DDP equivalence, signals."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import prepare_clips

from audiodiff.audio import AudioConfig
from audiodiff.checkpoint import list_checkpoints, safe_load
from audiodiff.config import RECIPES, build, compose_config
from audiodiff.train import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = AudioConfig(n_mels=16)
TINY_NET = ["net=tiny", "net.base_channels=32", "audio=small"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors on shared cores: a second intra-op thread only spins (16x slower under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """24 labelled tone clips (3 classes), prepared with the 16-mel config."""
    rng = np.random.default_rng(0)
    t = np.arange(int(0.5 * 22050)) / 22050

    def clip(label):
        f0 = (300, 600, 1200)[label] * (1 + 0.05 * rng.standard_normal())
        return 0.3 * np.sin(2 * math.pi * f0 * t) * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t)), label
    return prepare_clips(tmp_path_factory.mktemp("tones"), [clip(i % 3) for i in range(24)], SMALL)


# AdamW (lr 1e-3) moves every weight by about lr a step whatever the size of its gradient, so a wrong
# batch, noise draw or gradient shows as differences of order 1e-3 in most weights. Float rounding
# differs between one process and an all-reduce over two; Adam's normalisation amplifies it for a
# weight whose gradient is near zero (1.2e-5 seen in one weight of 12,288 after 4 steps, torch 2.11.0).
ADAM_ROUNDING = 1e-4


def overrides(prepared, run_dir, *extra):
    return ["+experiment=digits_smoke", *TINY_NET, f"data.dir={prepared}", f"run_dir={run_dir}",
            "data.segment_frames=24", "data.num_classes=3", "train.batch_size=8", "train.log_every=5",
            "train.ckpt_every=5", "optim.warmup_steps=2", *extra]


EXPERIMENTS = sorted(p.stem for p in (RECIPES / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment):
    cfg = compose_config([f"+experiment={experiment}", "data.dir=unused"])
    audio, net, schedule = build(cfg)
    assert audio.n_mels == cfg.audio.n_mels
    frames = cfg.data.segment_frames
    x = torch.zeros(2, audio.n_mels, frames)
    labels = torch.tensor([0, cfg.data.num_classes]) if cfg.data.num_classes else None
    with torch.no_grad():
        y = net(x, torch.tensor([0, schedule.num_steps - 1]), labels)
    assert y.shape == x.shape


def recipe_values(group: str, option: str) -> dict:
    """recipes/GROUP/OPTION.yaml as written, its `defaults` parents merged in first (deeply)."""
    import yaml

    def merge(base: dict, top: dict) -> dict:
        out = dict(base)
        for k, v in top.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    raw = yaml.safe_load((RECIPES / group / f"{option}.yaml").read_text())
    values: dict = {}
    for parent in raw.pop("defaults", None) or []:
        if parent != "_self_":
            values = merge(values, recipe_values(group, parent))
    return merge(values, raw)


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in ("net", "diffusion", "audio", "optim")
                                          for p in sorted((RECIPES / g).glob("*.yaml"))])
def test_every_group_option_composes(group, option):
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from audiodiff.diffusion.schedules import NoiseSchedule
    from audiodiff.nets.unet import UNet
    from audiodiff.train_diffusion import _model_and_optimizer

    cfg = compose_config([f"{group}={option}", "data.dir=unused", "data.num_classes=2"])
    audio, net, schedule = build(cfg)
    values = recipe_values(group, option)

    def resolved(v):  # "${audio.n_mels}" -> the composed config's value
        return OmegaConf.select(cfg, v[2:-1]) if isinstance(v, str) and v.startswith("${") else v

    if group == "net":
        assert type(net) is UNet and values.pop("_target_") == "audiodiff.nets.unet.UNet"
        assert {k: net.config[k] for k in values} == {k: resolved(v) for k, v in values.items()}
        assert net.n_mels == audio.n_mels and net.num_classes == 2
    elif group == "diffusion":
        kwargs = {k: v for k, v in values.pop("schedule").items() if k != "_target_"}
        assert {k: getattr(schedule, k) for k in kwargs} == kwargs
        assert torch.equal(schedule.alpha_bar, NoiseSchedule(**kwargs).alpha_bar)
        assert {k: cfg.diffusion[k] for k in values} == values  # prediction, standardize, ...: as written
    elif group == "audio":
        assert values.pop("_target_") == "audiodiff.audio.AudioConfig" and audio == AudioConfig(**values)
    else:  # optim: the optimizer and warmup-cosine schedule that training builds from it
        _, _, optimizer, scheduler = _model_and_optimizer(cfg, net, torch.device("cpu"))
        spec = values["optimizer"]
        assert type(optimizer) is get_class(spec["_target_"])
        assert optimizer.defaults["lr"] == spec["lr"] and optimizer.defaults["weight_decay"] == spec["weight_decay"]
        assert list(optimizer.defaults["betas"]) == spec["betas"] and scheduler.base_lrs == [spec["lr"]]
        assert optimizer.param_groups[0]["lr"] == pytest.approx(spec["lr"] / values["warmup_steps"])  # step 0
        lam = scheduler.lr_lambdas[0]
        assert lam(values["warmup_steps"] - 1) == 1.0 and lam(cfg.train.max_steps) == values["min_lr_ratio"]
    # and the net runs at the composed shapes: [B, n_mels, F] in, the same out
    x = torch.randn(2, audio.n_mels, 12)
    with torch.no_grad():
        y = net(x, torch.tensor([0, schedule.num_steps - 1]), torch.tensor([0, 2]))  # 2: the null label
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    cases = [["+experiment=nope"], ["train.max_stepz=3", "data.dir=x"], ["--bogus"], [],
             ["data.dir=" + str(tmp_path / "missing"), f"run_dir={tmp_path / 'run'}"], ["task=cook", "data.dir=x"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("audiodiff.train:") and "\n" not in err, (argv, err)
    assert not (tmp_path / "run").exists()


def test_smoke_loss_falls_below_half(prepared, tmp_path):
    """With the plain DDPM objective (eps on raw mels) the smoke experiment's loss falls below half
    its first-50-step mean."""
    from audiodiff.train import train

    cfg = compose_config(overrides(prepared, tmp_path / "run", "train.max_steps=300", "train.log_every=1",
                                   "train.ckpt_every=300", "diffusion.prediction=eps",
                                   "diffusion.standardize=false"))
    summary = train(cfg)
    losses = [loss for _, loss in summary["history"]]
    assert summary["step"] == 300 and len(losses) == 300
    first = float(np.mean(losses[:50]))
    last = float(np.mean(losses[-50:]))
    assert last < 0.5 * first, (first, last)


def test_smoke_default_objective_beats_the_trivial_predictor(prepared, tmp_path):
    """The default objective, v on per-bin standardised mels, starts at the loss of predicting 0
    (E[v^2] = 1 for unit-variance data) and must get well below it; the statistics are stored."""
    from audiodiff.train import train

    cfg = compose_config(overrides(prepared, tmp_path / "run", "train.max_steps=300", "train.log_every=1",
                                   "train.ckpt_every=300"))
    assert cfg.diffusion.prediction == "v" and cfg.diffusion.standardize
    summary = train(cfg)
    losses = [loss for _, loss in summary["history"]]
    last = float(np.mean(losses[-50:]))
    assert 0.9 < np.mean(losses[:5]) < 1.2, losses[:5]
    assert last < 0.85, last
    saved = safe_load(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])["config"]["diffusion"]
    assert len(saved["data_mean"]) == len(saved["data_std"]) == cfg.audio.n_mels


def test_statistics_reach_config_yaml_and_survive_a_resume(prepared, tmp_path):
    """The per-bin statistics go into the run's config.yaml (what the pipeline reads); a resume uses
    the checkpoint's even when the config now names other ones."""
    import yaml

    from audiodiff.cli import UsageError
    from audiodiff.data import MelDataset, bin_statistics
    from audiodiff.train import train

    run = tmp_path / "run"
    train(compose_config(overrides(prepared, run, "train.max_steps=5")))
    saved = yaml.safe_load((run / "config.yaml").read_text())["diffusion"]
    mean, std = bin_statistics(MelDataset(prepared, segment_frames=24))
    assert np.allclose(saved["data_mean"], mean.numpy()) and np.allclose(saved["data_std"], std.numpy())
    other = [f"diffusion.data_mean=[{','.join(['0.0'] * 16)}]", f"diffusion.data_std=[{','.join(['1.0'] * 16)}]"]
    train(compose_config(overrides(prepared, run, "train.max_steps=10", *other)))
    again = yaml.safe_load((run / "config.yaml").read_text())["diffusion"]
    assert again["data_mean"] == saved["data_mean"] and again["data_std"] == saved["data_std"]
    with pytest.raises(UsageError, match="standardize=false"):
        train(compose_config(overrides(prepared, tmp_path / "x", "diffusion.standardize=false", *other)))
    with pytest.raises(UsageError, match="n_mels=16"):
        train(compose_config(overrides(prepared, tmp_path / "y", "diffusion.data_mean=[0.0]",
                                       "diffusion.data_std=[1.0]")))


def test_init_from_starts_a_new_run_from_another_models_weights(prepared, tmp_path):
    """train.init_from: step 0 with a fresh optimizer, the source's EMA weights in both net and EMA, and its
    per-bin statistics (even when this run's data would give others); a net that does not match, a
    prediction that differs or a missing source is a one-line UsageError and writes no run."""
    import yaml

    from audiodiff.cli import UsageError
    from audiodiff.pipeline import AudioDiffusionPipeline
    from audiodiff.train import train

    src = tmp_path / "src"
    train(compose_config(overrides(prepared, src, "train.max_steps=5")))
    model_dir = AudioDiffusionPipeline.from_pretrained(src, device="cpu").save_pretrained(tmp_path / "model")
    source_ema = safe_load(list_checkpoints(src / "checkpoints")[-1])["ema"]
    for origin in (src, model_dir):  # a run directory, a model directory
        run = tmp_path / f"ft_{origin.name}"
        other = [f"diffusion.data_mean=[{','.join(['0.0'] * 16)}]", f"diffusion.data_std=[{','.join(['1.0'] * 16)}]"]
        summary = train(compose_config(overrides(prepared, run, "train.max_steps=1", f"train.init_from={origin}",
                                                 "optim.optimizer.lr=0", *other)))
        assert summary["step"] == 1
        state = safe_load(list_checkpoints(run / "checkpoints")[-1])
        assert state["step"] == 1 and state["scheduler"]["last_epoch"] == 1
        for k, v in source_ema.items():  # lr 0: the weights are the source's EMA ones
            assert torch.equal(state["model"][k], v), k
        saved = yaml.safe_load((run / "config.yaml").read_text())["diffusion"]
        assert saved["data_mean"] == yaml.safe_load((src / "config.yaml").read_text())["diffusion"]["data_mean"]
    bad = [("net.base_channels=16", "do not match"), ("diffusion.prediction=eps", "diffusion.prediction=v"),
           ("diffusion.standardize=false", "standardize=true")]
    for extra, message in bad:
        with pytest.raises(UsageError, match=message):
            train(compose_config(overrides(prepared, tmp_path / "bad", f"train.init_from={src}", extra)))
    with pytest.raises(UsageError, match="no such run"):
        train(compose_config(overrides(prepared, tmp_path / "bad", f"train.init_from={tmp_path / 'nope'}")))
    assert not (tmp_path / "bad").exists()


def _final_weights(run_dir):
    state = safe_load(list_checkpoints(run_dir / "checkpoints")[-1])
    return state["step"], state["model"], state["ema"]


def test_resume_is_bit_exact(prepared, tmp_path):
    from audiodiff.train import train

    full = compose_config(overrides(prepared, tmp_path / "a", "train.max_steps=12"))
    train(full)
    # stop after 7 steps (mid-epoch: 24 clips / batch 8 = 3 steps an epoch), then resume
    part = train(compose_config(overrides(prepared, tmp_path / "b", "train.max_steps=12", "train.stop_at=7")))
    assert part["step"] == 7 and "Re-run the same command" in part["reason"]
    train(compose_config(overrides(prepared, tmp_path / "b", "train.max_steps=12")))
    step_a, model_a, ema_a = _final_weights(tmp_path / "a")
    step_b, model_b, ema_b = _final_weights(tmp_path / "b")
    assert step_a == step_b == 12
    for k in model_a:
        assert torch.equal(model_a[k], model_b[k]), k
        assert torch.equal(ema_a[k], ema_b[k]), k


def test_grad_accumulation_matches_large_batch(prepared, tmp_path):
    from audiodiff.train import train

    train(compose_config(overrides(prepared, tmp_path / "a", "train.max_steps=3")))
    train(compose_config(overrides(prepared, tmp_path / "b", "train.max_steps=3", "train.grad_accum=2")))
    _, a, _ = _final_weights(tmp_path / "a")
    _, b, _ = _final_weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_input_perturbation_trains_the_same_under_grad_accumulation(prepared, tmp_path):
    """diffusion.input_perturbation draws its perturbation for the global batch from the checkpointed
    generator, like the noise: micro-batches (and ranks) give the update of one big batch. A bad value is
    a one-line UsageError before anything is written."""
    from audiodiff.cli import UsageError
    from audiodiff.train import train

    ip = "diffusion.input_perturbation=0.1"
    train(compose_config(overrides(prepared, tmp_path / "plain", "train.max_steps=3")))
    train(compose_config(overrides(prepared, tmp_path / "a", "train.max_steps=3", ip)))
    train(compose_config(overrides(prepared, tmp_path / "b", "train.max_steps=3", ip, "train.grad_accum=2")))
    _, plain, _ = _final_weights(tmp_path / "plain")
    _, a, _ = _final_weights(tmp_path / "a")
    _, b, _ = _final_weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(a[k], plain[k]) for k in a)
    with pytest.raises(UsageError, match="input_perturbation=-0.1"):
        train(compose_config(overrides(prepared, tmp_path / "bad", "diffusion.input_perturbation=-0.1")))
    assert not (tmp_path / "bad").exists()


def _torchrun(args, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", *args],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_ddp_two_processes_match_single_process(prepared, tmp_path):
    from audiodiff.train import train

    train(compose_config(overrides(prepared, tmp_path / "single", "train.max_steps=4", "device=cpu")))
    r = _torchrun(["--nproc_per_node", "2", "-m", "audiodiff.train",
                   *overrides(prepared, tmp_path / "ddp", "train.max_steps=4", "device=cpu")])
    assert r.returncode == 0, r.stderr[-2000:]
    _, single, _ = _final_weights(tmp_path / "single")
    _, ddp, _ = _final_weights(tmp_path / "ddp")
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=ADAM_ROUNDING)


def test_sample_every_writes_audio_and_mels_without_changing_training(prepared, tmp_path):
    """train.sample_every puts EMA samples (audio + mel image) in TensorBoard; sampling draws from its
    own generators, so the weights are bit-identical to a run without it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from audiodiff.train import train

    train(compose_config(overrides(prepared, tmp_path / "plain", "train.max_steps=4", "device=cpu")))
    train(compose_config(overrides(prepared, tmp_path / "sampled", "train.max_steps=4", "device=cpu",
                                   "train.sample_every=2", "train.sample_steps=2", "train.sample_num=2")))
    _, plain, plain_ema = _final_weights(tmp_path / "plain")
    _, sampled, sampled_ema = _final_weights(tmp_path / "sampled")
    for k in plain:
        assert torch.equal(plain[k], sampled[k]) and torch.equal(plain_ema[k], sampled_ema[k]), k
    events = EventAccumulator(str(tmp_path / "sampled" / "tb"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    audio_tags = events.Tags()["audio"]
    assert sorted(audio_tags) == ["samples/0_label0", "samples/1_label1"]
    clips = events.Audio("samples/0_label0")
    assert [c.step for c in clips] == [2, 4] and clips[0].sample_rate == 22050
    assert clips[0].length_frames > 0.9 * 24 * 256  # segment_frames * hop samples
    assert [i.step for i in events.Images("samples/mel")] == [2, 4]
    assert EventAccumulator(str(tmp_path / "plain" / "tb")).Reload().Tags()["audio"] == []


def test_task_vocoder_trains_and_resumes(prepared, tmp_path, capsys):
    from audiodiff.checkpoint import list_checkpoints

    run = tmp_path / "voc"
    argv = ["task=vocoder", "+experiment=digits_smoke", "audio=small", "vocoder_train=tiny", f"data.dir={prepared}",
            f"run_dir={run}", "device=cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "task=vocoder finished: step 4" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000002.pt", "step_00000004.pt"]
    blob = safe_load(run / "generator.pt")
    assert blob["audio_config"]["n_mels"] == 16 and blob["step"] == 4
    assert main(argv + ["vocoder_train.max_steps=6"]) == 0  # resumes from step 4
    assert "finished: step 6" in capsys.readouterr().err
    assert safe_load(run / "generator.pt")["step"] == 6
    # settings the function does not take, or that come from the top level, are one-line errors
    for bad, expect in ((["+vocoder_train.bogus=1"], "valid keys:"), (["+vocoder_train.run_dir=x"], "top level")):
        assert main(argv + bad) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and expect in err, err


def test_task_classifier_trains(prepared, tmp_path, capsys):
    from audiodiff.checkpoint import safe_load as load

    run = tmp_path / "clf"
    argv = ["task=classifier", "+experiment=digits_smoke", "audio=small", f"data.dir={prepared}",
            f"run_dir={run}", "device=cpu", "data.segment_frames=24", "data.num_classes=3",
            "classifier_train.steps=3", "classifier_train.batch_size=8", "classifier_train.width=8",
            "classifier_train.eval_every=3"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "task=classifier finished" in capsys.readouterr().err
    blob = load(run / "classifier.pt")
    assert blob["kwargs"]["num_classes"] == 3 and blob["segment_frames"] == 24
    assert blob["audio_config"]["n_mels"] == 16
    # the classifier must see the mel the model generates: another audio config is refused
    assert main([a for a in argv if a != "audio=small"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "n_mels: data 16 vs config 80" in err, err
    assert main(argv + ["+classifier_train.bogus=1"]) == 2
    assert "valid keys:" in capsys.readouterr().err


@pytest.mark.parametrize("option", sorted(p.stem for p in (RECIPES / "vocoder_train").glob("*.yaml")))
def test_every_vocoder_train_option_matches_train_vocoder(option, prepared):
    """Each vocoder_train option passes only keyword arguments train_vocoder takes, and its generator builds
    with a hop that matches the audio config."""
    from audiodiff.train import task_call
    from audiodiff.train_vocoder import _build_generator

    cfg = compose_config(["task=vocoder", f"vocoder_train={option}", f"data.dir={prepared}"])
    fn, kwargs = task_call(cfg)
    assert fn.__name__ == "train_vocoder" and kwargs["data"] == str(prepared)
    generator = _build_generator(kwargs["generator"], cfg.audio.n_mels)
    assert generator.hop_length == cfg.audio.hop_length
    assert kwargs["segment_size"] % cfg.audio.hop_length == 0
