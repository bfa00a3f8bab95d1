"""audiodiff.prepare: checks, manifest and skipped.tsv, the feature cache, incremental runs, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio import AudioConfig, MelSpec, load_audio
from audiodiff.manifest import ManifestError, load_manifest, scan_folder
from audiodiff.prepare import compute_mel, main, prepare

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
CONFIG = AudioConfig(sample_rate=SR, n_fft=512, hop_length=128, win_length=512, n_mels=16, fmax=8000.0)


def tone(seconds: float, freq: float = 440.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_mixed(folder: Path) -> dict:
    """Good and bad files; returns {"good": {name: wave}, "bad": {name: reason prefix}}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = {"a.wav": tone(0.5), "sub/b.flac": tone(0.3, 220.0), "c.wav": tone(0.4, 660.0, sr=22050)}
    for name, wave in good.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, wave, 22050 if name == "c.wav" else SR)
    (folder / "empty.wav").write_bytes(b"")
    raw = (folder / "a.wav").read_bytes()
    (folder / "trunc_header.wav").write_bytes(raw[:20])
    (folder / "text.wav").write_text("this is not audio\n")
    nan = tone(0.5)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(folder / "silence.wav", np.zeros(SR // 2, np.float32), SR)
    (folder / "notes.txt").write_text("ignored: not an audio extension\n")
    bad = {"empty.wav": "empty file", "trunc_header.wav": "cannot decode", "text.wav": "cannot decode",
           "nan.wav": "non-finite samples", "silence.wav": "silent"}
    return {"good": good, "bad": bad}


def read_manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def read_skipped(out: Path) -> dict:
    lines = (out / "skipped.tsv").read_text().splitlines()
    return dict(line.split("\t") for line in lines)


@pytest.fixture()
def mixed(tmp_path):
    spec = make_mixed(tmp_path / "audio")
    return tmp_path / "audio", spec


def test_good_in_manifest_bad_in_skipped(mixed, tmp_path):
    audio, spec = mixed
    out = tmp_path / "out"
    report = prepare(audio, out, CONFIG, workers=0)
    manifest = read_manifest(out)
    assert [m["id"] for m in manifest] == sorted(spec["good"])  # sorted path order
    skipped = read_skipped(out)
    assert set(skipped) == {str(audio / n) for n in spec["bad"]}
    for name, kind in spec["bad"].items():
        assert skipped[str(audio / name)].startswith(kind), (name, skipped[str(audio / name)])
    assert report.usable == 3 and len(report.skipped) == 5 and report.ignored == 1
    assert report.skipped_by_reason == {"cannot decode": 2, "empty file": 1, "non-finite samples": 1, "silent": 1}
    cache = json.loads((out / "cache.json").read_text())
    assert cache["audio_config"] == CONFIG.to_dict() and cache["config_hash"] == CONFIG.hash()
    # the cached features are MelSpec of the file resampled to the config's rate, time-major
    mel = MelSpec(CONFIG)
    for m in manifest:
        feats = np.load(out / m["feats"])
        wave = load_audio(m["path"], SR)
        assert feats.dtype == np.float16 and feats.shape == (CONFIG.num_frames(wave.shape[0]), 16)
        assert m["num_frames"] == feats.shape[0]
        expect = mel(wave.unsqueeze(0))[0].T.numpy()
        np.testing.assert_allclose(feats.astype(np.float32), expect, atol=2e-3)
    assert manifest[1]["id"] == "c.wav" and manifest[1]["orig_sample_rate"] == 22050
    assert abs(manifest[1]["seconds"] - 0.4) < 1e-3


def test_worker_pool_matches_in_process(mixed, tmp_path):
    audio, _ = mixed
    prepare(audio, tmp_path / "a", CONFIG, workers=0)
    prepare(audio, tmp_path / "b", CONFIG, workers=2)
    assert (tmp_path / "a/manifest.jsonl").read_text() == (tmp_path / "b/manifest.jsonl").read_text()
    assert (tmp_path / "a/skipped.tsv").read_text() == (tmp_path / "b/skipped.tsv").read_text()
    for m in read_manifest(tmp_path / "a"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / m["feats"]), np.load(tmp_path / "b" / m["feats"]))


def test_incremental_rerun_and_changes(mixed, tmp_path):
    audio, spec = mixed
    out = tmp_path / "out"
    first = prepare(audio, out, CONFIG, workers=0)
    assert first.computed == 8 and first.reused == 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "feats").rglob("*.npy")}
    texts = [(out / n).read_text() for n in ("manifest.jsonl", "skipped.tsv")]
    again = prepare(audio, out, CONFIG, workers=0)
    assert again.computed == 0 and again.reused == 8
    assert {p: p.stat().st_mtime_ns for p in (out / "feats").rglob("*.npy")} == stamps
    assert [(out / n).read_text() for n in ("manifest.jsonl", "skipped.tsv")] == texts
    # a changed file (size + mtime) and a new file are the only ones decoded
    sf.write(audio / "a.wav", tone(0.7), SR)
    sf.write(audio / "new.wav", tone(0.2, 330.0), SR)
    third = prepare(audio, out, CONFIG, workers=0)
    assert third.computed == 2 and third.usable == 4
    a = next(m for m in read_manifest(out) if m["id"] == "a.wav")
    assert a["num_frames"] == CONFIG.num_frames(int(0.7 * SR))
    # a removed file leaves the manifest and its features are deleted
    feats_new = out / next(m for m in read_manifest(out) if m["id"] == "new.wav")["feats"]
    (audio / "new.wav").unlink()
    fourth = prepare(audio, out, CONFIG, workers=0)
    assert fourth.computed == 0 and fourth.usable == 3 and not feats_new.exists()


