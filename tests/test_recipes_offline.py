"""The offline recipes egs/notes and egs/drums: their data builders on tiny fixtures, their
configs, and the notes recipe end to end in smoke mode."""

import json
import os
import subprocess
import sys
import xml.sax.saxutils as saxutils
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.datasets import drums, notes
from audiodiff.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("notes", "notes_cpu", "notes_smoke", "drums", "drums_cpu", "drums_smoke", "drums_beats",
               "drums_beats_cpu")


def tree(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def manifests(root, module):
    return {split: load_manifest(Path(root) / f"{split}.jsonl") for split in ("train", "valid", "test")}


def run(args, env=None, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def one_line_error(result, needle):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]


# ----------------------------------------------------------------------------- notes

def _have_notes_deps() -> bool:
    try:
        notes._tinysoundfont()
        notes.default_soundfont()
    except notes.NotesError:
        return False
    return True


needs_notes = pytest.mark.skipif(
    not _have_notes_deps() and not os.environ.get("CI"),
    reason='needs pretty_midi and tinysoundfont: pip install -e ".[notes]" && pip install --no-deps tinysoundfont')


@pytest.fixture(scope="module")
def note_builds(tmp_path_factory):
    if not _have_notes_deps():  # in CI (CI=true) the notes smoke must run: fail, don't skip
        pytest.fail('pretty_midi/tinysoundfont missing in CI; install them with: pip install -e ".[notes]" '
                    "&& pip install --no-deps tinysoundfont")
    base = tmp_path_factory.mktemp("notes")
    chunk, notes._CHUNK = notes._CHUNK, 5  # several tasks per worker, in an order that varies
    try:
        for name, seed, workers in (("a", 0, 2), ("b", 0, 1), ("c", 1, 1)):
            notes.build_notes(base / name, per_class=4, seed=seed, workers=workers, verbose=False)
    finally:
        notes._CHUNK = chunk
    return base


@needs_notes
def test_notes_same_seed_same_bytes_for_any_worker_count_and_other_seed_differs(note_builds):
    a, b, c = (tree(note_builds / n) for n in "abc")
    assert a == b
    assert a["train.jsonl"] != c["train.jsonl"]


@needs_notes
def test_notes_manifests_splits_and_clip_format(note_builds):
    record = json.loads((note_builds / "a" / "build.json").read_text())
    rows = manifests(note_builds / "a", notes)
    kept = sum(len(r) for r in rows.values())
    # 4 drawn per family; the silent ones are dropped and counted
    assert kept + record["silent_dropped_total"] == 4 * len(notes.FAMILIES)
    assert record["counts"] == {s: len(r) for s, r in rows.items()}
    assert record["classes"] == [f.name for f in notes.FAMILIES]
    triples = {s: {(e["program"], e["pitch"], e["velocity"]) for e in r} for s, r in rows.items()}
    assert not triples["train"] & triples["valid"] and not triples["train"] & triples["test"]
    assert not triples["valid"] & triples["test"]
    for split_rows in rows.values():  # 4 per family: 2 train, 1 valid, 1 test, so all splits have all
        assert {e["label"] for e in split_rows} == set(range(len(notes.FAMILIES)))
    for e in (e for r in rows.values() for e in r):
        family = notes.FAMILIES[e["label"]]
        assert e["family"] == family.name and e["program"] in family.programs
        assert family.lowest <= e["pitch"] <= family.highest and e["velocity"] in notes.VELOCITIES
        assert e["instrument"]  # the SoundFont's preset name
        info = sf.info(e["path"])
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (22050, 44100, 1, "PCM_16")
        x, _ = sf.read(e["path"])
        assert np.abs(x).max() >= notes.SILENT_PEAK
        onset = np.sqrt((x[:2205] ** 2).mean())
        held = np.sqrt((x[int(1.3 * 22050):notes.NOTE_OFF_SAMPLES] ** 2).mean())
        tail = np.sqrt((x[-2205:] ** 2).mean())
        assert onset > 0, e  # note-on at 0 s
        assert tail <= held and (held == 0 or tail < held), e  # released at 1.5 s


@needs_notes
def test_notes_a_note_does_not_depend_on_the_one_before():
    """A warm pad (program 89) still sounds 0.5 s after its release; the next note must not hear it."""
    fresh = notes._Renderer(str(notes.default_soundfont())).note(0, 60, 25)
    used = notes._Renderer(str(notes.default_soundfont()))
    used.note(89, 60, 127)
    assert np.array_equal(used.note(0, 60, 25), fresh)


@needs_notes
def test_notes_silent_render_is_dropped_not_written(tmp_path):
    renderer = notes._Renderer(str(notes.default_soundfont()))
    # TimGM6mb's baritone sax (program 67) has no sample above MIDI 79
    clip = {"program": 67, "pitch": 84, "velocity": 127, "path": str(tmp_path / "x.wav")}
    assert notes._render_clip(renderer, clip)["silent"] and not (tmp_path / "x.wav").exists()
    clip["pitch"] = 60
    assert not notes._render_clip(renderer, clip)["silent"] and (tmp_path / "x.wav").is_file()


@needs_notes
def test_notes_rerun_is_a_noop_and_a_mismatch_is_refused(note_builds, capsys):
    before = {p: os.stat(note_builds / "a" / p).st_mtime_ns for p in tree(note_builds / "a")}
    notes.build_notes(note_builds / "a", per_class=4, seed=0, workers=1)
    assert "nothing to do" in capsys.readouterr().out
    assert {p: os.stat(note_builds / "a" / p).st_mtime_ns for p in before} == before
    result = run([sys.executable, "-m", "audiodiff.datasets.notes", "--out", note_builds / "a",
                  "--per-class", "5", "--quiet"])
    one_line_error(result, "per_class=4")


@needs_notes
def test_notes_killed_build_resumes_to_the_same_bytes(note_builds, tmp_path):
    import shutil

    work = tmp_path / "resumed"
    shutil.copytree(note_builds / "c", work)
    record = json.loads((work / "build.json").read_text())
    (work / "build.json").write_text(json.dumps({**record, "complete": False}))
    victim = sorted(p for p in tree(work) if p.endswith(".wav"))[0]
    (work / victim).unlink()
    (work / (victim + ".tmp")).write_bytes(b"RIFF")
    notes.build_notes(work, per_class=4, seed=1, workers=1, verbose=False)
    assert tree(work) == tree(note_builds / "c")


@pytest.mark.parametrize("args, needle", [
    (["--per-class", "0"], "per_class"),
    (["--per-class", "999999"], "per_class"),
    (["--per-class", "two"], "--per-class"),
    (["--workers", "0"], "workers"),
    (["--soundfont", "/nonexistent.sf2"], "--soundfont"),
])
def test_notes_bad_arguments_exit_2_with_one_line(tmp_path, args, needle):
    result = run([sys.executable, "-m", "audiodiff.datasets.notes", "--out", tmp_path / "out", *args])
    one_line_error(result, needle)
    assert not (tmp_path / "out").exists()


def test_notes_missing_tinysoundfont_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import now raises ImportError
    monkeypatch.setattr(notes, "default_soundfont", lambda: Path(__file__))  # any existing file
    with pytest.raises(SystemExit) as exit_info:
        notes.main(["--out", str(tmp_path / "out"), "--per-class", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps tinysoundfont" in err[0]


# ----------------------------------------------------------------------------- drums

SR_IN = 44100


def _hit(kind: str, delay: float, sr: int, seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    """A synthetic one-shot starting after `delay` seconds of silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = {"kick": np.sin(2 * np.pi * 60 * t), "tom": np.sin(2 * np.pi * 140 * t)}.get(kind)
    body = tone if tone is not None else rng.standard_normal(len(t))
    decay = 3.0 if kind == "ring" else 20.0
    x = 0.5 * body * np.exp(-decay * t)
    return np.concatenate([np.zeros(int(delay * sr)), x])


def make_kit(root: Path, name: str, files: dict, instruments: list, seed: int = 0) -> Path:
    """A Hydrogen-style kit folder: drumkit.xml (namespaced, as Hydrogen writes it) and samples.

    files: {filename: (kind, delay_seconds, sample_rate, channels) or None for all zeros}.
    instruments: [(instrument name, [filenames])], each file one velocity layer.
    """
    kit = root / name
    kit.mkdir(parents=True)
    for i, (filename, spec) in enumerate(files.items()):
        if spec is None:
            x, sr, channels = np.zeros(4410), 44100, 1
        else:
            kind, delay, sr, channels = spec
            x = _hit(kind, delay, sr, seconds=2.0 if kind == "ring" else 0.6, seed=seed * 100 + i)
        data = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
        sf.write(kit / filename, data, sr, subtype="PCM_24" if filename.endswith(".flac") else "PCM_16")
    parts = []
    for i, (inst, layer_files) in enumerate(instruments):
        step = 1.0 / len(layer_files)
        layers = "".join(
            f"<layer><filename>{saxutils.escape(f)}</filename><min>{j * step:.3f}</min>"
            f"<max>{(j + 1) * step:.3f}</max><gain>1</gain><pitch>0</pitch></layer>"
            for j, f in enumerate(layer_files))
        parts.append(f"<instrument><id>{i}</id><name>{saxutils.escape(inst)}</name><volume>1</volume>"
                     f"<instrumentComponent><component_id>0</component_id>{layers}</instrumentComponent>"
                     "</instrument>")
    (kit / "drumkit.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<name>{saxutils.escape(name)}</name><author>test</author><instrumentList>"
        + "".join(parts) + "</instrumentList></drumkit_info>\n")
    return kit


def fake_kits(root: Path, n_kits: int = 3) -> Path:
    """n_kits kits named and laid out like Hydrogen's, each with every class."""
    layouts = [
        ("Fake Acoustic 1.0", {  # names as in The Black Pearl / Forzee
            "Kick-Soft.wav": ("kick", 0.2, 44100, 1), "Kick-Hard.wav": ("kick", 0.05, 44100, 2),
            "Snare-Med.wav": ("noise", 0.0, 44100, 1), "Hat Closed-1.wav": ("noise", 0.01, 48000, 1),
            "Tom1-Med.wav": ("tom", 0.1, 44100, 1), "Crash-0.wav": ("ring", 0.0, 44100, 2),
            "HandClap.wav": ("noise", 0.0, 44100, 1), "emptySample.wav": None,
            "beats_06-45.wav": ("noise", 0.0, 44100, 1),
        }, [("Pearl Kick", ["Kick-Soft.wav", "Kick-Hard.wav"]), ("Pearl Snare", ["Snare-Med.wav"]),
            ("Sabian Hat Closed", ["Hat Closed-1.wav"]), ("Pearl Tom 1", ["Tom1-Med.wav"]),
            ("Sabian Crash", ["Crash-0.wav"]), ("Hand Clap", ["HandClap.wav"]),
            ("Kick 2", ["emptySample.wav"]), ("Sample: beats_06-45.flac", ["beats_06-45.wav"]),
            ("Ride", ["ride-missing.wav"])]),
        ("FakeMillo", {  # names as in Millo-Drums, one file left out of drumkit.xml
            "bd1.flac": ("kick", 0.0, 48000, 1), "snare1.flac": ("noise", 0.3, 48000, 1),
            "closehihat3.flac": ("noise", 0.0, 48000, 1), "tom2_1.flac": ("tom", 0.0, 48000, 1),
            "cra_Rock_a.flac": ("ring", 0.02, 48000, 1), "misc_Cowbell.flac": ("tom", 0.0, 48000, 1),
            "bd_03.flac": ("kick", 0.0, 48000, 1),
        }, [("Kick", ["bd1.flac"]), ("Snare Jazz", ["snare1.flac"]), ("Closed HH", ["closehihat3.flac"]),
            ("Tom Low", ["tom2_1.flac"]), ("Crash", ["cra_Rock_a.flac"]), ("Cowbell", ["misc_Cowbell.flac"])]),
        ("fake_kit_gm", {  # names as in rumpf_kit
            "k1.wav": ("kick", 0.0, 22050, 1), "s1.wav": ("noise", 0.0, 22050, 1),
            "h1.wav": ("noise", 0.0, 22050, 1), "t1.wav": ("tom", 0.0, 22050, 1),
            "c1.wav": ("ring", 0.0, 22050, 1), "st.wav": ("noise", 0.0, 22050, 1),
        }, [("c3 - bass drum 1", ["k1.wav"]), ("d3 - snare 1", ["s1.wav"]), ("f#3 - hi-hat closed", ["h1.wav"]),
            ("b3 - low tom", ["t1.wav"]), ("d#4 - cymbal 1", ["c1.wav"]), ("c#3 - stick", ["st.wav"])]),
    ]
    kits_dir = root / "drumkits"
    for i, (name, files, instruments) in enumerate(layouts[:n_kits]):
        make_kit(kits_dir, name, files, instruments, seed=i)
    (kits_dir / "not_a_kit").mkdir()  # no drumkit.xml: ignored
    return kits_dir


EXPECTED = {  # (kit, file) -> label
    ("Fake Acoustic 1.0", "Kick-Soft.wav"): "kick", ("Fake Acoustic 1.0", "Kick-Hard.wav"): "kick",
    ("Fake Acoustic 1.0", "Snare-Med.wav"): "snare", ("Fake Acoustic 1.0", "Hat Closed-1.wav"): "hihat",
    ("Fake Acoustic 1.0", "Tom1-Med.wav"): "tom", ("Fake Acoustic 1.0", "Crash-0.wav"): "cymbal",
    ("Fake Acoustic 1.0", "HandClap.wav"): "other",
    ("FakeMillo", "bd1.flac"): "kick", ("FakeMillo", "snare1.flac"): "snare",
    ("FakeMillo", "closehihat3.flac"): "hihat", ("FakeMillo", "tom2_1.flac"): "tom",
    ("FakeMillo", "cra_Rock_a.flac"): "cymbal", ("FakeMillo", "misc_Cowbell.flac"): "other",
    ("FakeMillo", "bd_03.flac"): "kick",  # not in drumkit.xml: labelled by its file name
    ("fake_kit_gm", "k1.wav"): "kick", ("fake_kit_gm", "s1.wav"): "snare", ("fake_kit_gm", "h1.wav"): "hihat",
    ("fake_kit_gm", "t1.wav"): "tom", ("fake_kit_gm", "c1.wav"): "cymbal", ("fake_kit_gm", "st.wav"): "other",
}


@pytest.fixture(scope="module")
def drum_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("drums")
    kits_dir = fake_kits(root)
    drums.build_drums(root / "out", kits_dir, verbose=False)
    return root


def test_drums_labels_splits_and_drops_on_a_fake_kit_folder(drum_build):
    record = json.loads((drum_build / "out" / "build.json").read_text())
    rows = manifests(drum_build / "out", drums)
    got = {(e["kit"], Path(e["source"]).name): e["label_name"] for r in rows.values() for e in r}
    assert got == EXPECTED
    for e in (e for r in rows.values() for e in r):
        assert drums.LABELS[e["label"]] == e["label_name"]
        assert e["path"].split(os.sep)[-2] == e["label_name"]
    assert record["split_by"] == "kit"
    kits = {s: {e["kit"] for e in r} for s, r in rows.items()}
    assert all(len(k) == 1 for k in kits.values())  # three kits: one per split, none shared
    assert set().union(*kits.values()) == {"Fake Acoustic 1.0", "FakeMillo", "fake_kit_gm"}
    # the emptySample is silent, "beats_06-45" says nothing, "ride-missing.wav" is not there
    assert record["dropped"] == {"unlabelled": 1, "silent": 1, "unreadable": 0, "missing": 1, "bad_xml": 0}
    assert record["counts"] == {s: len(r) for s, r in rows.items()}
    kick = next(e for e in rows[[s for s in kits if "Fake Acoustic 1.0" in kits[s]][0]]
                if e["source"].endswith("Kick-Hard.wav"))
    assert kick["instrument"] == "Pearl Kick" and kick["velocity"] == [0.5, 1.0]


def test_drums_clips_are_onset_aligned_one_second_and_normalised(drum_build):
    rows = [e for r in manifests(drum_build / "out", drums).values() for e in r]
    pre_roll = round(drums.ONSET_PRE_ROLL_MS * drums.SAMPLE_RATE / 1000)
    delays = {"Kick-Soft.wav": 0.2, "Tom1-Med.wav": 0.1, "snare1.flac": 0.3, "Hat Closed-1.wav": 0.01}
    for e in rows:
        info = sf.info(e["path"])
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (22050, 22050, 1, "PCM_16")
        x, _ = sf.read(e["path"])
        peak = np.abs(x).max()
        assert abs(20 * np.log10(peak) - drums.PEAK_DBFS) < 0.01
        onset = int(np.argmax(np.abs(x) >= peak * 10 ** (drums.ONSET_DB / 20)))
        name = Path(e["source"]).name
        if name in delays:  # silence before the hit is cut to the pre-roll
            assert abs(e["onset_seconds"] - delays[name]) < 0.002, e
            assert abs(onset - pre_roll) <= 3, (e, onset)
        else:
            assert onset <= pre_roll + 3, (e, onset)
        if name in ("Crash-0.wav", "cra_Rock_a.flac", "c1.wav"):  # still ringing at 1 s: faded out
            assert np.abs(x[-10:]).max() < 1e-3 < np.abs(x[-3000:-2500]).max()


def test_drums_build_is_deterministic_and_a_rerun_is_a_noop(drum_build, tmp_path, capsys):
    drums.build_drums(tmp_path / "again", drum_build / "drumkits", verbose=False)
    assert tree(tmp_path / "again") == tree(drum_build / "out")
    drums.build_drums(tmp_path / "again", drum_build / "drumkits")
    assert "nothing to do" in capsys.readouterr().out


def test_drums_with_two_kits_split_by_clip(tmp_path):
    kits_dir = fake_kits(tmp_path, n_kits=2)
    drums.build_drums(tmp_path / "out", kits_dir, verbose=False)
    record = json.loads((tmp_path / "out" / "build.json").read_text())
    assert record["split_by"] == "clip"
    rows = manifests(tmp_path / "out", drums)
    assert all(rows[s] for s in rows)
    paths = [e["source"] for r in rows.values() for e in r]
    assert len(paths) == len(set(paths)) == 14


@pytest.mark.parametrize("instrument, filename, label", [
    ("Kick (Tama Superstar 22\")", "Kick-0.wav", "kick"), ("BassDrum", "BD_08.aiff", "kick"),
    ("c3 - bass drum 1", "beats_06-38.flac", "kick"), ("Pearl Snare Rimshot", "x.wav", "snare"),
    ("redo super opaco", "snare-opaque-2mics_normal-shot1.flac", "snare"),
    ("Sabian Hat Swish", "x.wav", "hihat"), ("Side OHH", "PowR_HH_2.flac", "hihat"),
    ("tomhi2", "tom-hi-1.flac", "tom"), ("Floor Tom", "x.wav", "tom"),
    ("Crash/Ride Bell (Paiste Rude Crash/Ride 18\")", "x.wav", "cymbal"), ("Paiste Bell", "x.wav", "cymbal"),
    ("Zildjian Splash Choke", "x.wav", "cymbal"), ("China (Paiste Alpha 18\")", "x.wav", "cymbal"),
    ("Cowbell", "x.wav", "other"), ("Pearl Side Stick", "x.wav", "other"), ("Djembe1 Slap", "x.wav", "other"),
    ("Sangban1 Bell Hit", "x.wav", "other"), ("Rim Click (Pearl)", "x.wav", "other"),
    ("17", "emptySample.flac", None), ("Sample: beats_06-45.flac", "beats_06-45.flac", None),
    ("Drum 2", "EE_Drum_2.flac", None), ("Dmajor D1-G5-A4", "Dmajor_DOWN_00.flac", None),
])
def test_drum_labels_from_real_kit_names(instrument, filename, label):
    assert drums.label_for(instrument, filename) == label


def test_drums_missing_kits_say_the_apt_command(tmp_path):
    result = run([sys.executable, "-m", "audiodiff.datasets.drums", "--out", tmp_path / "out",
                  "--kits-dir", tmp_path / "nowhere"])
    one_line_error(result, "apt-get install hydrogen-drumkits")
    (tmp_path / "empty").mkdir()
    result = run([sys.executable, "-m", "audiodiff.datasets.drums", "--out", tmp_path / "out",
                  "--kits-dir", tmp_path / "empty"])
    one_line_error(result, "apt-get install hydrogen-drumkits")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path(drums.DEFAULT_KITS_DIR).is_dir(),
                    reason="Debian's hydrogen-drumkits is not installed")
def test_drums_real_hydrogen_kits_label_and_cut():
    """Labels every real kit (no decoding), then cuts one real file of each class."""
    kits_dir = Path(drums.DEFAULT_KITS_DIR)
    kits = drums.find_kits(kits_dir)
    candidates, dropped = drums._inventory(kits, kits_dir)
    assert dropped["problems"] == []
    by_label = {}
    for c in candidates:
        by_label.setdefault(c["label_name"], []).append(c)
    assert set(by_label) == set(drums.LABELS)
    if any(k.name == "BJA_Pacific" for k in kits):  # hydrogen-drumkits 2017.09.19 has 15 kits
        assert len(candidates) >= 600 and all(len(v) >= 50 for v in by_label.values())
        assert not any("Guitar" in c["kit"] for c in candidates)  # chord names label nothing
    from audiodiff.audio import load_audio

    for label, group in sorted(by_label.items()):
        c = sorted(group, key=lambda c: c["source"])[0]
        clip, info = drums._cut(load_audio(c["path_in"], drums.SAMPLE_RATE, max_seconds=4).numpy())
        assert clip is not None and len(clip) == drums.CLIP_SAMPLES, c["source"]
        assert abs(np.abs(clip).max() - 10 ** (drums.PEAK_DBFS / 20)) < 1e-6
        assert info["onset_seconds"] < 0.5, c["source"]


def test_drums_recipe_data_stage_uses_the_kits_override_and_work_dir(tmp_path):
    kits_dir = fake_kits(tmp_path)
    result = run(["bash", "egs/drums/run.sh", "--smoke", "--stop-stage", "0", f"recipe.kits_dir={kits_dir}"],
                 env={"AUDIODIFF_WORK": str(tmp_path / "work")})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "work" / "data" / "drums" / "build.json").read_text())
    assert record["complete"] and record["kits_dir"] == str(kits_dir.resolve())
    assert sum(record["counts"].values()) == len(EXPECTED)


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_recipe_configs_dry_run(experiment):
    result = run([sys.executable, "-m", "audiodiff.train", f"+experiment={experiment}", "data.dir=x", "--dry-run"],
                 timeout=120)
    assert result.returncode == 0, result.stderr
    # the summary line names what the config builds: the same net, schedule and mel as building it here
    from audiodiff.config import build, compose_config

    audio, net, schedule = build(compose_config([f"+experiment={experiment}", "data.dir=x"]))
    n = sum(p.numel() for p in net.parameters())
    assert (f"dry run: net UNet with {n:,} parameters, schedule T={schedule.num_steps}, "
            f"audio {audio.sample_rate} Hz x {audio.n_mels} mels") in result.stdout


@pytest.mark.parametrize("experiment, classes, clip_samples", [
    ("notes", len(notes.FAMILIES), notes.CLIP_SAMPLES), ("drums", len(drums.LABELS), drums.CLIP_SAMPLES),
])
def test_recipe_configs_match_their_datasets(experiment, classes, clip_samples):
    """num_classes is the builder's class count; a training segment is a whole clip."""
    import yaml

    result = run([sys.executable, "-m", "audiodiff.train", f"+experiment={experiment}", "--cfg"], timeout=120)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["data"]["num_classes"] == classes
    assert cfg["data"]["segment_frames"] == 1 + clip_samples // cfg["audio"]["hop_length"]
    assert cfg["audio"]["sample_rate"] == notes.SAMPLE_RATE == drums.SAMPLE_RATE


# ----------------------------------------------------------------------------- notes end to end

@needs_notes
def test_notes_recipe_smoke_end_to_end(tmp_path):
    """bash egs/notes/run.sh --smoke: render -> prepare -> train -> one clip per family."""
    if not _have_notes_deps():
        pytest.fail('pretty_midi/tinysoundfont missing in CI; install them with: pip install -e ".[notes]" '
                    "&& pip install --no-deps tinysoundfont")
    recipe_dir = REPO / "egs" / "notes"
    before = sorted(p.name for p in recipe_dir.iterdir())
    result = run(["bash", "egs/notes/run.sh", "--smoke"], env={"AUDIODIFF_WORK": str(tmp_path)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in recipe_dir.iterdir()) == before  # nothing left in the repo
    clips = tmp_path / "exp" / "notes_smoke" / "clips"
    records = [json.loads(line) for line in (clips / "clips.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == list(range(len(notes.FAMILIES)))
    assert all(r["guidance"] == 2.0 and r["step"] == 100 for r in records)
    for r in records:
        x, rate = sf.read(clips / r["file"])
        assert rate == 22050 and abs(len(x) - notes.CLIP_SAMPLES) <= 256 and np.isfinite(x).all()
        assert np.abs(x).max() > 1e-3
    assert (tmp_path / "data" / "notes_4_seed0" / "build.json").is_file()
    assert (tmp_path / "dump" / "notes_smoke" / "train" / "manifest.jsonl").is_file()
