"""Every command line answers a bad argument or an unknown config key with one line on stderr and
exit status 2, names the valid choices where there are some, and writes nothing.

Each case runs the real entry point as a subprocess (`python -m ...`, `bash egs/digits/run.sh`).
The runs are started together (a few at a time) by one module fixture, so the table costs about
the CPU time of its interpreter start-ups, not their sum of waits.
"""
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.audio import AudioConfig
from audiodiff.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]

# (id, command, expected substrings of the one stderr line). In commands: OUT is the path that must
# not exist afterwards, WAVS a folder with one clip, PREP that folder prepared (16 mels), CFG an
# audio config with an unknown key, NOPE a path that does not exist.
PREPARE = [sys.executable, "-m", "audiodiff.prepare"]
TRAIN = [sys.executable, "-m", "audiodiff.train"]
GENERATE = [sys.executable, "-m", "audiodiff.generate"]
EVALUATE = [sys.executable, "-m", "audiodiff.evaluate"]
DIGITS = [sys.executable, "-m", "audiodiff.datasets.digits"]
RUN_SH = ["bash", str(ROOT / "egs" / "digits" / "run.sh")]
SMOKE = ["+experiment=digits_smoke", "audio=small", "run_dir=OUT"]

CASES = [
    # prepare
    ("prepare-no-args", PREPARE, ["required", "input", "--out"]),
    ("prepare-bad-choice", PREPARE + ["WAVS", "--out", "OUT", "--feature-dtype", "float64"],
     ["invalid choice: 'float64'", "float16", "float32"]),
    ("prepare-unknown-flag", PREPARE + ["WAVS", "--out", "OUT", "--n-melz", "16"],
     ["unrecognized arguments: --n-melz"]),
    ("prepare-unknown-config-key", PREPARE + ["WAVS", "--out", "OUT", "--audio-config", "CFG"],
     ["unknown AudioConfig key(s) n_melz", "valid keys:", "n_mels", "sample_rate"]),
    ("prepare-bad-config-value", PREPARE + ["WAVS", "--out", "OUT", "--fmax", "20000"], ["fmax=20000", "Nyquist"]),
    ("prepare-missing-input", PREPARE + ["NOPE", "--out", "OUT"], ["NOPE"]),
    # train
    ("train-unknown-experiment", TRAIN + ["+experiment=nope", "data.dir=WAVS", "run_dir=OUT"],
     ["'experiment/nope'", "valid experiment:", "digits_smoke"]),
    ("train-unknown-key", TRAIN + SMOKE + ["train.max_stepz=3", "data.dir=WAVS"],
     ["unknown config key 'train.max_stepz'", "valid keys under train:", "max_steps"]),
    ("train-unknown-top-key", TRAIN + SMOKE + ["seeed=3", "data.dir=WAVS"],
     ["unknown config key 'seeed'", "valid keys:", "seed"]),
    ("train-unknown-flag", TRAIN + SMOKE + ["--bogus"], ["unknown flag '--bogus'", "valid flags: --dry-run, --cfg"]),
    ("train-bad-task", TRAIN + SMOKE + ["task=cook", "data.dir=WAVS"],
     ["task='cook'", "diffusion, vocoder, classifier"]),
    ("train-bad-group-option", TRAIN + SMOKE + ["net=huge", "data.dir=WAVS"],
     ["'net/huge'", "valid net: tiny, unet1d, unet2d"]),
    ("train-bad-vocoder-option", TRAIN + SMOKE + ["task=vocoder", "vocoder_train=huge", "data.dir=WAVS"],
     ["'vocoder_train/huge'", "valid vocoder_train: hifigan, tiny"]),
    ("train-unknown-vocoder-key", TRAIN + SMOKE + ["task=vocoder", "+vocoder_train.bogus=1", "data.dir=WAVS"],
     ["unknown key vocoder_train.bogus", "valid keys:", "max_steps"]),
    ("train-unknown-classifier-key", TRAIN + SMOKE + ["task=classifier", "+classifier_train.bogus=1", "data.dir=PREP"],
     ["unknown key classifier_train.bogus", "valid keys:", "steps"]),
    ("train-classifier-not-prepared", TRAIN + SMOKE + ["task=classifier", "data.dir=WAVS"],
     ["WAVS", "not a prepared folder"]),
    ("train-missing-data-dir", TRAIN + SMOKE, ["data.dir", "missing"]),
    ("train-data-dir-not-there", TRAIN + SMOKE + ["data.dir=NOPE"], ["NOPE", "is not a folder", "audiodiff.prepare"]),
    ("train-data-dir-not-prepared", TRAIN + SMOKE + ["data.dir=WAVS"], ["not a prepared folder", "audiodiff.prepare"]),
    ("train-bad-audio-value", TRAIN + SMOKE + ["audio.n_mels=0", "data.dir=WAVS"], ["n_mels=0", "> 0"]),
    ("train-bad-device", TRAIN + SMOKE + ["device=tpu", "data.dir=WAVS"], ["device='tpu'", "auto, cpu, cuda"]),
    ("train-get-unknown", TRAIN + ["--get", "train.nope"], ["no key 'train.nope'"]),
    # generate
    ("generate-bad-sampler", GENERATE + ["--out", "OUT", "--sampler", "euler"],
     ["invalid choice: 'euler'", "ddim", "dpmpp"]),
    ("generate-bad-format", GENERATE + ["--out", "OUT", "--format", "mp3"], ["invalid choice: 'mp3'", "wav"]),
    ("generate-no-model", GENERATE + ["--out", "OUT", "--model", "NOPE"], ["NOPE", "no such run or model directory"]),
    ("generate-bad-num", GENERATE + ["--out", "OUT", "--model", "NOPE", "--num", "0"], ["--num 0 must be >= 1"]),
    # the dataset builder
    ("digits-no-out", DIGITS, ["required", "--out"]),
    ("digits-unknown-flag", DIGITS + ["--out", "OUT", "--bogus"], ["unrecognized arguments: --bogus"]),
    ("digits-zero", DIGITS + ["--out", "OUT", "--per-digit", "0"], ["per"]),
    # the recipe (AUDIODIFF_WORK=OUT)
    ("run.sh-unknown-option", RUN_SH + ["--bogus"],
     ["unknown option --bogus", "valid: --smoke --cpu --stage --stop-stage --nproc --nnodes --node-rank",
      "--rdzv-endpoint --rdzv-id --rdzv-timeout --max-restarts --finetune-vocoder"]),
    ("run.sh-bad-stage", RUN_SH + ["--stage", "two"], ["--stage needs a whole number"]),
    ("run.sh-positional", RUN_SH + ["train"], ["unexpected argument 'train'", "key=value"]),
    ("run.sh-unknown-key", RUN_SH + ["--smoke", "train.max_stepz=3"],
     ["unknown config key 'train.max_stepz'", "valid keys under train:"]),
    ("run.sh-bad-option", RUN_SH + ["--smoke", "net=huge"], ["'net/huge'", "valid net:"]),
    # evaluate
    ("evaluate-no-source", EVALUATE + ["--json", "OUT"], ["--model", "--clips"]),
    ("evaluate-unknown-flag", EVALUATE + ["--clips", "WAVS", "--bogus", "--json", "OUT"],
     ["unrecognized arguments: --bogus"]),
    ("evaluate-both-sources", EVALUATE + ["--model", "NOPE", "--clips", "WAVS", "--json", "OUT"],
     ["not allowed with argument"]),
    ("evaluate-bad-num", EVALUATE + ["--clips", "WAVS", "--num", "0", "--json", "OUT"], ["--num 0 must be >= 1"]),
    ("evaluate-bad-reference", EVALUATE + ["--clips", "WAVS", "--reference", "WAVS", "--json", "OUT"],
     ["not a prepared folder"]),
]


