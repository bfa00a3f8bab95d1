"""python -m audiodiff.edit on a tiny CPU model: folders with a bad file, the outputs, the regenerating
command (same bytes), bad arguments (exit 2, one line, nothing written), encode -> decode, loops."""
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from audiodiff import edit as edit_cli
from audiodiff import generate as generate_cli
from test_pipeline import make_run

ROOT = Path(__file__).resolve().parents[1]
SR = 22050


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("editcli")
    run = make_run(root / "run", num_classes=3)
    clips = root / "clips"
    clips.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, seconds in enumerate((0.4, 0.5)):
        sf.write(clips / f"c{i}.wav", (0.1 * torch.randn(round(seconds * SR), generator=g)).numpy(), SR)
    (clips / "broken.wav").write_bytes(b"not audio at all")
    return root, run, clips


def run_main(module, argv, capsys):
    rc = module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_inpaint_a_folder_skips_the_bad_file_and_writes_every_output(setup, capsys):
    root, run, clips = setup
    out = root / "inpainted"
    rc, stdout, stderr = run_main(edit_cli, ["inpaint", clips, "--out", out, "--model", run, "--region", "0.1:0.2",
                                             "--region=-0.1:", "--steps", "3", "--resample", "2", "--quiet",
                                             "--label", "1"], capsys)
    assert rc == 0, stderr
    assert "wrote 2 inpaint output(s)" in stdout and "1 skipped" in stdout
    skipped = (out / "skipped.tsv").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(str(clips / "broken.wav"))
    records = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1]
    for r in records:
        for key in ("file", "spectrogram", "source_file", "source_spectrogram"):
            assert (out / r[key]).is_file()
        assert r["metrics"]["kept_max_abs"] == 0 and r["metrics"]["kept_audio_max_abs"] == 0
        assert r["nfe"] > 0 and len(r["sources_sha256"][0]) == 64 and len(r["regions_frames"]) == 2
        data, rate = sf.read(out / r["file"], dtype="float32")
        source, _ = sf.read(r["sources"][0], dtype="float32")
        assert rate == SR and len(data) == len(source)
        assert (data[:1000] == source[:1000]).all()  # kept samples, bit for bit in the file too (float WAV)
    page = (out / "index.html").read_text()
    assert "edit_0001.wav" in page and "source_0000.png" in page and "/" not in page.split("src=\"")[1][:12]
    # the record's command makes the same bytes again
    fresh = root / "again"
    cmd = shlex.split(records[1]["command"].replace(" OUT ", f" {fresh} "))
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (fresh / "edit_0000.wav").read_bytes() == (out / "edit_0001.wav").read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["vary", "CLIP", "--strength", "2"], "--strength 2"),
    (["inpaint", "CLIP", "--region", "a:b"], "--region"),
    (["inpaint", "CLIP", "--region", "0.1:0.2", "--sampler", "dpmpp"], "dpmpp"),
    (["loop", "CLIP", "--sampler", "dpmpp"], "dpmpp"),
    (["inpaint", "CLIP", "--region", "0.1:0.2", "--bins", "x:y"], "--bins"),
    (["interpolate", "CLIP", "--alphas", "0,1"], "exactly two"),
    (["interpolate", "CLIP", "CLIP", "--alphas", "0,3"], "--alphas"),
    (["extend", "CLIP"], "--seconds"),
    (["loop"], "INPUT"),
    (["vary", "MISSING", "--strength", "0.5"], "does not exist"),
    (["vary", "CLIP", "--strength", "0.5", "--label", "9"], "label 9"),
    (["vary", "CLIP", "--strength", "0.5", "--steps", "0"], "--steps"),
    (["vary", "CLIP", "--strength", "0.5", "--eps-scaling", "0"], "--eps-scaling 0"),
    (["frobnicate", "CLIP"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(setup, capsys, argv, message):
    root, run, clips = setup
    out = root / "never"
    argv = [str(clips / "c0.wav") if a == "CLIP" else str(root / "missing.wav") if a == "MISSING" else a
            for a in argv]
    rc, stdout, stderr = run_main(edit_cli, [*argv, "--out", out, "--model", run], capsys)
    assert rc == 2 and message in stderr and stderr.count("\n") == 1, stderr
    assert not out.exists()


def test_encode_then_decode_and_loops_from_the_command_line(setup, capsys):
    root, run, clips = setup
    enc, dec = root / "enc", root / "dec"
    rc, _, stderr = run_main(edit_cli, ["encode", clips / "c0.wav", "--out", enc, "--model", run, "--steps", "6",
                                        "--quiet", "--label", "2"], capsys)
    assert rc == 0, stderr
    record = json.loads((enc / "edits.jsonl").read_text())
    assert record["file"] == "noise_0000.safetensors" and math.isfinite(record["metrics"]["roundtrip_rel_error"])
    rc, _, stderr = run_main(edit_cli, ["decode", enc, "--out", dec, "--model", run, "--quiet"], capsys)
    assert rc == 0, stderr
    decoded = json.loads((dec / "edits.jsonl").read_text())
    assert (dec / decoded["file"]).is_file()
    # epsilon scaling: encode records its lambda, decode uses it unless --eps-scaling says otherwise
    enc9 = root / "enc9"
    rc, _, stderr = run_main(edit_cli, ["encode", clips / "c0.wav", "--out", enc9, "--model", run, "--steps", "6",
                                        "--quiet", "--label", "2", "--eps-scaling", "0.9"], capsys)
    assert rc == 0, stderr
    with safe_open(str(enc9 / "noise_0000.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["audiodiff"])["eps_scaling"] == 0.9
    waves = {}
    for name, flags in (("own", []), ("same", ["--eps-scaling", "0.9"]), ("off", ["--eps-scaling", "1"])):
        rc, _, stderr = run_main(edit_cli, ["decode", enc9, "--out", root / f"dec9_{name}", "--model", run, "--quiet",
                                            *flags], capsys)
        assert rc == 0, stderr
        waves[name] = sf.read(root / f"dec9_{name}" / "edit_0000.wav")[0]
    assert (waves["own"] == waves["same"]).all() and not (waves["own"] == waves["off"]).all()
    loops = root / "loops"
    rc, _, stderr = run_main(edit_cli, ["loop", "--seconds", "0.3", "--out", loops, "--model", run, "--steps", "3",
                                        "--quiet", "--label", "0"], capsys)
    assert rc == 0, stderr
    frames = round(0.3 * SR / 256)
    assert sf.info(loops / "edit_0000.wav").frames == frames * 256
    made = root / "made_loop"
    rc, _, stderr = run_main(edit_cli, ["loop", clips / "c1.wav", "--seam-seconds", "0.05", "--out", made, "--model",
                                        run, "--steps", "3", "--resample", "2", "--quiet"], capsys)
    assert rc == 0, stderr
    assert "loop_seam_ratio" in json.loads((made / "edits.jsonl").read_text())["metrics"]
    fast = root / "loop_dpmpp"  # from scratch nothing is replaced, so the multistep solver may loop
    rc, _, stderr = run_main(edit_cli, ["loop", "--seconds", "0.3", "--out", fast, "--model", run, "--steps", "3",
                                        "--sampler", "dpmpp", "--quiet", "--label", "0"], capsys)
    assert rc == 0, stderr
    assert json.loads((fast / "edits.jsonl").read_text())["metrics"]["loop_seam_ratio"] > 0


def test_generate_makes_long_clips_and_loops(setup, capsys):
    root, run, _ = setup
    out = root / "gen"
    rc, _, stderr = run_main(generate_cli, ["--out", out, "--model", run, "--num", "1", "--seconds", "0.9",
                                            "--steps", "3", "--quiet", "--label", "1"], capsys)
    assert rc == 0, stderr
    assert sf.info(out / "clip_0000.wav").frames == round(0.9 * SR)
    record = json.loads((out / "clips.jsonl").read_text())
    assert record["nfe"] > 3  # windows of the 12-frame segment
    out2 = root / "gen_loop"
    rc, _, stderr = run_main(generate_cli, ["--out", out2, "--model", run, "--num", "1", "--seconds", "0.5", "--loop",
                                            "--steps", "3", "--quiet", "--label", "1"], capsys)
    assert rc == 0, stderr
    assert "--loop" in json.loads((out2 / "clips.jsonl").read_text())["command"]


def test_long_audio_benchmark_measures_both_methods_and_their_controls(setup, capsys):
    """benchmarks/long_audio.py (egs/drums' seam figures) on the tiny model: every row measured, the seam
    taken at the real join, the figures written."""
    import importlib.util

    root, run, clips = setup
    manifest = root / "long.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(clips / f"c{i}.wav"), "label": i}) + "\n" for i in (0, 1)))
    spec = importlib.util.spec_from_file_location("long_audio", ROOT / "benchmarks" / "long_audio.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = root / "long"
    rc = bench.main(["--model", str(run), "--manifest", str(manifest), "--extend-seconds", "0.6", "--loop-seconds",
                     "0.4", "--loop-seeds", "1", "--steps", "3", "--repaint-steps", "3", "--resample", "1",
                     "--json", str(out / "long.json"), "--figures", str(out)])
    assert rc == 0
    result = json.loads((out / "long.json").read_text())
    rows = result["rows"]
    assert rows["extension"]["n"] == 2 and rows["extension"]["nfe_per_clip"] > 3  # windows of the 12-frame segment
    for name in ("extension", "extension control (appended, not inpainted)",
                 "reference: every frame step of the extended clip, mean",
                 "reference: every frame step of the extended clip, 95th percentile"):
        assert math.isfinite(rows[name]["median"]) and rows[name]["worst"] >= rows[name]["median"] > 0
    for name in ("loop", "loop control (windows not circular)"):
        assert rows[name]["loop_seam_ratio"]["n"] == 2 and math.isfinite(rows[name]["wrap_click"]["worst"])
    assert result["loop_labels"] == [0, 1] and "--extend-seconds 0.6" in result["command"]
    for png in ("long_audio_extend.png", "long_audio_loop.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "| loop control (windows not circular) |" in capsys.readouterr().out
    manifest.write_text("".join(json.dumps({"path": str(clips / f"c{i}.wav")}) + "\n" for i in (0, 1)))  # unlabelled
    assert bench.main(["--model", str(run), "--manifest", str(manifest), "--per-label", "2", "--extend-seconds",
                       "0.3", "--loop-seconds", "0.4", "--steps", "2", "--repaint-steps", "2", "--resample", "1",
                       "--guidance", "1", "--json", str(out / "unlabelled.json")]) == 0
    result = json.loads((out / "unlabelled.json").read_text())
    assert result["loop_labels"] == [None, None] and result["rows"]["extension"]["n"] == 2
