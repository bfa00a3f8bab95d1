"""The real-data recipes (egs/sc09, ljspeech, nsynth, folder) on tiny fixtures in each dataset's
own on-disk layout: manifests, splits and labels from the dataset modules, features from
prepare, `run.sh --stop-stage 1` end to end for two recipes, and a dry run of every config."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.datasets import folder, ljspeech, nsynth, sc09

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["sc09", "sc09_smoke", "ljspeech", "ljspeech_smoke", "nsynth", "nsynth_smoke", "folder",
               "folder_smoke"]


def tone(path: Path, seconds: float, sample_rate: int, freq: float = 440.0, channels: int = 1) -> Path:
    """A short sine with a fade, 16-bit PCM (what each dataset ships)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * np.minimum(1.0, np.minimum(t, t[::-1]) * 50)
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sample_rate, subtype="PCM_16")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cli(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


# --------------------------------------------------------------------------- fixtures

def make_speech_commands(root: Path) -> Path:
    """Speech Commands v0.02's tree: <word>/<speaker>_nohash_<n>.wav + the two split lists.

    Speakers s0..s3 say every digit once (train: s0, s1; valid: s2; test: s3), s0 says "zero"
    twice; "yes" and _background_noise_ must be ignored; one validation entry is missing on disk.
    """
    for word_i, word in enumerate(sc09.DIGITS):
        for spk in range(4):
            tone(root / word / f"5eed000{spk}_nohash_0.wav", 1.0, 16000, 200 + 40 * word_i)
    tone(root / "zero" / "5eed0000_nohash_1.wav", 0.8, 16000)
    tone(root / "yes" / "5eed0000_nohash_0.wav", 1.0, 16000)
    tone(root / "_background_noise_" / "white_noise.wav", 2.0, 16000)
    valid = [f"{w}/5eed0002_nohash_0.wav" for w in sc09.DIGITS] + ["yes/5eed0009_nohash_0.wav",
                                                                   "zero/5eed0009_nohash_7.wav"]
    test = [f"{w}/5eed0003_nohash_0.wav" for w in sc09.DIGITS]
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    return root


def make_ljspeech(root: Path, n: int = 12) -> Path:
    """LJSpeech-1.1: metadata.csv ("id|text|normalised", quotes not CSV-escaped) + wavs/."""
    lines = []
    for i in range(n):
        key = f"LJ{1 + i // 5:03d}-{1 + i % 5:04d}"
        tone(root / "wavs" / f"{key}.wav", 1.0 + 0.25 * i, 22050, 150 + 10 * i)
        lines.append(f'{key}|Clip "{i}" says 1st|Clip "{i}" says first')
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    (root / "README").write_text("LJ Speech Dataset\n")
    return root


def make_nsynth(root: Path) -> Path:
    """nsynth-{train,valid,test}/examples.json + audio/<note_str>.wav, 16 kHz 4 s notes (shortened)."""
    notes = {
        "train": [("guitar_acoustic_001", 3, "acoustic", p) for p in (20, 40, 60)]
        + [("bass_synthetic_033", 0, "synthetic", p) for p in (30, 50)]
        + [("vocal_acoustic_000", 10, "acoustic", 60)],
        "valid": [("guitar_electronic_002", 3, "electronic", 50), ("bass_electronic_010", 0, "electronic", 40)],
        "test": [("organ_electronic_007", 6, "electronic", 62), ("mallet_acoustic_047", 5, "acoustic", 90)],
    }
    for split, rows in notes.items():
        folder_ = root / f"nsynth-{split}"
        examples = {}
        for inst, family, source, pitch in rows:
            key = f"{inst}-{pitch:03d}-100"
            examples[key] = {
                "note": len(examples), "note_str": key, "instrument": 1, "instrument_str": inst, "pitch": pitch,
                "velocity": 100, "sample_rate": 16000, "qualities": [0] * 10, "qualities_str": ["bright"],
                "instrument_family": family, "instrument_family_str": nsynth.FAMILIES[family],
                "instrument_source": nsynth.SOURCES.index(source), "instrument_source_str": source}
            tone(folder_ / "audio" / f"{key}.wav", 1.0, 16000, 440 * 2 ** ((pitch - 69) / 12))
        (folder_ / "examples.json").write_text(json.dumps(examples))
    return root


def make_folder(root: Path) -> Path:
    """A user's folder: mixed rates and channels, a subfolder, a non-audio file, a broken wav."""
    tone(root / "a.wav", 1.5, 16000)
    tone(root / "b.wav", 2.0, 44100, channels=2)
    tone(root / "sub" / "c.flac", 2.5, 48000)
    tone(root / "sub" / "d.wav", 3.0, 22050)
    (root / "notes.txt").write_text("not audio\n")
    (root / "sub" / "broken.wav").write_bytes(b"RIFF\x00\x00")
    return root


# --------------------------------------------------------------------------- sc09

def test_sc09_manifests_follow_the_dataset_lists(tmp_path):
    data = make_speech_commands(tmp_path / "speech_commands_v0.02")
    info = sc09.make_manifests(data, tmp_path / "out")
    rows = {s: read_jsonl(tmp_path / "out" / f"{s}.jsonl") for s in sc09.SPLITS}
    assert [len(rows[s]) for s in sc09.SPLITS] == [21, 10, 10]
    assert {r["speaker"] for r in rows["train"]} == {"5eed0000", "5eed0001"}
    assert {r["speaker"] for r in rows["valid"]} == {"5eed0002"}
    assert {r["speaker"] for r in rows["test"]} == {"5eed0003"}
    for split in sc09.SPLITS:
        for r in rows[split]:
            assert r["label"] == sc09.DIGITS.index(r["word"]) and r["path"].startswith(str(data))
            assert Path(r["path"]).is_file() and r["id"] == f"{r['word']}/{Path(r['path']).stem}"
        assert sorted({r["label"] for r in rows[split]}) == list(range(10))
    assert not any("yes" in r["path"] or "noise" in r["path"] for s in rows for r in rows[s])
    assert info["counts"]["train"]["zero"] == 3 and info["missing_listed"] == 1
    assert json.loads((tmp_path / "out/labels.json").read_text())["nine"] == 9
    capped = sc09.make_manifests(data, tmp_path / "capped", per_label=1)
    assert capped["counts"]["train"] == {w: 1 for w in sc09.DIGITS}


def test_sc09_cli_names_what_is_missing(tmp_path):
    data = make_speech_commands(tmp_path / "sc")
    (data / "testing_list.txt").unlink()
    r = cli("audiodiff.datasets.sc09", "--data-dir", data, "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "testing_list.txt" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    r = cli("audiodiff.datasets.sc09", "--data-dir", data, "--out", tmp_path / "o", "--per-label", "-1")
    assert r.returncode == 2 and "per_label=-1" in r.stderr


# --------------------------------------------------------------------------- ljspeech

def test_ljspeech_heldout_split_is_fixed_and_disjoint(tmp_path):
    data = make_ljspeech(tmp_path / "LJSpeech-1.1")
    info = ljspeech.make_manifests(data, tmp_path / "out", num_valid=2, num_test=3, seed=7)
    rows = {s: read_jsonl(tmp_path / "out" / f"{s}.jsonl") for s in ljspeech.SPLITS}
    ids = {s: [r["id"] for r in rows[s]] for s in rows}
    assert info["counts"] == {"train": 7, "valid": 2, "test": 3}
    assert sorted(ids["train"] + ids["valid"] + ids["test"]) == sorted(
        line.split("|")[0] for line in (data / "metadata.csv").read_text().splitlines())
    assert all(ids[s] == sorted(ids[s]) for s in ids)
    r = rows["train"][0]
    assert r["speaker"] == "LJ" and r["chapter"] == r["id"][:5] and r["text"].endswith("says first")
    assert r["path"] == str(data / "wavs" / f"{r['id']}.wav")
    # The split depends on the ids and the seed only: same on reordered metadata, other with another seed.
    lines = (data / "metadata.csv").read_text().splitlines()
    (data / "metadata.csv").write_text("\n".join(reversed(lines)) + "\n")
    again = ljspeech.split_ids([line.split("|")[0] for line in lines], num_valid=2, num_test=3, seed=7)
    assert again["test"] == ids["test"] and again["valid"] == ids["valid"]
    assert ljspeech.split_ids(ids["train"] + ids["valid"] + ids["test"], num_valid=2, num_test=3,
                              seed=8)["test"] != ids["test"]
    assert ljspeech.make_manifests(data, tmp_path / "small", num_valid=2, num_test=3, seed=7,
                                   max_train=4)["counts"]["train"] == 4


def test_ljspeech_errors_are_one_line(tmp_path):
    data = make_ljspeech(tmp_path / "LJSpeech-1.1", n=4)
    (data / "wavs" / "LJ001-0002.wav").unlink()
    with pytest.raises(ljspeech.LJSpeechError, match=r"1 of 4 clips .* LJ001-0002\.wav"):
        ljspeech.make_manifests(data, tmp_path / "o", num_valid=1, num_test=1)
    r = cli("audiodiff.datasets.ljspeech", "--data-dir", tmp_path, "--out", tmp_path / "o")
    assert r.returncode == 2 and "has no metadata.csv" in r.stderr and r.stderr.count("\n") == 1


# --------------------------------------------------------------------------- nsynth

def test_nsynth_labels_are_families_and_filters_apply(tmp_path):
    data = make_nsynth(tmp_path / "nsynth")
    info = nsynth.make_manifests(data, tmp_path / "out", pitch_min=24, pitch_max=84)
    rows = {s: read_jsonl(tmp_path / "out" / f"{s}.jsonl") for s in nsynth.SPLITS}
    assert [r["id"] for r in rows["train"]] == sorted([
        "bass_synthetic_033-030-100", "bass_synthetic_033-050-100", "guitar_acoustic_001-040-100",
        "guitar_acoustic_001-060-100", "vocal_acoustic_000-060-100"])  # pitch 20 dropped
    assert [r["id"] for r in rows["test"]] == ["organ_electronic_007-062-100"]  # pitch 90 dropped
    for r in rows["train"] + rows["valid"]:
        assert nsynth.FAMILIES[r["label"]] == r["family"] == r["instrument"].split("_")[0]
        assert 24 <= r["pitch"] <= 84 and r["speaker"] == r["instrument"] and Path(r["path"]).is_file()
    assert info["counts"]["train"]["guitar"] == 2 and info["counts"]["train"]["vocal"] == 1
    assert json.loads((tmp_path / "out/labels.json").read_text()) == {f: i for i, f in enumerate(nsynth.FAMILIES)}
    acoustic = nsynth.make_manifests(data, tmp_path / "ac", splits="train", sources="acoustic", per_label=1)
    assert acoustic["counts"]["train"]["guitar"] == 1 and acoustic["counts"]["train"]["bass"] == 0
    with pytest.raises(nsynth.NSynthError, match="no valid notes left"):
        nsynth.make_manifests(data, tmp_path / "x", sources="synthetic")
    with pytest.raises(nsynth.NSynthError, match="source 'analog' is not one of"):
        nsynth.make_manifests(data, tmp_path / "x", sources="analog")


def test_nsynth_cli_names_the_missing_split(tmp_path):
    data = make_nsynth(tmp_path / "nsynth")
    (data / "nsynth-test" / "examples.json").unlink()
    r = cli("audiodiff.datasets.nsynth", "--data-dir", data, "--out", tmp_path / "o")
    assert r.returncode == 2 and "nsynth-test/examples.json" in r.stderr and r.stderr.count("\n") == 1
    assert cli("audiodiff.datasets.nsynth", "--data-dir", data, "--out", tmp_path / "o",
               "--splits", "train,valid", "--quiet").returncode == 0


# --------------------------------------------------------------------------- folder

def test_folder_lists_files_and_picks_settings(tmp_path):
    data = make_folder(tmp_path / "sounds")
    config = {"audio": {"sample_rate": 22050, "hop_length": 256, "fmax": 8000.0},
              "net": {"channel_mults": [1, 2, 3, 4]}, "train": {"batch_size": 128},
              "recipe": {"min_segment_seconds": 0.5, "max_segment_seconds": 4.0, "frames_per_batch": 11136}}
    info = folder.make_manifests(data, tmp_path / "out", config=config)
    rows = read_jsonl(tmp_path / "out/train.jsonl")
    assert [r["id"] for r in rows] == ["a.wav", "b.wav", "sub/broken.wav", "sub/c.flac", "sub/d.wav"]
    assert info["readable"] == 4 and info["unreadable"][0][0] == "sub/broken.wav"
    assert info["sample_rates"] == {"16000": 1, "22050": 1, "44100": 1, "48000": 1}
    assert info["median_seconds"] == 2.25 and info["channels"] == {"1": 3, "2": 1}
    # median 2.25 s -> 1 + 49612 // 256 = 194 frames -> 192 (multiple of 8); 11136 // 192 = 58,
    # but only 4 readable clips -> batch 4. Median native rate 22,050: fmax stays.
    assert info["overrides"] == {"data.segment_frames": 192, "train.batch_size": 4}
    text = (tmp_path / "out/overrides.yaml").read_text()
    assert "data.segment_frames: 192\n" in text and "train.batch_size: 4\n" in text


def test_folder_pick_rules():
    picks, _ = folder.pick_overrides([0.1] * 300, [8000] * 300)  # short telephone clips
    assert picks == {"data.segment_frames": 48, "train.batch_size": 128, "audio.fmax": 4000.0,
                     "recipe.vocoder": "griffinlim", "vocoder_train.init_from": None}  # 0.5 s: 44 -> 48
    picks, _ = folder.pick_overrides([600.0] * 1000, [44100] * 1000)  # long recordings: the 4 s cap
    assert picks == {"data.segment_frames": 344, "train.batch_size": 32}
    with pytest.raises(folder.FolderError):
        folder.pick_overrides([], [])


def test_folder_cli_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("audiodiff.datasets.folder", "--audio-dir", tmp_path / "empty", "--out", tmp_path / "o")
    assert r.returncode == 2 and "no audio files" in r.stderr and r.stderr.count("\n") == 1
    r = cli("audiodiff.datasets.folder", "--audio-dir", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.returncode == 2 and "is not a folder" in r.stderr


# --------------------------------------------------------------------------- prepare on the manifests

def test_prepare_reads_every_recipes_manifests(tmp_path):
    """The manifests go through prepare as-is: labels, resampling 16 kHz -> 22,050 Hz, extra keys."""
    from audiodiff.audio import AudioConfig
    from audiodiff.prepare import prepare

    config = AudioConfig(n_mels=16)
    ljspeech.make_manifests(make_ljspeech(tmp_path / "lj", n=5), tmp_path / "lj_m", num_valid=1, num_test=1)
    nsynth.make_manifests(make_nsynth(tmp_path / "ns"), tmp_path / "ns_m", splits="train")
    for manifest, n, labels in ((tmp_path / "lj_m/train.jsonl", 3, None),
                                (tmp_path / "ns_m/train.jsonl", 6, {0, 3, 10})):
        report = prepare(manifest, tmp_path / "dump" / manifest.parent.name, config, workers=0, progress=False)
        assert report.usable == n and not report.skipped
        rows = read_jsonl(report.manifest_path)
        for r in rows:
            feats = np.load(report.out_dir / r["feats"])
            assert feats.shape == (r["num_frames"], 16) and np.isfinite(feats).all()
        if labels is None:
            assert all("label" not in r and r["speaker"] == "LJ" for r in rows)
        else:
            assert {r["label"] for r in rows} == labels and all(r["orig_sample_rate"] == 16000 for r in rows)
            assert json.loads((report.out_dir / "labels.json").read_text())["vocal"] == 10


# --------------------------------------------------------------------------- run.sh

def run_recipe(recipe: str, work: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUDIODIFF_WORK": str(work)}
    return subprocess.run(["bash", str(ROOT / "egs" / recipe / "run.sh"), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=240, cwd=work.parent)


@pytest.mark.slow
def test_sc09_run_sh_data_and_features(tmp_path):
    data = make_speech_commands(tmp_path / "speech commands")  # a space: paths stay quoted
    r = run_recipe("sc09", tmp_path / "work", "--smoke", "--data-dir", "speech commands", "--stop-stage", "1")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    manifests = tmp_path / "work/data/sc09_smoke"
    assert [len(read_jsonl(manifests / f"{s}.jsonl")) for s in sc09.SPLITS] == [21, 10, 10]
    dump = tmp_path / "work/dump/sc09_smoke"
    for split, n in (("train", 21), ("valid", 10), ("test", 10)):
        rows = read_jsonl(dump / split / "manifest.jsonl")
        assert len(rows) == n and {r["label"] for r in rows} == set(range(10))
        feats = np.load(dump / split / rows[0]["feats"])
        assert feats.shape == (rows[0]["num_frames"], 80) and rows[0]["orig_sample_rate"] == 16000
        assert rows[0]["path"].startswith(str(data))
    assert not any((ROOT / "egs/sc09" / d).exists() for d in ("data", "dump", "exp"))


@pytest.mark.slow
def test_folder_run_sh_picks_settings_and_user_overrides_win(tmp_path):
    sounds = tmp_path / "sounds"
    for i in range(3):
        tone(sounds / f"phone_{i}.wav", 0.6 + 0.1 * i, 8000, 300 + 50 * i)  # telephone-rate clips
    r = run_recipe("folder", tmp_path / "work", "--smoke", "--audio-dir", sounds, "--stop-stage", "1",
                   "audio.fmax=8000")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    picked = (tmp_path / "work/data/folder_smoke/overrides.yaml").read_text()
    assert "\naudio.fmax: 4000.0\n" in picked and "\nrecipe.vocoder: \"griffinlim\"\n" in picked
    assert "\nvocoder_train.init_from: null\n" in picked
    assert "\ndata.segment_frames: 60\n" in picked  # median 0.7 s -> 61 frames -> 60 (tiny net: even)
    assert "\ntrain.batch_size: 2\n" in picked  # 3 clips -> the power of two below
    dump = tmp_path / "work/dump/folder_smoke"
    # The pick says fmax 4000, but the user's audio.fmax=8000 comes later and wins.
    assert json.loads((dump / "train/cache.json").read_text())["audio_config"]["fmax"] == 8000.0
    rows = read_jsonl(dump / "train/manifest.jsonl")
    assert len(rows) == 3 and all(r["orig_sample_rate"] == 8000 for r in rows)
    assert np.load(dump / "train" / rows[0]["feats"]).shape == (rows[0]["num_frames"], 80)


# --------------------------------------------------------------------------- configs

@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_dry_run_builds_the_net(experiment, capsys):
    from audiodiff.config import compose_config
    from audiodiff.train import main

    assert main([f"+experiment={experiment}", "data.dir=x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: net UNet with" in out
    cfg = compose_config([f"+experiment={experiment}", "data.dir=x"])
    assert cfg.name == experiment
    labelled = experiment.startswith(("sc09", "nsynth"))
    assert cfg.data.num_classes == {"sc09": 10, "nsynth": 11}.get(experiment.split("_")[0], 0)
    if labelled:
        assert cfg.recipe.guidance > 0 and cfg.data.label_dropout > 0
    for key in ("generate_num", "generate_steps", "sampler", "vocoder", "eval_num"):
        assert key in cfg.recipe
    if labelled:  # stage 5 trains the evaluation classifier with these
        assert cfg.classifier_train.steps > 0 and cfg.classifier_train.valid_dir is None
