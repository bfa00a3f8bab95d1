import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # also for the recipes and CLIs tests start

import pytest
import torch

# Two cores, and tests start subprocesses: more than one intra-op thread makes OpenMP threads
# spin against each other (10x slower under load), so the suite runs torch on one thread.
torch.set_num_threads(1)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


def prepare_clips(root, clips, audio_config):
    """Write (wave, label) pairs as root/c{i}.wav + root/train.jsonl at 22,050 Hz and run
    audiodiff.prepare on them with audio_config; returns the prepared folder root/dump."""
    import json

    import numpy as np
    import soundfile as sf

    from audiodiff.prepare import prepare

    lines = []
    for i, (wave, label) in enumerate(clips):
        sf.write(root / f"c{i}.wav", np.asarray(wave, dtype=np.float32), 22050)
        lines.append(json.dumps({"path": f"c{i}.wav", "label": label}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    prepare(root / "train.jsonl", root / "dump", audio_config)
    return root / "dump"


# Tests that need something from Debian (tests/run.sh installs it as root): CI's log says whether they ran.
NEEDS_DEBIAN = ("tests/test_browser.py::", "tests/test_recipes_offline.py::test_drums_real_hydrogen_kits")
_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if report.nodeid.startswith(NEEDS_DEBIAN) and (report.when == "call" or report.outcome == "skipped"):
        _outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    """Name the installation the suite ran in (CI's log shows the pinned pair and the venv), and whether
    the browser tests and the real-drums test ran."""
    if _outcomes:
        counts = {o: sum(v == o for v in _outcomes.values()) for o in sorted(set(_outcomes.values()))}
        terminalreporter.write_line("browser and real-drums tests: " + ", ".join(f"{n} {o}" for o, n in counts.items())
                                    + " (" + ", ".join(f"{k.split('::')[-1]} {v}" for k, v in _outcomes.items()) + ")")
    from audiodiff import install

    found = install.installed_versions()
    pinned = "the pinned pair" if install.pinned_pair_installed(found) else f"NOT the pinned {install.PINNED}"
    terminalreporter.write_line(f"installation: torch {found['torch']} + torchaudio {found['torchaudio']} "
                                f"({pinned}), python {sys.executable}")
