"""egs/drums/local/beats.py: the one-shots played as beats (the drums recipe's --beats data)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 22050


def load_beats():
    spec = importlib.util.spec_from_file_location("beats", ROOT / "egs" / "drums" / "local" / "beats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_shots(root: Path, classes=("kick", "snare", "hihat", "tom")) -> Path:
    """A one-shot build in miniature: one kit per split, one decaying noise burst per class."""
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        rows = []
        for c in classes:
            path = f"wavs/{split}/{c}/kit_{split}__{c}.wav"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            wave = 0.7 * rng.standard_normal(SR) * np.exp(-np.arange(SR) / (0.05 * SR))
            sf.write(root / path, wave.astype(np.float32), SR, subtype="PCM_16")
            rows.append({"path": path, "label_name": c, "kit": f"kit_{split}"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_beats_are_deterministic_full_length_and_normalised(tmp_path, capsys):
    beats = load_beats()
    drums = one_shots(tmp_path / "drums")
    for out in ("a", "b"):
        assert beats.main(["--drums", str(drums), "--out", str(tmp_path / out), "--per-split", "3,1,1",
                           "--seconds", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(90 <= r["tempo"] <= 140 and r["kit"] == "kit_train" for r in rows)
    for r in rows:
        wave, rate = sf.read(tmp_path / "a" / r["path"], dtype="float32")
        assert rate == SR and wave.shape == (2 * SR,)
        assert abs(20 * np.log10(np.abs(wave).max()) + 3) < 0.1  # peak -3 dBFS
        onsets = np.flatnonzero(np.abs(np.diff(np.abs(wave))) > 0.05)
        assert onsets.max() - onsets.min() > SR  # hits all through the clip, not one at its start
        assert (tmp_path / "b" / r["path"]).read_bytes() == (tmp_path / "a" / r["path"]).read_bytes()
    assert beats.main(["--drums", str(drums), "--out", str(tmp_path / "a"), "--per-split", "3,1,1",
                       "--seconds", "2"]) == 0
    assert "already built" in capsys.readouterr().out


def test_a_kit_without_a_snare_or_bad_counts_is_one_line(tmp_path):
    beats = load_beats()
    drums = one_shots(tmp_path / "drums", classes=("kick", "hihat"))
    with pytest.raises(SystemExit, match="no kit of .* has a kick, a snare and a hi-hat"):
        beats.main(["--drums", str(drums), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="must be three counts above 0"):
        beats.main(["--drums", str(drums), "--out", str(tmp_path / "out"), "--per-split", "5,0"])
