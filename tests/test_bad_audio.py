"""prepare survives a corpus of bad and unusual audio: every file gets a verdict, nothing hangs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import audiodiff.prepare as prepare_module
from audiodiff.audio import AudioConfig
from audiodiff.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
CONFIG = AudioConfig(sample_rate=16000, n_fft=512, hop_length=128, win_length=512, n_mels=16, fmax=8000.0)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def time_limit():
    """A hang fails the test instead of stalling the suite."""
    def expired(signum, frame):
        raise TimeoutError("test took longer than 120 s: something hangs")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def tone(seconds: float, sr: int, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    """A 440 Hz tone [T], or [T, channels] with a different level per channel."""
    t = np.arange(int(seconds * sr)) / sr
    wave = amp * np.sin(2 * np.pi * 440.0 * t)
    if channels == 1:
        return wave
    return np.stack([wave * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)


def b(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


def build_corpus(root: Path) -> dict:
    """Write the corpus; returns {"good": {relpath bytes: (seconds, sample_rate, channels)},
    "bad": {relpath bytes: expected reason prefix}}."""
    root.mkdir(parents=True)
    broot = os.fsencode(root)
    good, bad = {}, {}

    def write(name, wave, sr, subtype=None):
        path = os.path.join(broot, b(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            sf.write(f, wave, sr, format="WAV", subtype=subtype)
        return path

    def raw(name, data: bytes, expect: str):
        path = os.path.join(broot, b(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        bad[b(name)] = expect

    # sample formats: 8-bit, 16-bit, 24-bit, 32-bit float and 64-bit float PCM
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "FLOAT", "DOUBLE"):
        write(f"formats/{subtype}.wav", tone(0.25, 16000), 16000, subtype)
        good[b(f"formats/{subtype}.wav")] = (0.25, 16000, 1)
    # 1 to 8 channels
    for ch in range(1, 9):
        write(f"channels/{ch}ch.wav", tone(0.2, 16000, ch), 16000)
        good[b(f"channels/{ch}ch.wav")] = (0.2, 16000, ch)
    # 8 kHz to 192 kHz
    for sr in (8000, 11025, 22050, 44100, 48000, 96000, 192000):
        write(f"rates/{sr}.wav", tone(0.2, sr), sr)
        good[b(f"rates/{sr}.wav")] = (0.2, sr, 1)
    # names: non-UTF-8 bytes, spaces, a directory named like audio with audio inside
    write(b"names/caf\xe9 latin-1.wav", tone(0.2, 16000), 16000)
    good[b"names/caf\xe9 latin-1.wav"] = (0.2, 16000, 1)
    write("names/   spaces   everywhere   .wav", tone(0.2, 16000), 16000)
    good[b"names/   spaces   everywhere   .wav"] = (0.2, 16000, 1)
    write("names/folder.wav/inside.wav", tone(0.2, 16000), 16000)
    good[b"names/folder.wav/inside.wav"] = (0.2, 16000, 1)
    bad[b"names/folder.wav"] = "not a file"

    # broken files
    whole = open(os.path.join(broot, b"formats/PCM_16.wav"), "rb").read()
    raw("broken/empty.wav", b"", "empty file: 0 bytes")
    raw("broken/truncated_header.wav", whole[:20], "cannot decode")
    raw("broken/text.wav", b"hello, this is a text file\n" * 10, "cannot decode")
    raw("broken/image.wav", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "cannot decode")
    raw(b"broken/bad \xff name\twith tab\nand newline.wav", b"", "empty file: 0 bytes")
    # truncated data: the header promises more samples than there are; libsndfile reads what
    # is there, so the clip is kept with its real length
    with open(os.path.join(broot, b"broken/truncated_data.wav"), "wb") as f:
        f.write(whole[:44 + 2 * 3200])
    good[b"broken/truncated_data.wav"] = (0.2, 16000, 1)
    # bad samples
    nan = tone(0.25, 16000).astype(np.float32)
    nan[10] = np.nan
    write("samples/nan.wav", nan, 16000, "FLOAT")
    bad[b"samples/nan.wav"] = "non-finite samples: 1 NaN/Inf"
    inf = tone(0.25, 16000).astype(np.float64)
    inf[[5, 6]] = [np.inf, -np.inf]
    write("samples/inf.wav", inf, 16000, "DOUBLE")
    bad[b"samples/inf.wav"] = "non-finite samples: 2 NaN/Inf"
    write("samples/zeros.wav", np.zeros(8000, np.int16), 16000, "PCM_16")
    bad[b"samples/zeros.wav"] = "silent: peak 0.0e+00 < 0.0001"
    write("samples/10ms.wav", tone(0.010, 16000), 16000)
    bad[b"samples/10ms.wav"] = "too short: 0.010 s < min 0.1 s"
    # file system oddities
    links = os.path.join(broot, b"links")
    os.makedirs(links)
    os.symlink(b"does-not-exist.wav", os.path.join(links, b"broken.wav"))
    bad[b"links/broken.wav"] = "broken symlink"
    os.symlink(b"loop.wav", os.path.join(links, b"loop.wav"))
    bad[b"links/loop.wav"] = "symlink loop"
    os.symlink(b"..", os.path.join(links, b"up"))  # a directory loop: links/up/links/up/...
    bad[b"links/up"] = "symlink loop"
    os.symlink(b"../formats/PCM_16.wav", os.path.join(links, b"good_link.wav"))
    good[b"links/good_link.wav"] = (0.25, 16000, 1)
    os.mkfifo(os.path.join(links, b"fifo.wav"))  # opening it would block forever
    bad[b"links/fifo.wav"] = "not a regular file"
    return {"good": good, "bad": bad}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "corpus"
    spec = build_corpus(root)
    out = root.parent / "out"
    report = prepare(root, out, CONFIG, workers=2)
    return root, out, spec, report


def tsv_escape(path: bytes) -> str:
    path = path.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
    return path.decode("utf-8", "backslashreplace")


def test_every_good_file_is_in_the_manifest(corpus):
    root, out, spec, report = corpus
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    manifest = {os.fsencode(m["path"]): m for m in map(json.loads, lines)}
    broot = os.fsencode(root)
    expected = {os.path.join(broot, name) for name in spec["good"]}
    assert set(manifest) == expected
    for name, (seconds, sr, channels) in spec["good"].items():
        m = manifest[os.path.join(broot, name)]
        assert abs(m["seconds"] - seconds) < 1e-3, name
        assert m["orig_sample_rate"] == sr and m["channels"] == channels, name
        feats = np.load(out / m["feats"])
        assert feats.shape == (m["num_frames"], CONFIG.n_mels) and np.isfinite(feats).all(), name
        # resampled to the config's rate: 1 + T' // hop frames, T' = seconds * 16 kHz
        assert abs(m["num_frames"] - (1 + round(seconds * CONFIG.sample_rate) // CONFIG.hop_length)) <= 1, name
        assert os.path.exists(os.fsencode(m["path"]))  # non-UTF-8 names survive the JSON round trip
    # deterministic sorted order
    assert [os.fsencode(json.loads(line)["path"]) for line in lines] == sorted(manifest)


def test_every_bad_file_has_a_one_line_reason(corpus):
    root, out, spec, report = corpus
    text = (out / "skipped.tsv").read_text(encoding="utf-8")  # valid UTF-8 even for byte names
    rows = [line.split("\t") for line in text.splitlines()]
    assert all(len(r) == 2 for r in rows), rows  # tabs and newlines in names are escaped
    skipped = dict(rows)
    prefix = tsv_escape(os.fsencode(root)) + "/"
    for name, reason in spec["bad"].items():
        key = prefix + tsv_escape(name)
        assert key in skipped, (name, sorted(skipped))
        assert skipped[key].startswith(reason), (name, skipped[key])
    assert len(skipped) == len(spec["bad"])
    assert prefix + "broken/bad \\xff name\\twith tab\\nand newline.wav" in skipped
    assert report.usable == len(spec["good"]) and len(report.skipped) == len(spec["bad"])


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "ok.wav", tone(0.2, 16000), 16000)
    sf.write(folder / "locked.wav", tone(0.2, 16000), 16000)
    real_open = open

    def no_permission(path, *args, **kwargs):  # root ignores chmod 000, so simulate what a user sees
        if str(path).endswith("locked.wav"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "open", no_permission, raising=False)
    prepare(folder, tmp_path / "out", CONFIG, workers=0)
    skipped = (tmp_path / "out/skipped.tsv").read_text()
    assert skipped == f"{folder / 'locked.wav'}\tunreadable: permission denied\n"
    assert "ok.wav" in (tmp_path / "out/manifest.jsonl").read_text()


@pytest.mark.skipif(IS_ROOT, reason="root can read a chmod 000 file; the simulated case covers it")
def test_chmod_000_file_is_skipped(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "ok.wav", tone(0.2, 16000), 16000)
    sf.write(folder / "locked.wav", tone(0.2, 16000), 16000)
    os.chmod(folder / "locked.wav", 0)
    try:
        prepare(folder, tmp_path / "out", CONFIG, workers=0)
    finally:
        os.chmod(folder / "locked.wav", 0o644)
    assert "unreadable: permission denied" in (tmp_path / "out/skipped.tsv").read_text()


def test_dead_worker_does_not_hang(tmp_path, monkeypatch):
    """A decoder that kills its process (segfault, OOM killer) costs one file, not the run."""
    folder = tmp_path / "audio"
    folder.mkdir()
    for name in ("a.wav", "boom.wav", "c.wav"):
        sf.write(folder / name, tone(0.2, 16000), 16000)
    real = prepare_module._process_file

    def crashing(task):
        if task["path"].endswith("boom.wav"):
            os._exit(1)
        return real(task)

    monkeypatch.setattr(prepare_module, "_process_file", crashing)  # inherited by the forked workers
    report = prepare(folder, tmp_path / "out", CONFIG, workers=2)
    assert report.usable == 2
    assert report.skipped == [(str(folder / "boom.wav"),
                               "error: the decoding process died (crashing decoder or out of memory)")]


@pytest.mark.slow
def test_thirty_minute_clip(tmp_path):
    """30 min at 8 kHz: decoded in blocks, mel in chunks; kept whole, in bounded time and memory."""
    folder = tmp_path / "audio"
    folder.mkdir()
    sr, seconds = 8000, 30 * 60
    rng = np.random.default_rng(0)
    with sf.SoundFile(folder / "long.wav", "w", sr, 1, "PCM_16") as f:
        for _ in range(seconds // 60):
            f.write((0.1 * rng.standard_normal(60 * sr)).astype(np.float32))
    code = ("import json, resource, sys; from audiodiff.prepare import main, prepare; "
            f"r = prepare({str(folder)!r}, {str(tmp_path / 'out')!r}, workers=0); "
            "print(json.dumps({'seconds': r.seconds_elapsed, 'usable': r.usable, "
            "'max_rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["usable"] == 1
    assert result["seconds"] < 30, f"30-minute clip took {result['seconds']:.1f} s"
    # importing torch alone is ~0.6 GB; decoding, resampling and the chunked mel add ~0.4 GB
    assert result["max_rss_kb"] / 1024 < 1500, f"peak memory {result['max_rss_kb'] / 1024:.0f} MB"
    m = json.loads((tmp_path / "out/manifest.jsonl").read_text())
    config = AudioConfig()  # the default HiFi-GAN mel at 22,050 Hz
    assert m["seconds"] == seconds and m["num_frames"] == config.num_frames(seconds * config.sample_rate)
    feats = np.load(tmp_path / "out" / m["feats"], mmap_mode="r")
    assert feats.shape == (m["num_frames"], 80)
    assert np.isfinite(feats[-1000:]).all() and float(np.abs(feats[-1000:]).max()) <= 1.5
