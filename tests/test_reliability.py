"""Reliability and security: interrupted training, damaged and hostile checkpoints, full disks,
non-finite losses, elastic restarts (issue 7). Tiny configs: tone clips, 16 mels, net=tiny."""
import errno
import hashlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_train import one_thread, overrides, prepared  # noqa: F401  (fixtures and the tiny config)

from audiodiff.checkpoint import CheckpointError, list_checkpoints, load_latest, safe_load, save_checkpoint, verify
from audiodiff.config import compose_config
from audiodiff.train import main, train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def one_line(text: str) -> str:
    text = text.strip()
    assert text and "\n" not in text, text
    return text


def run_config(prepared, run_dir, *extra):
    """10 steps, checkpoints at 5 and 10 (the overrides' ckpt_every=5)."""
    return compose_config(overrides(prepared, run_dir, "train.max_steps=10", "device=cpu", *extra))


@pytest.fixture(scope="module")
def base_run(prepared, tmp_path_factory):
    """An uninterrupted 10-step run: step_5 and step_10 checkpoints, the reference for every resume."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert train(run_config(prepared, run))["step"] == 10
    return run


def assert_same_weights(run_a, run_b, step):
    a = safe_load(run_a / "checkpoints" / f"step_{step:08d}.pt")
    b = safe_load(run_b / "checkpoints" / f"step_{step:08d}.pt")
    assert a["step"] == b["step"] == step
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def copy_run(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    return run


def wait_for(predicate, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- damaged checkpoints

def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip_byte(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    p.write_bytes(bytes(data))


def _drop_sidecar(p):
    p.with_name(p.name + ".sha256").unlink()


def _empty(p):
    p.write_bytes(b"")


DAMAGE = {"truncated": (_truncate, "checksum mismatch"), "flipped_byte": (_flip_byte, "checksum mismatch"),
          "no_sidecar": (_drop_sidecar, "no .sha256"), "empty": (_empty, "checksum mismatch")}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_load_latest_skips_a_damaged_newest_checkpoint(base_run, tmp_path, caplog, kind):
    run = copy_run(base_run, tmp_path)
    newest = run / "checkpoints" / "step_00000010.pt"
    damage, reason = DAMAGE[kind]
    damage(newest)
    with caplog.at_level(logging.WARNING, logger="audiodiff"):
        state, path = load_latest(run / "checkpoints")
    assert path.name == "step_00000005.pt" and state["step"] == 5
    warning = one_line(caplog.text)
    assert "step_00000010.pt" in warning and reason in warning and "falling back" in warning


def test_resume_after_a_truncated_checkpoint_is_exact(base_run, prepared, tmp_path, caplog):
    """The newest checkpoint is truncated: training says so, resumes from the one before, and
    ends with exactly the weights of the run that was never damaged."""
    run = copy_run(base_run, tmp_path)
    _truncate(run / "checkpoints" / "step_00000010.pt")
    with caplog.at_level(logging.INFO, logger="audiodiff"):
        summary = train(run_config(prepared, run))
    assert summary["step"] == 10
    assert "skipping damaged checkpoint" in caplog.text and "step_00000010.pt" in caplog.text
    assert "resuming from" in caplog.text and "step_00000005.pt (step 5)" in caplog.text
    assert (run / "checkpoints" / "step_00000010.pt.damaged").exists()  # kept for inspection, out of the way
    assert verify(run / "checkpoints" / "step_00000010.pt") is None
    assert_same_weights(base_run, run, 10)


def test_a_run_whose_checkpoints_all_fail_is_refused_not_restarted(base_run, prepared, tmp_path, capsys):
    run = copy_run(base_run, tmp_path)
    for p in list_checkpoints(run / "checkpoints"):
        _truncate(p)
    argv = overrides(prepared, run, "train.max_steps=10", "device=cpu")
    assert main(argv) == 1
    err = one_line(capsys.readouterr().err)
    assert "none of its 2 checkpoint(s) loads" in err and "another run_dir" in err
    assert len(list_checkpoints(run / "checkpoints")) == 2  # nothing overwritten


KILL_SCRIPT = textwrap.dedent("""
    import io, os, sys
    import torch
    import audiodiff.checkpoint as ckpt

    where, target = sys.argv[1], "step_00000010.pt"
    real_save, real_replace = torch.save, os.replace

    def save(obj, f, *args, **kwargs):  # write half of the checkpoint, then die (kill -9)
        if where == "write" and target in str(getattr(getattr(f, "file", f), "name", "")):
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os._exit(9)
        return real_save(obj, f, *args, **kwargs)

    def replace(src, dst):  # die after the file and its sidecar are written, before the rename
        if where == "rename" and str(dst).endswith(target):
            os._exit(9)
        return real_replace(src, dst)

    torch.save, ckpt.os.replace = save, replace
    from audiodiff.train import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("where", ["write", "rename"])
