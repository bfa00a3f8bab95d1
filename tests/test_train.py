"""Training: config dry runs, the smoke objective, resume exactness, DDP equivalence, signals."""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio import AudioConfig
from audiodiff.checkpoint import list_checkpoints, safe_load
from audiodiff.train import RECIPES, build, compose_config, main

ROOT = Path(__file__).resolve().parents[1]
SMALL = AudioConfig(n_mels=16)
TINY_NET = ["net=tiny", "net.base_channels=32", "audio=small"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """24 labelled tone clips (3 classes), prepared with the 16-mel config."""
    from audiodiff.prepare import prepare

    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(24):
        label = i % 3
        t = np.arange(int(0.5 * 22050)) / 22050
        f0 = (300, 600, 1200)[label] * (1 + 0.05 * rng.standard_normal())
        x = 0.3 * np.sin(2 * math.pi * f0 * t) * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t))
        sf.write(root / f"c{i}.wav", x.astype(np.float32), 22050)
        lines.append(json.dumps({"path": f"c{i}.wav", "label": label}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "dump"
    prepare(root / "train.jsonl", out, SMALL)
    return out


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


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in ("net", "diffusion", "audio", "optim")
                                          for p in sorted((RECIPES / g).glob("*.yaml"))])
def test_every_group_option_composes(group, option):
    cfg = compose_config([f"{group}={option}", "data.dir=unused", "data.num_classes=2"])
    audio, net, schedule = build(cfg)
    assert sum(p.numel() for p in net.parameters()) > 0 and schedule.num_steps >= 1


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    cases = [["+experiment=nope"], ["train.max_stepz=3", "data.dir=x"], ["--bogus"], [],
             ["data.dir=" + str(tmp_path / "missing"), f"run_dir={tmp_path / 'run'}"], ["task=cook", "data.dir=x"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("audiodiff.train:") and "\n" not in err, (argv, err)
    assert not (tmp_path / "run").exists()


def test_smoke_loss_falls_below_half(prepared, tmp_path):
    """The smoke experiment's eps-MSE falls below half its first-50-step mean."""
    from audiodiff.train import train

    cfg = compose_config(overrides(prepared, tmp_path / "run", "train.max_steps=300", "train.log_every=1",
                                   "train.ckpt_every=300"))
    summary = train(cfg)
    losses = [loss for _, loss in summary["history"]]
    assert summary["step"] == 300 and len(losses) == 300
    first = float(np.mean(losses[:50]))
    last = float(np.mean(losses[-50:]))
    assert last < 0.5 * first, (first, last)


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
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5)


def test_sigterm_checkpoints_and_resumes(prepared, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "audiodiff.train",
                             *overrides(prepared, run, "train.max_steps=100000", "train.ckpt_every=100000")],
                            env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    # wait until training runs (the progress bar appears), then ask it to stop
    import time

    deadline = time.time() + 120
    while time.time() < deadline and not (run / "tb").exists():
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM" in err and "re-run the same command to resume" in err.lower()
    ckpts = list_checkpoints(run / "checkpoints")
    assert len(ckpts) == 1
    step = safe_load(ckpts[0])["step"]
    assert step >= 1
