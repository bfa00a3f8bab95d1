"""python -m audiodiff.generate: outputs, regeneration, overwrite rules, argument errors."""

import json
import os
import shlex
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_pipeline import make_run

from audiodiff import generate
from audiodiff.generate import NO_MODEL_HINT, main

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--steps", "3", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("gen_uncond") / "run")


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("gen_cond") / "run", num_classes=3)


def records(out):
    return [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]


def siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_writes_clips_pngs_index_and_jsonl(tmp_path, cond_run, capsys):
    out = tmp_path / "clips"
    rc = main(["--out", str(out), "--model", str(cond_run), "--num", "3", "--batch-size", "2", "--label", "0",
               "--label", "2", "--guidance", "2.0", "--seed", "10", *FAST])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["clip_0000.png", "clip_0000.wav", "clip_0001.png", "clip_0001.wav", "clip_0002.png",
                     "clip_0002.wav", "clips.jsonl", "index.html"]
    assert siblings(out) == ["clips"]  # the temporary folder is gone
    for i in range(3):
        wave, sr = sf.read(out / f"clip_{i:04d}.wav")
        assert sr == 22050 and wave.ndim == 1 and len(wave) == 12 * 256 and np.abs(wave).max() > 0
        assert (out / f"clip_{i:04d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recs = records(out)
    assert [r["seed"] for r in recs] == [10, 11, 12]
    assert [r["label"] for r in recs] == [0, 2, 0]  # clips cycle through the labels
    for key in ("model", "checkpoint", "sampler", "steps", "seed", "label", "guidance", "seconds", "vocoder",
                "sample_rate", "audiodiff_version", "command"):
        assert key in recs[0]
    assert recs[0]["model"] == str(cond_run.resolve()) and recs[0]["guidance"] == 2.0
    assert recs[0]["sampler"] == "dpmpp" and recs[0]["steps"] == 3 and recs[0]["vocoder"] == "griffinlim"
    page = (out / "index.html").read_text()
    assert page.count("<audio controls") == 3 and page.count("<img src=") == 3
    assert 'src="clip_0001.wav"' in page and 'src="clip_0001.png"' in page  # relative: opens from disk
    assert str(cond_run) in page and "dpmpp" in page
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("wrote 3 clips") and "real-time factor" in last


def test_a_clip_regenerates_from_its_record(tmp_path, cond_run):
    out = tmp_path / "all"
    assert main(["--out", str(out), "--model", str(cond_run), "--num", "3", "--label", "1,2", *FAST]) == 0
    rec = records(out)[2]
    again = tmp_path / "one"
    assert main(["--out", str(again), "--model", rec["model"], "--num", "1", "--seed", str(rec["seed"]),
                 "--label", str(rec["label"]), "--steps", str(rec["steps"]), "--sampler", rec["sampler"],
                 "--device", "cpu", "--quiet"]) == 0
    # Same seed and label as clip 2, drawn alone instead of third in a batch of 3: the same mel up
    # to float rounding of batched matmuls, so the same spectrogram (Griffin-Lim's phase may drift).
    a, _ = sf.read(out / "clip_0002.wav")
    b, _ = sf.read(again / "clip_0000.wav")
    spec = lambda x: np.abs(np.fft.rfft(x.reshape(-1, 256), axis=1))  # noqa: E731
    other, _ = sf.read(out / "clip_0001.wav")
    assert np.abs(spec(a) - spec(b)).mean() < 0.05 * np.abs(spec(a) - spec(other)).mean()


def test_refuses_to_overwrite_then_overwrites(tmp_path, uncond_run, capsys):
    out = tmp_path / "clips"
    assert main(["--out", str(out), "--model", str(uncond_run), "--num", "2", *FAST]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["--out", str(out), "--model", str(uncond_run), "--num", "1", "--seed", "5", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["--out", str(out), "--model", str(uncond_run), "--num", "1", "--seed", "5", "--overwrite",
                 "--format", "flac", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip_0000.flac", "clip_0000.png", "clips.jsonl", "index.html"]
    assert records(out)[0]["seed"] == 5 and siblings(out) == ["clips"]


def test_overwrite_only_replaces_generate_output(tmp_path, uncond_run, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["--out", str(out), "--model", str(uncond_run), "--num", "1", "--overwrite", *FAST]) == 2
    assert "did not write" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize("args,expect", [
    (["--sampler", "euler"], "invalid choice: 'euler'"),
    (["--steps", "0"], "--steps 0 is out of range"),
    (["--steps", "1001"], "1 to 1000"),
    (["--label", "1"], "unconditional"),
    (["--guidance", "2"], "unconditional"),
    (["--seconds", "-1"], "--seconds -1"),
    (["--seconds", "abc"], "not a number"),
    (["--num", "0"], "--num 0"),
    (["--num", "x"], "invalid int value"),
    (["--label", "a"], "not an integer"),
    (["--device", "tpu"], "tpu"),
    (["--eta", "0.5"], "ddim"),
    (["--guidance-interval", "5,1"], "--guidance-interval (5, 1) must have 0 <= sigma_low < sigma_high"),
    (["--guidance-interval", "2"], "--guidance-interval '2' must be two numbers"),
    (["--eps-scaling", "0"], "--eps-scaling 0.0 must be a number from 0.5 to 2"),
])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, uncond_run, capsys, args, expect):
    out = tmp_path / "clips"
    rc = main(["--out", str(out), "--model", str(uncond_run), *FAST, *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and expect in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_guidance_interval_is_recorded_and_regenerates(tmp_path, cond_run):
    out = tmp_path / "clips"
    assert main(["--out", str(out), "--model", str(cond_run), "--num", "2", "--label", "1", "--guidance", "3",
                 "--guidance-interval", "2,inf", *FAST]) == 0
    rec = records(out)[1]
    assert rec["guidance_interval"] == [2.0, float("inf")]
    assert "--guidance-interval 2.0,inf" in rec["command"]
    again = tmp_path / "again"
    args = shlex.split(rec["command"])[3:]
    args[args.index("--out") + 1] = str(again)
    assert main(args + ["--quiet"]) == 0
    plain = tmp_path / "plain"  # the same clip guided at every step
    assert main(["--out", str(plain), "--model", str(cond_run), "--num", "2", "--label", "1", "--guidance", "3",
                 *FAST]) == 0
    a, _ = sf.read(out / "clip_0001.wav")
    b, _ = sf.read(again / "clip_0000.wav")
    c, _ = sf.read(plain / "clip_0001.wav")
    spec = lambda x: np.abs(np.fft.rfft(x.reshape(-1, 256), axis=1))  # noqa: E731
    assert np.abs(spec(a) - spec(b)).mean() < 0.05 * np.abs(spec(a) - spec(c)).mean()


def test_eps_scaling_is_recorded_and_regenerates(tmp_path, cond_run):
    """--eps-scaling reaches the sampler (other audio than without it), is recorded in clips.jsonl and
    index.html, and the record's command makes the same clip again."""
    out, plain = tmp_path / "clips", tmp_path / "plain"
    common = ["--model", str(cond_run), "--num", "2", "--label", "1", *FAST]
    assert main(["--out", str(out), "--eps-scaling", "0.9", *common]) == 0
    assert main(["--out", str(plain), *common]) == 0
    rec = records(out)[1]
    assert rec["eps_scaling"] == 0.9 and "--eps-scaling 0.9" in rec["command"]
    assert records(plain)[1]["eps_scaling"] == 1.0 and "--eps-scaling" not in records(plain)[1]["command"]
    assert "eps scaling" in (out / "index.html").read_text()
    again = tmp_path / "again"
    args = shlex.split(rec["command"])[3:]
    args[args.index("--out") + 1] = str(again)
    assert main(args + ["--quiet"]) == 0
    a, _ = sf.read(out / "clip_0001.wav")
    b, _ = sf.read(again / "clip_0000.wav")
    c, _ = sf.read(plain / "clip_0001.wav")
    assert np.abs(a - c).max() > 1e-3
    spec = lambda x: np.abs(np.fft.rfft(x.reshape(-1, 256), axis=1))  # noqa: E731
    assert np.abs(spec(a) - spec(b)).mean() < 0.05 * np.abs(spec(a) - spec(c)).mean()


def test_eps_scaling_max_sigma_is_recorded_and_regenerates(tmp_path, cond_run, capsys):
    """--eps-scaling-max-sigma reaches the sampler (other audio than the constant scaling), is recorded with
    its command, which makes the same clip again; a bad value exits 2 with one line before anything is written."""
    common = ["--model", str(cond_run), "--num", "1", "--label", "1", "--eps-scaling", "0.8", *FAST]
    bounded, constant, again = tmp_path / "bounded", tmp_path / "constant", tmp_path / "again"
    assert main(["--out", str(bounded), "--eps-scaling-max-sigma", "1", *common]) == 0
    assert main(["--out", str(constant), *common]) == 0
    rec = records(bounded)[0]
    assert rec["eps_scaling_max_sigma"] == 1.0 and "--eps-scaling-max-sigma 1.0" in rec["command"]
    assert records(constant)[0]["eps_scaling_max_sigma"] is None
    args = shlex.split(rec["command"])[3:]
    args[args.index("--out") + 1] = str(again)
    assert main(args + ["--quiet"]) == 0
    a, b, c = (sf.read(d / "clip_0000.wav")[0] for d in (bounded, again, constant))
    assert np.abs(a - b).max() < 1e-4 < np.abs(a - c).max()
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "bad"), "--eps-scaling-max-sigma", "0", *common]) == 2
    err = capsys.readouterr().err
    assert "--eps-scaling-max-sigma 0" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()


def test_bad_model_and_label_range_exit_2(tmp_path, cond_run, capsys):
    out = tmp_path / "clips"
    assert main(["--out", str(out), "--model", str(tmp_path / "missing"), *FAST]) == 2
    assert "missing: no such run or model directory" in capsys.readouterr().err
    assert main(["--out", str(out), "--model", str(cond_run), "--label", "0,3", *FAST]) == 2
    err = capsys.readouterr().err
    assert "label 3 is out of range" in err and "0..2" in err
    assert main(["--out", str(out), "--model", str(cond_run), "--guidance", "3", *FAST]) == 2
    assert "needs labels" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_no_model_found_exits_2_with_hint(tmp_path, monkeypatch, capsys):
    """With no trained run and no bundled model (a package built without its models)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(generate, "bundled_names", lambda: [])
    assert generate.main(["--out", "clips"]) == 2
    assert capsys.readouterr().err.strip() == f"audiodiff.generate: error: {NO_MODEL_HINT}"
    assert list(tmp_path.iterdir()) == []


def test_default_model_is_the_newest_run(tmp_path, monkeypatch, capsys):
    old = make_run(tmp_path / "exp" / "old")
    new = make_run(tmp_path / "egs" / "digits" / "exp" / "new", num_classes=3)
    past = time.time() - 3600
    for p in (old / "checkpoints").iterdir():
        os.utime(p, (past, past))
    (tmp_path / "exp" / "not_a_run").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["--out", "clips", "--num", "1", "--label", "2", *FAST]) == 0
    assert "egs/digits/exp/new" in capsys.readouterr().err
    assert records(tmp_path / "clips")[0]["model"] == str(new.resolve())


def test_a_failure_midway_leaves_nothing(tmp_path, uncond_run, monkeypatch, capsys):
    import audiodiff.generate as gen

    calls = []

    def broken_png(path, mel, normalization="minmax"):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        gen.__dict__["_real_png"](path, mel, normalization)

    monkeypatch.setitem(gen.__dict__, "_real_png", gen.save_mel_png)
    monkeypatch.setattr(gen, "save_mel_png", broken_png)
    assert main(["--out", str(tmp_path / "clips"), "--model", str(uncond_run), "--num", "3", *FAST]) == 1
    assert "disk full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_fine_tuned_hifigan_vocoder_folder(tmp_path, uncond_run, capsys):
    import torch

    from audiodiff.audio import AudioConfig
    from audiodiff.nets.hifigan import HiFiGANGenerator

    # What python -m audiodiff.train task=vocoder leaves in its run folder: generator.pt.
    small = dict(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4), upsample_initial_channel=32,
                 resblock="2", resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))
    G = HiFiGANGenerator(None, n_mels=16, **small)
    voc = tmp_path / "vocoder"
    voc.mkdir()
    torch.save({"generator": G.state_dict(), "generator_config": G.config,
                "audio_config": AudioConfig(n_mels=16).to_dict(), "step": 1}, voc / "generator.pt")
    out = tmp_path / "clips"
    assert main(["--out", str(out), "--model", str(uncond_run), "--num", "1", "--vocoder", str(voc), *FAST]) == 0
    assert records(out)[0]["vocoder"] == str(voc.resolve())
    assert sf.read(out / "clip_0000.wav")[0].shape == (12 * 256,)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "generator.pt").write_bytes(b"junk")
    assert main(["--out", str(tmp_path / "x"), "--model", str(uncond_run), "--vocoder", str(bad), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot load a HiFi-GAN generator" in err and len(err.splitlines()) == 1
    assert main(["--out", str(tmp_path / "x"), "--model", str(uncond_run), "--vocoder", "wavenet", *FAST]) == 2
    assert "--vocoder 'wavenet'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def written_audio(wave):
    """What save_audio writes of a [T] waveform: scaled to a 0.99 peak when over full scale, 16-bit."""
    wave = np.asarray(wave, dtype=np.float64)
    peak = np.abs(wave).max()
    return wave * (0.99 / peak) if peak > 1.0 else wave


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampler_choice_reaches_the_pipeline(tmp_path, uncond_run, sampler):
    from audiodiff.pipeline import AudioDiffusionPipeline

    out = tmp_path / "clips"
    assert main(["--out", str(out), "--model", str(uncond_run), "--num", "2", "--seed", "4", "--sampler", sampler,
                 *FAST]) == 0
    recs = records(out)
    assert [(r["sampler"], r["steps"], r["seed"]) for r in recs] == [(sampler, 3, 4), (sampler, 3, 5)]
    assert f"--sampler {sampler}" in recs[0]["command"]
    pipe = AudioDiffusionPipeline.from_pretrained(uncond_run, device="cpu")
    expected = {s: pipe(batch_size=2, steps=3, sampler=s, seed=4, progress=False).audio.numpy()
                for s in (sampler, "dpmpp")}
    for j in range(2):
        wave, _ = sf.read(out / f"clip_{j:04d}.wav")
        np.testing.assert_allclose(wave, written_audio(expected[sampler][j]), rtol=0, atol=1.5 / 32768)
        # the default sampler's clip is far off: the flag, not the default, made this one
        assert np.abs(wave - written_audio(expected["dpmpp"][j])).max() > 100 / 32768


def test_seconds_sets_the_clip_length(tmp_path, uncond_run):
    out = tmp_path / "clips"
    # 0.3 s at 22,050 Hz: 6,615 samples, longer than the model's 12-frame (3,072-sample) segment
    assert main(["--out", str(out), "--model", str(uncond_run), "--num", "2", "--seconds", "0.3", *FAST]) == 0
    for j, rec in enumerate(records(out)):
        wave, sr = sf.read(out / rec["file"])
        assert sr == 22050 and wave.shape == (6615,) and np.abs(wave).max() > 0
        assert rec["seconds"] == 0.3 and rec["duration"] == pytest.approx(0.3, abs=1 / 22050)
        assert rec["num_frames"] >= 6615 / 256 and "--seconds 0.3" in rec["command"]
