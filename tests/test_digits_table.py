"""benchmarks/digits_table.py: the digits results table on a tiny run dir and a tiny tone classifier."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_evaluate import tones  # noqa: F401  (fixture: tone splits + a 3-class classifier trained on them)
from test_pipeline import make_run

from audiodiff.audio import MelSpec, load_audio, loudness
from audiodiff.evaluate import score_sets
from audiodiff.manifest import read_prepared
from audiodiff.clipsets import read_prepared_split
from audiodiff.metrics import load_classifier
from audiodiff.pipeline import AudioDiffusionPipeline

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("digits_table", ROOT / "benchmarks" / "digits_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dt = load_script()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 3-class run dir (tiny 1D U-Net, random EMA weights) whose recipe asks for guidance 1.5."""
    run = make_run(tmp_path_factory.mktemp("table") / "run", num_classes=3)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.recipe = {"guidance": 1.5}
    OmegaConf.save(cfg, run / "config.yaml")
    return run


@pytest.fixture
def sample_calls(monkeypatch):
    """Count AudioDiffusionPipeline.sample_mel calls (a warm-up and one per batch per sampler row)."""
    calls = []
    original = AudioDiffusionPipeline.sample_mel

    def counting(self, *args, **kwargs):
        calls.append((kwargs.get("sampler"), kwargs.get("steps"), kwargs.get("batch_size")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AudioDiffusionPipeline, "sample_mel", counting)
    return calls


def args_for(run_dir, tones, out: Path, rows="dpmpp:3,ddim:2", extra=()):
    return ["--model", str(run_dir), "--classifier", str(tones["classifier"]),
            "--reference", str(tones["dirs"]["train"]), "--test", str(tones["dirs"]["test"]),
            "--num", "8", "--num-for", "ddim:2=6", "--rows", rows, "--vocoders", "griffinlim",
            "--batch-size", "4", "--device", "cpu", "--json", str(out / "table.json"),
            "--markdown", str(out / "table.md"), *extra]


def test_table_rows_metrics_and_resume(run_dir, tones, tmp_path, sample_calls, capsys):  # noqa: F811
    # the judge is the same classifier here, so its accuracy must equal the table's own
    argv = args_for(run_dir, tones, tmp_path, extra=("--judge", str(tones["classifier"])))
    assert dt.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    state = json.loads((tmp_path / "table.json").read_text())
    rows = state["rows"]
    assert list(rows) == ["dpmpp:3/griffinlim", "ddim:2/griffinlim"]
    assert rows["dpmpp:3/griffinlim"]["num"] == 8 and rows["ddim:2/griffinlim"]["num"] == 6  # --num-for
    assert state["settings"]["guidance"] == 1.5  # the run's recipe.guidance
    assert set(state["reference_rows"]) == {"train", "test", "test_vocoded"}
    assert state["reference_rows"]["train"]["num"] == 24 and state["reference_rows"]["test"]["num"] == 9
    for name, row in [*rows.items(), *((k, state["reference_rows"][k]) for k in ("train", "test"))]:
        for metric in ("FID", "IS", "mIS", "AM", "NDB/K", "accuracy"):
            assert row[metric] is not None and math.isfinite(row[metric]), (name, metric)
        assert 1.0 - 1e-9 <= row["IS"] <= 3.0 + 1e-9 and 0.0 <= row["accuracy"] <= 1.0, name
        assert 0.0 <= row["NDB/K"] <= 1.0 and row["FID"] >= 0.0
    for name, row in [*rows.items(), ("test", state["reference_rows"]["test"])]:
        assert row["judge_accuracy"] == pytest.approx(row["accuracy"]), name
    vocoded = state["reference_rows"]["test_vocoded"]  # the real test mels through the table's vocoder
    assert list(vocoded) == ["griffinlim"] and vocoded["griffinlim"]["num"] == 9
    for name, row in [*rows.items(), ("test", state["reference_rows"]["test"]), ("vocoded", vocoded["griffinlim"])]:
        assert 0.0 <= row["over_full_scale"] <= 1.0 and row["rms_db"] < row["peak_db"], name  # before any scaling
    pipe = AudioDiffusionPipeline.from_pretrained(run_dir, device="cpu", vocoder="griffinlim")
    test_mels = [MelSpec(pipe.audio_config)(w[None])[0] for w in  # the files as the model's mels (22,050 Hz)
                 (load_audio(e["path"], pipe.sample_rate) for e in read_prepared(tones["dirs"]["test"])[0])]
    assert len({m.shape for m in test_mels}) == 1  # so the table vocodes them in batches of --batch-size 4
    expected = loudness(w for start in range(0, 9, 4) for w in pipe.vocode(torch.stack(test_mels[start:start + 4]),
                                                                         seed=start))
    assert vocoded["griffinlim"] == {"num": 9, **expected}
    entries, _ = read_prepared(tones["dirs"]["test"])
    real = [load_audio(e["path"]) for e in entries]
    assert state["reference_rows"]["test"]["peak_db"] == pytest.approx(
        sum(20 * math.log10(float(w.abs().max())) for w in real) / len(real))
    for row in rows.values():
        assert row["rtf"] > 0 and row["audio_s"] == pytest.approx(row["num"] * 12 * 256 / 22050)
        assert row["rtf"] == pytest.approx(row["audio_s"] / (row["sample_s"] + row["vocode_s"]))
    # one warm-up + ceil(N / 4) batches per sampler row, each batch at the row's step count
    assert sample_calls == [("dpmpp", 2, 4), ("dpmpp", 3, 4), ("dpmpp", 3, 4),
                            ("ddim", 2, 4), ("ddim", 2, 4), ("ddim", 2, 2)]

    # the reference rows are audiodiff.evaluate's numbers for the same sets
    classifier, info = load_classifier(tones["classifier"])
    train = read_prepared_split(tones["dirs"]["train"], "train", info["audio_config"])
    test = read_prepared_split(tones["dirs"]["test"], "test", info["audio_config"])
    expected = score_sets([train, test], classifier, info, train, seed=0)
    for split in ("train", "test"):
        for metric in ("FID", "IS", "mIS", "AM", "NDB/K", "accuracy"):
            assert state["reference_rows"][split][metric] == pytest.approx(expected[split][metric], abs=1e-9)

    md = (tmp_path / "table.md").read_text()
    assert md.strip() == out.strip()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| sampler | steps | vocoder | N | FID") and "RTF" in table[0]
    assert [line.split("|")[1].strip() for line in table[1:]] == [
        "train split (real)", "test split (real)", "test split (real) through Griffin-Lim", "DPM-Solver++(2M)", "DDIM"]
    assert table[4].split("|")[2].strip() == "3" and table[5].split("|")[4].strip() == "6"
    assert f"torch {torch.__version__}" in md and "--num-for ddim:2=6" in md and "hardware:" in md

    # a re-run with the same settings samples nothing and keeps every measured number
    sample_calls.clear()
    assert dt.main(argv) == 0
    capsys.readouterr()
    again = json.loads((tmp_path / "table.json").read_text())
    assert sample_calls == [] and again["rows"] == rows and len(again["runs"]) == 2

    # a new row: only that sampler is run; a row with another N is measured again
    sample_calls.clear()
    assert dt.main(args_for(run_dir, tones, tmp_path, rows="dpmpp:3,ddim:2,dpmpp:2")) == 0
    capsys.readouterr()
    assert {c[0:2] for c in sample_calls} == {("dpmpp", 2)}
    assert json.loads((tmp_path / "table.json").read_text())["rows"]["dpmpp:3/griffinlim"] == rows["dpmpp:3/griffinlim"]

    # other settings against the same file: one line, exit 2, the file untouched
    before = (tmp_path / "table.json").read_text()
    assert dt.main(argv + ["--guidance", "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "guidance 1.5 -> 3.0" in err
    assert (tmp_path / "table.json").read_text() == before


def test_stopped_run_keeps_finished_rows(run_dir, tones, tmp_path, monkeypatch, capsys):  # noqa: F811
    argv = args_for(run_dir, tones, tmp_path)
    original = AudioDiffusionPipeline.sample_mel

    def stop_at_ddim(self, *args, **kwargs):
        if kwargs.get("sampler") == "ddim":
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AudioDiffusionPipeline, "sample_mel", stop_at_ddim)
    assert dt.main(argv) == 130
    assert "re-run the same command" in capsys.readouterr().err
    saved = json.loads((tmp_path / "table.json").read_text())
    assert list(saved["rows"]) == ["dpmpp:3/griffinlim"]
    assert set(saved["reference_rows"]) == {"train", "test", "test_vocoded"}

    monkeypatch.setattr(AudioDiffusionPipeline, "sample_mel", original)
    assert dt.main(argv) == 0
    done = json.loads((tmp_path / "table.json").read_text())
    assert list(done["rows"]) == ["dpmpp:3/griffinlim", "ddim:2/griffinlim"]
    assert done["rows"]["dpmpp:3/griffinlim"] == saved["rows"]["dpmpp:3/griffinlim"]  # not measured again


def test_guidance_interval_reaches_every_sampler_call(run_dir, tones, tmp_path, monkeypatch, capsys):  # noqa: F811
    seen = []
    original = AudioDiffusionPipeline.sample_mel

    def recording(self, *args, **kwargs):
        seen.append((kwargs.get("guidance_scale"), kwargs.get("guidance_interval")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AudioDiffusionPipeline, "sample_mel", recording)
    argv = args_for(run_dir, tones, tmp_path, rows="dpmpp:3")
    i = argv.index("--num-for")
    argv[i:i + 2] = []  # no ddim row here
    argv[argv.index("--num") + 1] = "4"
    assert dt.main(argv + ["--guidance-interval", "2,inf"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert seen == [(1.5, (2.0, math.inf))] * 2  # the warm-up and the one batch of 4
    state = json.loads((tmp_path / "table.json").read_text())
    assert state["settings"]["guidance_interval"] == [2.0, math.inf] and state["rows"]["dpmpp:3/griffinlim"]["num"] == 4
    assert "guidance 1.5 for sigma in (2, inf]" in out
    # another interval against the same file: refused in one line, nothing sampled
    seen.clear()
    assert dt.main(argv + ["--guidance-interval", "1,inf"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "guidance_interval" in err and seen == []

    # epsilon scaling: in the settings (a file from before the key reads as 1) and the heading; another value
    # against the same file is refused
    assert state["settings"]["eps_scaling"] == 1.0
    del state["settings"]["eps_scaling"]
    (tmp_path / "table.json").write_text(json.dumps(state))
    assert dt.main(argv + ["--guidance-interval", "2,inf"]) == 0 and seen == []
    capsys.readouterr()
    assert dt.main(argv + ["--guidance-interval", "2,inf", "--eps-scaling", "0.9"]) == 2
    assert "eps_scaling 1.0 -> 0.9" in capsys.readouterr().err
    assert dt.main(argv + ["--guidance-interval", "2,inf", "--eps-scaling", "0.9", "--restart"]) == 0
    assert "epsilon scaling 0.9" in capsys.readouterr().out and len(seen) == 2


@pytest.mark.parametrize("bad, message", [
    (["--rows", "euler:10"], "SAMPLER:STEPS"),
    (["--rows", "ddpm:5000,ddim:2"], "out of range"),
    (["--num-for", "ddpm:1000=8"], "not in --rows"),
    (["--vocoders", "wavenet"], "not known"),
    (["--finetuned", "/nonexistent/vocoder"], "does not exist"),
    (["--guidance-interval", "3,1"], "--guidance-interval 3,1: guidance_interval=(3, 1) must have"),
    (["--eps-scaling", "5"], "--eps-scaling 5.0 must be a number from 0.5 to 2"),
])
def test_bad_arguments_are_one_line(bad, message, run_dir, tones, tmp_path, capsys):  # noqa: F811
    assert dt.main(args_for(run_dir, tones, tmp_path) + bad) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err and captured.out == ""
    assert not (tmp_path / "table.json").exists()


def test_parsers():
    assert dt.parse_rows(dt.DEFAULT_ROWS) == [("dpmpp", 10), ("dpmpp", 20), ("dpmpp", 50), ("ddim", 50),
                                             ("ddpm", 1000)]
    rows = dt.parse_rows("ddpm:1000,ddim:50")
    assert dt.parse_num_for(["ddpm:1000=128", "ddim:50=64"], rows) == {("ddpm", 1000): 128, ("ddim", 50): 64}
    assert dt.parse_vocoders("griffinlim,hifigan", None) == [("griffinlim", "griffinlim"), ("hifigan", "hifigan")]