def test_killed_inside_a_checkpoint_write(base_run, prepared, tmp_path, caplog, where):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, where,
                        *overrides(prepared, run, "train.max_steps=10", "device=cpu")],
                       env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 9, r.stderr[-2000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000005.pt"], names
    assert any(".tmp" in n for n in names), names  # the half-written file is there, under a temporary name
    with caplog.at_level(logging.INFO, logger="audiodiff"):
        assert train(run_config(prepared, run))["step"] == 10
    assert "step_00000005.pt (step 5)" in caplog.text
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == ["step_00000005.pt", "step_00000005.pt.sha256", "step_00000010.pt", "step_00000010.pt.sha256"]
    assert_same_weights(base_run, run, 10)


# --------------------------------------------------------------------------- full disk

class _FullDisk(io.FileIO):
    """A file on a disk that fills up after 4 KiB."""

    def write(self, data):
        if self.tell() + len(data) > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_full_disk_while_checkpointing(prepared, tmp_path, monkeypatch, capsys):
    import audiodiff.checkpoint as ckpt

    run = tmp_path / "run"
    # keep=1: the step-5 checkpoint is the one a premature prune would delete
    assert main(overrides(prepared, run, "train.max_steps=5", "device=cpu", "train.keep_checkpoints=1")) == 0
    first = run / "checkpoints" / "step_00000005.pt"
    before = first.read_bytes()
    capsys.readouterr()

    def full_open(path, mode="r", *args, **kwargs):
        if ".pt.tmp" in str(path) and "w" in mode:
            return _FullDisk(path, "w")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ckpt, "open", full_open, raising=False)
    assert main(overrides(prepared, run, "train.max_steps=10", "device=cpu", "train.keep_checkpoints=1")) == 1
    err = one_line(capsys.readouterr().err.splitlines()[-1])
    assert "step_00000010.pt" in err and "No space left on device" in err and "previous checkpoint is kept" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000005.pt", "step_00000005.pt.sha256"]
    assert first.read_bytes() == before and verify(first) is None


