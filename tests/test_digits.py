"""The spoken-digits builder: determinism, speaker-disjoint splits, clip format, CLI errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from audiodiff.datasets import digits
from audiodiff.datasets.digits import DIGITS, SAMPLE_RATE, SPLITS, build_digits
from audiodiff.manifest import load_manifest as read_manifest
from audiodiff.datasets.espeak import Espeak

PER_DIGIT = 3  # three speakers: one per split


def tree(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def entries(root):
    return {split: read_manifest(root / f"{split}.jsonl") for split in SPLITS}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    base = tmp_path_factory.mktemp("digits")
    for name, seed, workers in (("a", 0, 2), ("b", 0, 1), ("c", 1, 2)):
        counts = build_digits(base / name, PER_DIGIT, seed, workers=workers, verbose=False)
        assert counts == {"train": 10, "valid": 10, "test": 10}
    return base


def test_same_seed_same_bytes_for_any_worker_count(builds):
    a, b = tree(builds / "a"), tree(builds / "b")
    assert len([p for p in a if p.endswith(".wav")]) == 10 * PER_DIGIT
    assert sorted(a) == sorted(b)
    assert [p for p in a if a[p] != b[p]] == []


def test_different_seed_differs(builds):
    a, c = tree(builds / "a"), tree(builds / "c")
    assert a["train.jsonl"] != c["train.jsonl"]
    a_audio = sorted(v for p, v in a.items() if p.endswith(".wav"))
    c_audio = sorted(v for p, v in c.items() if p.endswith(".wav"))
    assert not set(a_audio) & set(c_audio)


def test_splits_are_speaker_disjoint_and_train_has_every_digit(builds):
    for name in ("a", "c"):
        split_entries = entries(builds / name)
        speakers = {s: {e["speaker"] for e in rows} for s, rows in split_entries.items()}
        assert all(speakers[s] for s in SPLITS)
        assert not speakers["train"] & speakers["valid"]
        assert not speakers["train"] & speakers["test"]
        assert not speakers["valid"] & speakers["test"]
        assert {e["label"] for e in split_entries["train"]} == set(range(10))
        for rows in split_entries.values():
            for e in rows:
                assert DIGITS[e["label"]] == e["word"]
                assert "+" in e["speaker"]
                assert os.path.isfile(e["path"])


def test_manifest_paths_are_relative_to_the_directory(builds):
    with open(builds / "a" / "train.jsonl") as f:
        first = json.loads(f.readline())
    assert set(first) == {"path", "label", "word", "speaker"}
    assert not os.path.isabs(first["path"]) and first["path"].startswith("wavs/train/")


def test_clips_are_one_second_centred_and_normalised(builds):
    rows = [e for split_rows in entries(builds / "a").values() for e in split_rows]
    assert len(rows) == 10 * PER_DIGIT
    for e in rows:
        info = sf.info(e["path"])
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (SAMPLE_RATE, SAMPLE_RATE, 1, "PCM_16")
        pcm, _ = sf.read(e["path"], dtype="int16")
        x = pcm / 32768.0
        peak = np.abs(x).max()
        assert 10 ** (-7 / 20) - 1e-3 <= peak <= 10 ** (-1 / 20) + 1e-3, (e["path"], peak)
        assert np.abs(pcm.astype(int)).max() < 32767  # nothing at full scale
        # the word sits in the middle: edges hold only the faint noise floor, energy around 0.5 s
        for edge in (x[:500], x[-500:]):
            assert 10 ** (-75 / 20) < np.sqrt((edge ** 2).mean()) < 10 ** (-50 / 20), e["path"]
        middle = x[SAMPLE_RATE // 2 - 2756:SAMPLE_RATE // 2 + 2756]  # 0.25 s
        assert np.sqrt((middle ** 2).mean()) > 0.02, e["path"]
        centroid = (np.arange(len(x)) * x ** 2).sum() / (x ** 2).sum() / SAMPLE_RATE
        assert 0.35 < centroid < 0.65, (e["path"], centroid)


def test_a_process_that_already_used_espeak_builds_the_same_bytes(builds, tmp_path):
    engine = Espeak(*digits._espeak_paths())
    engine.say("seven", "en+m3", 175, 50, 50, 1)  # leaves state in this process's espeak-ng
    build_digits(tmp_path / "again", PER_DIGIT, 0, workers=1, verbose=False)
    assert tree(tmp_path / "again") == tree(builds / "a")


def test_rerun_is_a_noop(builds, capsys):
    before = {p: os.stat(builds / "a" / p).st_mtime_ns for p in tree(builds / "a")}
    counts = build_digits(builds / "a", PER_DIGIT, 0, workers=1)
    assert counts == {"train": 10, "valid": 10, "test": 10}
    assert "nothing to do" in capsys.readouterr().out
    assert {p: os.stat(builds / "a" / p).st_mtime_ns for p in before} == before


def test_killed_build_resumes_to_the_same_bytes(builds, tmp_path):
    import shutil

    work = tmp_path / "resumed"
    shutil.copytree(builds / "c", work)
    # what a kill leaves: an unfinished build record, a missing wav and a half-written temp file
    record = json.loads((work / "build.json").read_text())
    (work / "build.json").write_text(json.dumps({**record, "complete": False}))
    victim = sorted(p for p in tree(work) if p.endswith(".wav"))[0]
    (work / victim).unlink()
    (work / (victim + ".tmp")).write_bytes(b"RIFF")
    (work / "test.jsonl").unlink()
    build_digits(work, PER_DIGIT, 1, workers=1, verbose=False)
    assert tree(work) == tree(builds / "c")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audiodiff.datasets.digits", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, needle", [
    (["--per-digit", "0"], "per_digit"),
    (["--per-digit", "two"], "--per-digit"),
    (["--workers", "0"], "workers"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, needle):
    result = run_cli("--out", tmp_path / "out", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert needle in result.stderr
    assert not (tmp_path / "out").exists()


def test_foreign_or_mismatched_directory_is_refused(tmp_path, builds):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = run_cli("--out", foreign, "--per-digit", 3)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "non-empty" in result.stderr and (foreign / "notes.txt").read_text() == "mine"

    result = run_cli("--out", builds / "a", "--per-digit", 4, "--seed", 0)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "per_digit=3" in result.stderr


def test_missing_espeakng_loader_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import now raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        digits.main(["--out", str(tmp_path / "out"), "--per-digit", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[digits]"' in err[0]


@pytest.mark.parametrize("tries, outcome", [(digits._MAX_TRIES, "resynthesised"), (0, "cropped")])
def test_words_too_long_are_sped_up_or_cropped(tmp_path, monkeypatch, tries, outcome):
    pytest.importorskip("espeakng_loader")
    # espeak-ng's slowest rate keeps a digit under 1 s, so shrink the limit to 0.6 s instead
    monkeypatch.setattr(digits, "_MAX_SPEECH", int(0.6 * SAMPLE_RATE))
    monkeypatch.setattr(digits, "_MAX_TRIES", tries)
    engine = Espeak(*digits._espeak_paths())  # this process only; builds use fresh workers
    start, end = digits._speech_span(engine.say("seven", "en-us+m3", 100, 50, 50, 1))
    assert end - start > 0.7 * SAMPLE_RATE
    clip = {"word": "seven", "speaker": "en-us+m3", "rate": 100, "pitch": 50, "range": 50,
            "noise_seed": 1, "peak_dbfs": -1.0, "noise_dbfs": -300.0, "path": str(tmp_path / "long.wav")}
    report = digits._render_clip(engine, clip)
    assert report[outcome] and report["resynthesised"] == (tries > 0)
    pcm, rate = sf.read(clip["path"], dtype="int16")
    assert rate == SAMPLE_RATE and len(pcm) == SAMPLE_RATE
    nonzero = np.flatnonzero(pcm)
    assert nonzero[-1] - nonzero[0] < 0.6 * SAMPLE_RATE
    assert nonzero[0] > 0.19 * SAMPLE_RATE and nonzero[-1] < 0.81 * SAMPLE_RATE


def test_manifests_load_with_the_project_loader(builds):
    manifest = pytest.importorskip("audiodiff.manifest")
    rows = manifest.load_manifest(builds / "a" / "valid.jsonl")
    assert len(rows) == 10 and sorted(r["label"] for r in rows) == list(range(10))
    assert all(os.path.isfile(r["path"]) for r in rows)
