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


def pytest_terminal_summary(terminalreporter):
    """Name the installation the suite ran in (CI's log shows the pinned pair and the venv)."""
    from audiodiff import install

    found = install.installed_versions()
    pinned = "the pinned pair" if install.pinned_pair_installed(found) else f"NOT the pinned {install.PINNED}"
    terminalreporter.write_line(f"installation: torch {found['torch']} + torchaudio {found['torchaudio']} "
                                f"({pinned}), python {sys.executable}")
