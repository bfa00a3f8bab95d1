import os

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
