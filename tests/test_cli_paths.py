"""Command-line success paths that the recipes rely on: `python -m audiodiff.train ... --get KEY`."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from audiodiff.train import main

ROOT = Path(__file__).resolve().parents[1]


def test_train_get_prints_one_resolved_value(capsys):
    # As egs/common/recipe.sh reads its settings: a subprocess, the experiment plus the user's overrides,
    # data.dir not given (--get does not need it). stdout is the value alone.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "audiodiff.train", "+experiment=digits_smoke", "recipe.per_digit=7",
                        "--get", "recipe.per_digit"], env=env, capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "7\n", "")

    def get(key, *overrides):
        code = main(["+experiment=digits_smoke", *overrides, "--get", key])
        out, err = capsys.readouterr()
        assert code == 0 and err == "", (key, err)
        return out

    assert get("recipe.per_digit") == "12\n"  # recipes/experiment/digits_smoke.yaml
    assert get("recipe.guidance_interval") == "2,inf\n"  # inherited from digits.yaml, printed as written
    assert get("run_dir") == "exp/smoke\n" and get("run_dir", "name=x") == "exp/x\n"  # exp/${name}, resolved
    assert yaml.safe_load(get("optim")) == {  # a group: its YAML
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1.0e-3, "betas": [0.9, 0.999], "weight_decay": 0.0},
        "warmup_steps": 20, "min_lr_ratio": 0.1}