def _substitute(args, paths):
    return [paths.get(a, a) if a in paths else _replace_in(a, paths) for a in args]


def _replace_in(arg, paths):
    for key, value in paths.items():
        if arg.endswith("=" + key):
            return arg[: -len(key)] + value
    return arg


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    wavs = root / "wavs"
    wavs.mkdir()
    t = np.arange(22050) / 22050
    sf.write(wavs / "tone.wav", (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32), 22050)
    (root / "audio.json").write_text(json.dumps({"n_melz": 16}))
    prepare(wavs, root / "prep", AudioConfig(n_mels=16), workers=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(case):
        name, command, _ = case
        case_dir = root / name
        case_dir.mkdir()
        paths = {"OUT": str(case_dir / "out"), "WAVS": str(wavs), "CFG": str(root / "audio.json"),
                 "NOPE": str(root / "nope"), "PREP": str(root / "prep")}
        extra = {"AUDIODIFF_WORK": paths["OUT"]} if command[:2] == RUN_SH else {}
        before = sorted(p.name for p in wavs.iterdir())
        r = subprocess.run(_substitute(command, paths), env={**env, **extra}, capture_output=True, text=True,
                           timeout=300, cwd=case_dir)
        return name, {"r": r, "paths": paths, "case_dir": case_dir, "wavs_before": before}

    with ThreadPoolExecutor(max_workers=3) as pool:
        out = dict(pool.map(run, CASES))
    out["_wavs"] = wavs
    return out


@pytest.mark.parametrize("name,command,expected", CASES, ids=[c[0] for c in CASES])
def test_one_line_exit_2_writes_nothing(results, name, command, expected):
    res = results[name]
    r, paths = res["r"], res["paths"]
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err[-2000:])
    assert err and "\n" not in err and "Traceback" not in err, err
    assert r.stdout.strip() == "", r.stdout
    print(f"{name}: {err}")
    for text in expected:
        text = paths.get(text, text)
        assert text in err, (text, err)
    assert not Path(paths["OUT"]).exists(), f"{name} wrote {paths['OUT']}"
    assert sorted(p.name for p in res["case_dir"].iterdir()) == [], f"{name} wrote into its working folder"
    assert sorted(p.name for p in results["_wavs"].iterdir()) == res["wavs_before"] == ["tone.wav"]