def test_an_interrupted_run_leaves_the_previous_outputs_intact(mixed, tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in the middle of a re-run that would change every output: the
    previous manifest.jsonl, skipped.tsv and cache.json stay byte for byte, with the features they
    name; the next run completes the change."""
    import audiodiff.prepare as prep

    audio, spec = mixed
    out = tmp_path / "out"
    prepare(audio, out, CONFIG, workers=0)
    names = ("manifest.jsonl", "skipped.tsv", "cache.json")
    before = {n: (out / n).read_bytes() for n in names}
    sf.write(audio / "a.wav", tone(0.7), SR)  # a changed file and a new one: the outputs would differ
    sf.write(audio / "new.wav", tone(0.2, 330.0), SR)
    real, calls = prep._process_file, {"n": 0}

    def interrupted(task):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(prep, "_process_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(audio, out, CONFIG, workers=0)
    assert calls["n"] == 2
    assert {n: (out / n).read_bytes() for n in names} == before
    for m in read_manifest(out):  # the features the kept manifest names are still the ones it describes
        assert np.load(out / m["feats"]).shape[0] == m["num_frames"], m["id"]
    monkeypatch.setattr(prep, "_process_file", real)
    after = prepare(audio, out, CONFIG, workers=0)
    assert after.usable == 4 and {m["id"] for m in read_manifest(out)} >= {"a.wav", "new.wav"}


def test_ctrl_c_in_the_cli_is_one_line_and_exit_130(mixed, tmp_path, monkeypatch, capsys):
    import audiodiff.prepare as prep

    def interrupted(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_process_file", interrupted)
    audio, _ = mixed
    assert main([str(audio), "--out", str(tmp_path / "out"), "--workers", "0", "--quiet"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted; the previous outputs are kept" in err[0], err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_changed_config_recomputes_everything(mixed, tmp_path):
    audio, _ = mixed
    out = tmp_path / "out"
    prepare(audio, out, CONFIG, workers=0)
    old_dirs = {p.name for p in (out / "feats").iterdir()}
    other = AudioConfig(**{**CONFIG.to_dict(), "n_mels": 12})
    report = prepare(audio, out, other, workers=0)
    assert report.computed == 8 and report.reused == 0
    assert json.loads((out / "cache.json").read_text())["config_hash"] == other.hash()
    new_dirs = {p.name for p in (out / "feats").iterdir()}
    assert len(new_dirs) == 1 and not (new_dirs & old_dirs)  # the old cache is gone
    for m in read_manifest(out):
        assert np.load(out / m["feats"]).shape[1] == 12


def test_min_seconds_change_reuses_cache(mixed, tmp_path):
    audio, _ = mixed
    out = tmp_path / "out"
    prepare(audio, out, CONFIG, workers=0)
    report = prepare(audio, out, CONFIG, min_seconds=0.35, workers=0)
    assert report.computed == 0
    assert sorted(m["id"] for m in read_manifest(out)) == ["a.wav", "c.wav"]
    assert read_skipped(out)[str(audio / "sub/b.flac")] == "too short: 0.300 s < min 0.35 s"
    report = prepare(audio, out, CONFIG, workers=0)
    assert report.computed == 0 and report.usable == 3


def test_manifest_input_with_labels(tmp_path):
    data = tmp_path / "data"
    (data / "wavs").mkdir(parents=True)
    for i in range(3):
        sf.write(data / "wavs" / f"{i}.wav", tone(0.3, 200.0 + 100 * i), SR)
    lines = [{"path": "wavs/0.wav", "label": "dog", "speaker": "s1", "extra": [1, 2]},
             {"path": str(data / "wavs" / "1.wav"), "label": "cat", "id": "one"},
             {"path": "wavs/2.wav", "label": "dog"},
             {"path": "wavs/missing.wav", "label": "cat"}]
    manifest = data / "list.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = tmp_path / "out"
    report = prepare(manifest, out, CONFIG, workers=0)
    got = read_manifest(out)
    assert [m["id"] for m in got] == ["wavs/0.wav", "one", "wavs/2.wav"]  # manifest order kept
    assert [m["label"] for m in got] == [1, 0, 1] and got[0]["label_name"] == "dog"
    assert got[0]["speaker"] == "s1" and got[0]["extra"] == [1, 2]
    assert got[0]["path"] == str(data / "wavs" / "0.wav")
    assert json.loads((out / "labels.json").read_text()) == {"cat": 0, "dog": 1}
    assert read_skipped(out) == {str(data / "wavs" / "missing.wav"): "missing: no such file"}
    assert report.usable == 3
    # an explicit labels.json next to the manifest wins; ints are left as given
    (data / "labels.json").write_text(json.dumps(["dog", "cat"]))
    prepare(manifest, out, CONFIG, workers=0)
    assert [m["label"] for m in read_manifest(out)] == [0, 1, 0]
    manifest.write_text(json.dumps({"path": "wavs/0.wav", "label": 7}) + "\n")
    (data / "labels.json").unlink()
    prepare(manifest, out, CONFIG, workers=0)
    assert read_manifest(out)[0]["label"] == 7


def test_load_manifest_errors(tmp_path):
    m = tmp_path / "m.jsonl"
    cases = {
        '{"path": "a.wav"}\nnot json\n': "m.jsonl:2: not valid JSON",
        '{"path": "a.wav"}\n[1, 2]\n': "m.jsonl:2: expected a JSON object",
        '{"label": 1}\n': 'm.jsonl:1: missing "path"',
        '{"path": "a.wav", "label": -1}\n': "m.jsonl:1: label -1 must be an integer >= 0",
        '{"path": "a.wav", "label": true}\n': "m.jsonl:1: label True",
        '{"path": "a.wav"}\n\n{"path": "./a.wav"}\n': "m.jsonl:3: duplicate path",
    }
    for text, message in cases.items():
        m.write_text(text)
        with pytest.raises(ManifestError, match=message.replace("[", r"\[")):
            load_manifest(m)
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "none.jsonl")
    scp = tmp_path / "wav.scp"
    scp.write_text("u1 wavs/a b.wav\nu2 /abs/c.wav\n")
    got = load_manifest(scp)
    assert [(e["id"], e["path"]) for e in got] == [("u1", str(tmp_path / "wavs/a b.wav")), ("u2", "/abs/c.wav")]
    scp.write_text("u1 sox a.wav -t wav - |\n")
    with pytest.raises(ManifestError, match="wav.scp:1: piped commands"):
        load_manifest(scp)


def test_warnings_for_dc_offset_and_clipping_keep_the_clip(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "dc.wav", tone(0.5, amp=0.1) + 0.5, SR, subtype="FLOAT")
    sf.write(audio / "clip.wav", np.clip(tone(0.5, amp=3.0), -1, 1), SR, subtype="FLOAT")
    report = prepare(audio, tmp_path / "out", CONFIG, workers=0)
    assert report.usable == 2 and report.warnings == {"dc_offset": 1, "clipping": 1}
    by_id = {m["id"]: m for m in read_manifest(tmp_path / "out")}
    assert by_id["dc.wav"]["warnings"] == ["dc_offset"] and by_id["clip.wav"]["warnings"] == ["clipping"]
    assert "DC offset" in report.summary() and "clipping" in report.summary()


def test_max_seconds_caps_long_clips(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "long.wav", tone(3.0), SR)
    prepare(audio, tmp_path / "out", CONFIG, max_seconds=1.0, workers=0)
    m = read_manifest(tmp_path / "out")[0]
    assert m["seconds"] == 1.0 and m["num_frames"] == CONFIG.num_frames(SR)


def test_chunked_mel_equals_one_call():
    mel = MelSpec(CONFIG)
    wave = torch.randn(50_000) * 0.1
    full = mel(wave.unsqueeze(0))[0]
    for chunk in (7, 64, 100, 390):  # chunk edges everywhere, including the last frames
        torch.testing.assert_close(compute_mel(wave, mel, chunk_frames=chunk), full, atol=1e-4, rtol=1e-4)
    odd = AudioConfig(sample_rate=SR, n_fft=400, hop_length=160, win_length=300, n_mels=16)
    mel = MelSpec(odd)
    torch.testing.assert_close(compute_mel(wave[:12345], mel, chunk_frames=9), mel(wave[None, :12345])[0],
                               atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- CLI

def run_main(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_bad_arguments_exit_2_and_write_nothing(mixed, tmp_path, capsys):
    audio, _ = mixed
    out = tmp_path / "out"
    bad_manifest = tmp_path / "bad.jsonl"
    bad_manifest.write_text('{"path": "a.wav"}\n{"path": 3}\n')
    text_input = tmp_path / "list.txt"
    text_input.write_text("a.wav\n")
    cfg = tmp_path / "audio.yaml"
    cfg.write_text("sample_rate: 16000\nn_mels: 0\n")
    cases = [
        ([tmp_path / "nope", "--out", out], "does not exist"),
        ([text_input, "--out", out], "neither a folder nor a manifest"),
        ([bad_manifest, "--out", out], "bad.jsonl:2: missing \"path\""),
        ([audio, "--out", out, "--n-mels", "0"], "AudioConfig.n_mels=0"),
        ([audio, "--out", out, "--fmax", "20000"], "Nyquist"),
        ([audio, "--out", out, "--audio-config", cfg], "AudioConfig.n_mels=0"),
        ([audio, "--out", out, "--min-seconds", "-1"], "min_seconds=-1.0"),
        ([audio, "--out", out, "--max-seconds", "0.05"], "max_seconds=0.05 must be > min_seconds"),
        ([audio, "--out", out, "--workers", "-2"], "workers=-2"),
        ([audio, "--out", out, "--n-mels", "many"], "invalid int value"),
        ([audio], "--out"),
    ]
    for argv, message in cases:
        code, stdout, err = run_main(argv, capsys)
        assert code == 2, (argv, err)
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not out.exists(), argv


def test_cli_exit_codes_and_strict(mixed, tmp_path, capsys):
    audio, _ = mixed
    args = ["--sample-rate", SR, "--n-fft", 512, "--hop-length", 128, "--win-length", 512, "--n-mels", 16,
            "--workers", 0, "--quiet"]
    code, stdout, _ = run_main([audio, "--out", tmp_path / "o1", *args], capsys)
    assert code == 0 and "3 usable clip(s)" in stdout and "5 skipped" in stdout
    assert "cannot decode 2" in stdout
    code, _, err = run_main([audio, "--out", tmp_path / "o2", *args, "--strict"], capsys)
    assert code == 1 and "--strict: 5 file(s) skipped" in err
    clean = tmp_path / "clean"
    clean.mkdir()
    sf.write(clean / "ok.wav", tone(0.5), SR)
    code, _, _ = run_main([clean, "--out", tmp_path / "o3", *args, "--strict"], capsys)
    assert code == 0
    hopeless = tmp_path / "hopeless"
    hopeless.mkdir()
    (hopeless / "x.wav").write_bytes(b"")
    code, _, err = run_main([hopeless, "--out", tmp_path / "o4", *args], capsys)
    assert code == 1 and "no usable audio" in err
    assert read_skipped(tmp_path / "o4") == {str(hopeless / "x.wav"): "empty file: 0 bytes"}


def test_cli_audio_config_file_with_hydra_defaults(mixed, tmp_path, capsys):
    audio, _ = mixed
    code, _, err = run_main([audio, "--out", tmp_path / "o", "--audio-config", ROOT / "recipes/audio/small.yaml",
                             "--sample-rate", SR, "--workers", 0, "--quiet"], capsys)
    assert code == 0, err
    cache = json.loads((tmp_path / "o/cache.json").read_text())
    assert cache["audio_config"]["n_mels"] == 16 and cache["audio_config"]["sample_rate"] == SR
    assert cache["audio_config"]["hop_length"] == 256  # inherited from hifigan.yaml


def test_python_dash_m_entry_point(mixed, tmp_path):
    audio, _ = mixed
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "audiodiff.prepare", str(audio), "--out", str(tmp_path / "o"),
                           "--n-mels", "16", "--sample-rate", str(SR), "--workers", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(read_manifest(tmp_path / "o")) == 3
    assert not list((tmp_path / "o").rglob("*.tmp*"))  # no temporary files left behind


def test_scan_folder_sorted_and_relative_ids(mixed):
    audio, spec = mixed
    entries, skipped, ignored = scan_folder(audio)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids) and set(ids) == set(spec["good"]) | set(spec["bad"])
    assert skipped == [] and ignored == 1