def test_full_disk_error_from_save_checkpoint_names_the_errno(tmp_path, monkeypatch):
    """torch.save turns a failed write into an opaque RuntimeError; the OSError behind it is reported."""
    import audiodiff.checkpoint as ckpt

    save_checkpoint({"w": torch.zeros(8)}, tmp_path, 1)

    def full_open(path, mode="r", *args, **kwargs):
        return _FullDisk(path, "w") if "w" in mode and ".pt.tmp" in str(path) else open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ckpt, "open", full_open, raising=False)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint({"w": torch.zeros(100_000)}, tmp_path, 2, keep=1)  # keep=1: a prune would remove step 1
    assert "No space left on device" in one_line(str(e.value))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001.pt"]
    assert verify(tmp_path / "step_00000001.pt") is None
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_pruning_never_removes_the_only_good_checkpoint(tmp_path):
    """keep=1 after resuming past a damaged newer file: the damaged name is no reason to prune."""
    for step in (5, 10):
        save_checkpoint({"step": step}, tmp_path, step, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000010.pt"]
    save_checkpoint({"step": 20}, tmp_path, 20, keep=1)
    _truncate(tmp_path / "step_00000020.pt")
    save_checkpoint({"step": 15}, tmp_path, 15, keep=1)  # a resumed run from step 10 reaches 15
    state, path = load_latest(tmp_path)
    assert state["step"] == 15


# --------------------------------------------------------------------------- non-finite losses

def _nan_loss_after(monkeypatch, calls_ok, nan_calls=None):
    """diffusion_loss returns NaN from call `calls_ok + 1` on (or only on the calls in nan_calls)."""
    import audiodiff.diffusion.objectives as objectives

    real = objectives.diffusion_loss
    count = {"n": 0}

    def loss(*args, **kwargs):
        count["n"] += 1
        out = real(*args, **kwargs)
        bad = count["n"] in nan_calls if nan_calls is not None else count["n"] > calls_ok
        return out * float("nan") if bad else out

    monkeypatch.setattr(objectives, "diffusion_loss", loss)


def test_nonfinite_losses_stop_training_and_keep_the_last_good_checkpoint(prepared, tmp_path, monkeypatch,
                                                                          capsys, caplog):
    run = tmp_path / "run"
    _nan_loss_after(monkeypatch, calls_ok=4)  # steps 1-4 are fine, then NaN forever
    argv = overrides(prepared, run, "train.max_steps=20", "train.ckpt_every=3", "train.max_nonfinite=3",
                     "device=cpu")
    with caplog.at_level(logging.WARNING, logger="audiodiff"):
        assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped at step 5: 3 non-finite" in err and "train.max_nonfinite=3" in err
    assert caplog.text.count("non-finite loss or gradient") == 3
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000003.pt"]
    state = safe_load(run / "checkpoints" / "step_00000003.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_an_isolated_nonfinite_loss_is_skipped_and_counted(prepared, tmp_path, monkeypatch):
    _nan_loss_after(monkeypatch, 0, nan_calls={3})
    summary = train(compose_config(overrides(prepared, tmp_path / "run", "train.max_steps=6", "device=cpu")))
    assert summary["step"] == 6 and summary["reason"] == "finished" and summary["skipped_steps"] == 1
    state = safe_load(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert state["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nonfinite_steps_must_be_in_a_row_to_stop_training(prepared, tmp_path, monkeypatch):
    """NaN on calls 2, 3, 5, 6 with max_nonfinite=3: never three in a row, so training finishes (a
    counter that never reset would stop at the third)."""
    _nan_loss_after(monkeypatch, 0, nan_calls={2, 3, 5, 6})
    summary = train(compose_config(overrides(prepared, tmp_path / "run", "train.max_steps=6", "device=cpu",
                                             "train.max_nonfinite=3")))
    assert summary["step"] == 6 and summary["reason"] == "finished" and summary["skipped_steps"] == 4


class _InfGradient(torch.autograd.Function):
    """The identity forward; an infinite gradient backward (a finite loss with a broken gradient)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_an_infinite_gradient_with_a_finite_loss_is_skipped(prepared, tmp_path, monkeypatch):
    import audiodiff.diffusion.objectives as objectives
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    real, calls = objectives.diffusion_loss, {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return _InfGradient.apply(out) if calls["n"] == 2 else out

    monkeypatch.setattr(objectives, "diffusion_loss", loss)
    run = tmp_path / "run"
    summary = train(compose_config(overrides(prepared, run, "train.max_steps=6", "device=cpu")))
    assert summary["step"] == 6 and summary["skipped_steps"] == 1
    assert all(torch.isfinite(torch.tensor(v)) for _, v in summary["history"])  # the loss itself stayed finite
    state = safe_load(list_checkpoints(run / "checkpoints")[-1])
    assert state["skipped_steps"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/skipped_steps")] == [(5, 1.0)]  # log_every=5


# --------------------------------------------------------------------------- signals

def _start(prepared, run, *extra):
    return subprocess.Popen([sys.executable, "-m", "audiodiff.train",
                             *overrides(prepared, run, "device=cpu", "train.max_steps=100000", *extra)],
                            env=ENV, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)


def test_ctrl_c_with_dataloader_workers(prepared, tmp_path):
    """SIGINT to the whole process group (what Ctrl-C does) with 2 DataLoader workers: the main
    process alone reacts, finishes the step, checkpoints and exits 0; the workers exit with it."""
    run = tmp_path / "run"
    proc = _start(prepared, run, "train.num_workers=2", "train.ckpt_every=2")
    try:
        wait_for(lambda: list_checkpoints(run / "checkpoints") or proc.poll() is not None, what="training")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    assert err.count("SIGINT: finishing this step") == 1, err[-2000:]  # not once per worker
    assert "re-run the same command to resume" in err.lower() and "Traceback" not in err
    state, path = load_latest(run / "checkpoints")
    assert state is not None and verify(path) is None

    def group_gone():
        try:
            os.killpg(proc.pid, 0)
            return False
        except ProcessLookupError:
            return True
    wait_for(group_gone, timeout=30, what="the DataLoader workers to exit")


def test_second_signal_exits_at_once_without_damage(prepared, tmp_path, caplog):
    run = tmp_path / "run"
    proc = _start(prepared, run, "train.ckpt_every=1", "train.keep_checkpoints=2")
    try:
        wait_for(lambda: len(list_checkpoints(run / "checkpoints")) >= 2 or proc.poll() is not None,
                 what="checkpoints")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)  # before the first is handled: both are pending
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM), err[-2000:]
    assert "second signal" in err and "Traceback" not in err
    ckpts = list_checkpoints(run / "checkpoints")
    assert ckpts and all(verify(p) is None for p in ckpts)  # every complete name has its checksum
    newest = safe_load(ckpts[-1])["step"]
    with caplog.at_level(logging.INFO, logger="audiodiff"):
        summary = train(compose_config(overrides(prepared, run, "device=cpu", "train.max_steps=100000",
                                                 "train.ckpt_every=1", "train.keep_checkpoints=2",
                                                 f"train.stop_at={newest + 1}")))
    assert summary["step"] == newest + 1 and "skipping" not in caplog.text
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp" in p.name]


def test_sigterm_then_resume_is_bit_exact(prepared, tmp_path):
    """A real SIGTERM mid-run, then the same command again: the weights equal those of a run never
    stopped. A constant learning rate after warm-up (min_lr_ratio=1) lets the resumed run end at a
    step chosen after the signal without changing the schedule."""
    run = tmp_path / "run"
    flags = ("train.ckpt_every=100000", "optim.min_lr_ratio=1.0")
    proc = _start(prepared, run, *flags)
    try:
        wait_for(lambda: (run / "tb").exists() or proc.poll() is not None, what="training")
        time.sleep(2)  # some steps into the run
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped by SIGTERM" in err, err[-2000:]
    (ckpt,) = list_checkpoints(run / "checkpoints")
    stopped = safe_load(ckpt)["step"]
    assert 1 <= stopped < 100000
    end = stopped + 3
    resumed = train(compose_config(overrides(prepared, run, "device=cpu", f"train.max_steps={end}", *flags)))
    assert resumed["step"] == end
    reference = tmp_path / "reference"
    assert train(compose_config(overrides(prepared, reference, "device=cpu", f"train.max_steps={end}",
                                          *flags)))["step"] == end
    assert_same_weights(reference, run, end)


def _rank_pid(ancestor: int, rank: int, timeout: float = 120) -> int:
    """The pid of the torchrun worker with RANK=rank that descends from `ancestor`."""
    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0") if entry.name.isdigit() else []
                if f"RANK={rank}".encode() not in environ or not any(v.startswith(b"TORCHELASTIC_RUN_ID=")
                                                                     for v in environ):
                    continue
                pid = int(entry.name)
                while pid > 1 and pid != ancestor:
                    pid = parent(pid)
            except (OSError, ValueError, IndexError):
                continue
            if pid == ancestor:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no torchrun worker with RANK={rank}")


def test_ddp_ranks_agree_to_stop_when_one_is_signalled(prepared, tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop at the same step (rank 0 says another rank stopped
    it), the checkpoint is written and the job exits 0; ranks that disagreed would hang in the next
    all-reduce until the 60 s timeout."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "audiodiff.train", *overrides(prepared, run, "device=cpu", "train.max_steps=100000",
                                                                 "train.ckpt_every=100000", "train.dist_timeout_s=60")],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        wait_for(lambda: (run / "tb").exists() or proc.poll() is not None, what="training")
        time.sleep(2)
        os.kill(_rank_pid(proc.pid, 1), signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by another rank at step" in out, out[-3000:]
    (ckpt,) = list_checkpoints(run / "checkpoints")
    step = safe_load(ckpt)["step"]
    assert f"stopped by another rank at step {step}; checkpoint written" in out


# --------------------------------------------------------------------------- elastic restarts

def test_torchrun_max_restarts_resumes_a_dead_rank(base_run, prepared, tmp_path):
    """Rank 1 dies at step 7 on the first attempt; torchrun restarts both ranks, which resume from
    step 5 and finish at step 10 with the weights of a run that never died (DDP = one process)."""
    # Bounded, with the whole process group killed on a stall: a regression here fails the test
    # instead of hanging the suite. (A restarted rank reading the dead attempt's gloo address from
    # torchrun's store used to stall about one run in two; train.py now namespaces each attempt.)
    run = tmp_path / "elastic"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             "2", "--max-restarts", "1", "-m", "audiodiff.train",
                             *overrides(prepared, run, "train.max_steps=10", "device=cpu", "train.dist_timeout_s=60")],
                            env={**ENV, "AUDIODIFF_TEST_CRASH_AT_STEP": "7"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        pytest.fail("torchrun with a dead rank did not finish in 300 s:\n" + stdout[-3000:])
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, "")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "step_00000005.pt (step 5)" in out, out[-3000:]  # the restart resumed from the checkpoint
    single = safe_load(base_run / "checkpoints" / "step_00000010.pt")
    elastic = safe_load(run / "checkpoints" / "step_00000010.pt")
    assert elastic["step"] == 10
    for k in single["model"]:
        # DDP = one process up to float rounding, which Adam amplifies for near-zero gradients (see
        # ADAM_ROUNDING in test_train.py: a wrong resume would differ by about lr = 1e-3 per step)
        torch.testing.assert_close(elastic["model"][k], single["model"][k], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- hostile files

class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _hostile_checkpoint(path: Path, marker: Path, state: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(state or {}), "payload": _Payload(marker)}, path)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    return path


def test_pickled_code_is_refused_everywhere(base_run, prepared, tmp_path, capsys, caplog):
    from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError

    marker = tmp_path / "pwned"
    # 1. safe_load and load_latest: a checksum that matches does not make a pickle safe
    lone = _hostile_checkpoint(tmp_path / "lone" / "step_00000001.pt", marker)
    with pytest.raises(CheckpointError) as e:
        safe_load(lone)
    assert "refused to load" in one_line(str(e.value)) and str(lone) in str(e.value)
    assert load_latest(lone.parent) == (None, None)

    # 2. the pipeline: a run whose only checkpoint is hostile
    run = copy_run(base_run, tmp_path)
    good = safe_load(run / "checkpoints" / "step_00000010.pt")
    shutil.rmtree(run / "checkpoints")
    _hostile_checkpoint(run / "checkpoints" / "step_00000010.pt", marker, good)
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(run, device="cpu")
    assert "no checkpoint that loads" in one_line(str(e.value))
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(run / "checkpoints" / "step_00000010.pt", device="cpu")
    assert "refused to load" in one_line(str(e.value))

    # 3. a model directory whose weights file is a pickle: safetensors never unpickles
    model = tmp_path / "model"
    AudioDiffusionPipeline.from_pretrained(base_run, device="cpu").save_pretrained(model)
    torch.save({"payload": _Payload(marker)}, model / "model.safetensors")
    with pytest.raises(ModelLoadError) as e:
        AudioDiffusionPipeline.from_pretrained(model, device="cpu")
    assert "cannot read the weights" in one_line(str(e.value))

    # 4. training resume: falls back past a hostile newest checkpoint, refuses a run with nothing else
    run2 = copy_run(base_run, tmp_path / "r2")
    _hostile_checkpoint(run2 / "checkpoints" / "step_00000010.pt", marker, good)
    with caplog.at_level(logging.INFO, logger="audiodiff"):
        assert train(run_config(prepared, run2))["step"] == 10
    assert "refused to load" in caplog.text and "step_00000005.pt (step 5)" in caplog.text
    capsys.readouterr()
    assert main(overrides(prepared, run, "train.max_steps=10", "device=cpu")) == 1
    err = one_line(capsys.readouterr().err)
    assert "none of its 1 checkpoint(s) loads" in err and "refused to load" in err

    # 5. the vocoder and classifier loaders
    from audiodiff.vocoders import HiFiGAN

    with pytest.raises(Exception) as e:
        HiFiGAN(checkpoint=lone)
    assert "refused to load" in one_line(str(e.value))
    try:
        from audiodiff.metrics import load_classifier
    except ImportError:
        load_classifier = None
    if load_classifier is not None:
        with pytest.raises(Exception) as e:
            load_classifier(lone, torch.device("cpu"))
        assert "refused to load" in one_line(str(e.value))

    assert not marker.exists()
    # The control: plain unpickling of the same file does run the payload.
    torch.load(lone, weights_only=False)
    assert marker.read_text() == "pwned"


def test_a_broken_clip_in_vocoder_training_is_one_line(tmp_path, capsys):
    """Vocoder training reads audio files itself (not through prepare): a file that does not decode stops
    it with one line naming the file, not a traceback."""
    import numpy as np
    import soundfile as sf

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for i in range(2):
        sf.write(wavs / f"{i}.wav", (0.3 * np.sin(np.arange(11025) * 0.1)).astype(np.float32), 22050)
    (wavs / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    argv = ["task=vocoder", "+experiment=digits_smoke", "audio=small", "vocoder_train=tiny",
            "vocoder_train.batch_size=3", f"data.dir={wavs}", f"run_dir={tmp_path / 'run'}", "device=cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "broken.wav" in err and "cannot decode audio" in err and err.startswith("audiodiff.train: task=vocoder:")
