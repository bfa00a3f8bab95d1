import os

import pytest
import torch

# Two cores, several test processes: one intra-op thread keeps timings stable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
