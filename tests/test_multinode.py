"""Training across machines: two torchrun agents (two node ranks, one process each) meeting at a c10d
rendezvous on 127.0.0.1, started through audiodiff.launch as the recipes start them (gloo, CPU).

  - 2 agents x 1 process train the same weights as 1 process with the same global batch;
  - a node killed mid-run and started again: both agents resume from the last checkpoint and finish;
  - an agent alone stops after the rendezvous timeout with one line, not a hang;
  - a rank that cannot see the prepared features stops every rank with one line naming it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import ADAM_ROUNDING, _final_weights, overrides, prepared  # noqa: F401  (fixture, tiny config)

from audiodiff.config import compose_config
from audiodiff.train import train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent(node_rank: int, port: int, argv: list[str], cwd: Path = ROOT, nnodes: int = 2, timeout_s: int = 60,
          run_id: str = "test", max_restarts: int = 0) -> subprocess.Popen:
    """One torchrun agent of `nnodes`, as egs/common/recipe.sh starts it on each node."""
    cmd = [sys.executable, "-m", "audiodiff.launch", "--nnodes", str(nnodes), "--node-rank", str(node_rank),
           "--nproc-per-node", "1", "--max-restarts", str(max_restarts), "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{port}",
           "--rdzv-id", run_id, "--rdzv-conf", f"join_timeout={timeout_s}", "-m", "audiodiff.train", *argv]
    return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            out, _ = p.communicate()
            raise AssertionError("an agent did not finish:\n" + out[-3000:])
        results.append((p.returncode, out))
    return results


def test_two_agents_train_the_weights_of_one_process(prepared, tmp_path):
    argv = overrides(prepared, tmp_path / "two_nodes", "train.max_steps=4", "device=cpu")
    port = free_port()
    results = finish([agent(0, port, argv), agent(1, port, argv)])
    for code, out in results:
        assert code == 0, out[-3000:]
    train(compose_config(overrides(prepared, tmp_path / "one", "train.max_steps=4", "device=cpu")))
    _, one, _ = _final_weights(tmp_path / "one")
    step, two, _ = _final_weights(tmp_path / "two_nodes")
    assert step == 4
    for k in one:  # the same global batch, data order and noise draws (see ADAM_ROUNDING)
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=ADAM_ROUNDING)


def test_an_agent_alone_stops_after_the_rendezvous_timeout_in_one_line(prepared, tmp_path):
    port = free_port()
    (code, out), = finish([agent(0, port, overrides(prepared, tmp_path / "run", "device=cpu"), timeout_s=5)], 120)
    last = out.strip().splitlines()[-1]
    assert code == 1, out[-3000:]
    assert last.startswith("audiodiff.launch: the rendezvous 'test' at 127.0.0.1:") and "timed out after 5 s" in last
    assert "start the same command on every node" in last and "Traceback" not in out
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_rank_that_cannot_see_the_features_stops_every_rank(prepared, tmp_path):
    """data.dir relative to each node's working folder: node 1's has no features (a path that exists
    on one machine only). Both agents stop with the same line naming rank 1 and the path."""
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir(), node1.mkdir()
    (node0 / "dump").symlink_to(prepared)
    argv = [a for a in overrides(prepared, tmp_path / "run", "device=cpu", "train.max_steps=4")
            if not a.startswith("data.dir=")] + ["data.dir=dump"]
    port = free_port()
    results = finish([agent(0, port, argv, cwd=node0), agent(1, port, argv, cwd=node1)])
    for code, out in results:
        assert code == 1, out[-3000:]
        assert f"rank 1 on {socket.gethostname()} cannot see data.dir='dump'" in out, out[-3000:]
    assert not list((tmp_path / "run").glob("checkpoints/*"))


@pytest.mark.parametrize("args,expected", [
    (["--nnodes", "2"], "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:29400"],
     "--node-rank 2 must be below --nnodes 2"),
    (["--nnodes", "2", "--rdzv-endpoint", "nohostport"], "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
    (["--max-restarts", "x"], "--max-restarts needs a whole number"),
])
def test_recipe_multinode_options_are_checked_in_one_line(args, expected, tmp_path):
    r = subprocess.run(["bash", str(ROOT / "egs" / "digits" / "run.sh"), "--smoke", *args], cwd=tmp_path,
                       env={**ENV, "AUDIODIFF_WORK": str(tmp_path / "work")}, capture_output=True, text=True,
                       timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and expected in lines[0], r.stderr
    assert not (tmp_path / "work").exists()



def kill_node(agent_proc: subprocess.Popen) -> None:
    """SIGKILL an agent and everything under it, as when its machine dies (torchrun starts each
    worker in a session of its own, so the agent's process group alone would leave them running)."""
    tree, todo = [], [agent_proc.pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    todo.append(int(d.name))
            except OSError:
                continue
    for pid in tree:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    agent_proc.communicate(timeout=60)


def test_a_killed_node_started_again_resumes_both_from_the_last_checkpoint(prepared, tmp_path):
    """Node 1 dies (SIGKILL of its agent and worker) just after the first checkpoint; node 0's
    agent restarts its worker (--max-restarts 1) and waits at the rendezvous; node 1 is started again
    with the same command. Both resume from the last checkpoint and finish, with the weights of a
    two-node run that was never interrupted: nothing lost, nothing trained twice."""
    import time

    from audiodiff.checkpoint import list_checkpoints
    argv = overrides(prepared, tmp_path / "killed", "train.max_steps=60", "device=cpu")
    port = free_port()
    node0 = agent(0, port, argv, max_restarts=1)
    time.sleep(1)  # node 0's agent hosts the rendezvous store (as on a cluster: the endpoint is node 0)
    node1 = agent(1, port, argv, max_restarts=1)
    t0 = time.monotonic()
    while not list_checkpoints(tmp_path / "killed" / "checkpoints"):
        assert node0.poll() is None and node1.poll() is None and time.monotonic() - t0 < 240, "no checkpoint"
        time.sleep(0.02)
    kill_node(node1)
    last = int(list_checkpoints(tmp_path / "killed" / "checkpoints")[-1].stem.split("_")[1])
    assert last < 60, "the run ended before the node was killed"
    results = finish([node0, agent(1, port, argv, max_restarts=1)])
    for code, out in results:
        assert code == 0, out[-3000:]
    both = results[0][1] + results[1][1]  # rank 0 says where every rank resumed from
    resumed = [ln for ln in both.splitlines() if ln.startswith("resuming from")]
    assert len(resumed) == 1 and resumed[0].endswith(f"(step {last})"), both[-3000:]

    plain = overrides(prepared, tmp_path / "plain", "train.max_steps=60", "device=cpu")
    port = free_port()
    for code, out in finish([agent(0, port, plain), agent(1, port, plain)]):
        assert code == 0, out[-3000:]
    step, model, ema = _final_weights(tmp_path / "killed")
    _, model_plain, ema_plain = _final_weights(tmp_path / "plain")
    assert step == 60
    for k in model:
        assert torch.equal(model[k], model_plain[k]) and torch.equal(ema[k], ema_plain[k]), k
