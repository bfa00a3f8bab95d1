"""The installation: the exact torch/torchaudio pair, and a broken pair named as one.

torchaudio 2.11.1 beside torch 2.11.0 fails to load its compiled library; a range pin let a
fresh install pick that pair while machines that already had 2.11.0 stayed green. These tests
fail when the installed pair is not the pinned one, and show what a user sees when a pair cannot
load: a stub `torchaudio` whose `functional` raises the same OSError, with the metadata of
2.11.1, sits first on PYTHONPATH (no package is installed or removed).
"""
import configparser
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff import install

ROOT = Path(__file__).resolve().parents[1]
LOAD_ERROR = ("Could not load this library: /site-packages/torchaudio/lib/libtorchaudio.so "
              "(undefined symbol: torch_exception_get_what_without_backtrace)")


def test_installed_pair_is_the_pinned_pair():
    found = install.installed_versions()
    assert install.pinned_pair_installed(found), (
        f"installed {found}, pinned {install.PINNED}: {install.FIX}")
    import torch
    import torchaudio
    import torchaudio.functional  # noqa: F401  loads libtorchaudio.so: the import that broke

    assert torch.__version__.split("+")[0] == install.PINNED["torch"]
    assert torchaudio.__version__.split("+")[0] == install.PINNED["torchaudio"]
    install.check()


def test_setup_cfg_pins_exactly_the_pair():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    for name, version in install.PINNED.items():
        pins = [r for r in requires if re.match(rf"{name}\b(?!-)", r)]
        assert pins == [f"{name}=={version}"], f"setup.cfg: {pins} (want exactly {name}=={version})"


def test_pinned_pair_check_allows_local_tags_only():
    good = {"torch": "2.11.0+cpu", "torchaudio": "2.11.0"}
    assert install.pinned_pair_installed(good)
    assert not install.pinned_pair_installed({**good, "torchaudio": "2.11.1"})
    assert not install.pinned_pair_installed({**good, "torch": "not installed"})


def _broken_torchaudio(folder, version: str):
    """A folder to put first on PYTHONPATH: torchaudio `version` (its metadata and __version__) whose
    compiled library fails to load."""
    (folder / "torchaudio").mkdir()
    (folder / "torchaudio" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    (folder / "torchaudio" / "functional.py").write_text(f"raise OSError({LOAD_ERROR!r})\n")
    meta = folder / f"torchaudio-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchaudio\nVersion: {version}\n")
    return folder


@pytest.fixture(scope="module")
def broken_torchaudio(tmp_path_factory):
    """torchaudio 2.11.1 beside torch 2.11.0: the pair that broke fresh installs."""
    return _broken_torchaudio(tmp_path_factory.mktemp("stub"), "2.11.1")


def _run(args, stub, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub), str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_every_command_names_a_broken_torchaudio_in_one_line(tmp_path, broken_torchaudio):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for i in range(3):
        sf.write(wavs / f"c{i}.wav", 0.1 * np.sin(np.arange(16000) * 0.05).astype(np.float32), 16000)
    out = tmp_path / "out"
    commands = {
        "prepare": ["-m", "audiodiff.prepare", str(wavs), "--out", str(out)],
        "train": ["-m", "audiodiff.train", "+experiment=digits_smoke", f"data.dir={wavs}", f"run_dir={out}"],
        "train --get": ["-m", "audiodiff.train", "+experiment=digits_smoke", "--get", "train.max_steps"],
        "generate": ["-m", "audiodiff.generate", "--out", str(out)],
        "evaluate": ["-m", "audiodiff.evaluate", "--clips", str(wavs), "--json", str(out / "m.json")],
        "datasets.digits": ["-m", "audiodiff.datasets.digits", "--out", str(out)],
    }
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(commands, pool.map(lambda a: _run(a, broken_torchaudio, tmp_path), commands.values())))
    for name, r in runs.items():
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1, (name, r.returncode, r.stderr[-2000:])
        assert len(lines) == 1, (name, r.stderr)
        line = lines[0]
        assert line.startswith(f"python -m audiodiff.{name.split()[0]}: error: broken installation: "), line
        for part in ("torchaudio cannot load", "OSError: Could not load this library",
                     "installed torch 2.11.0 + torchaudio 2.11.1", "needs torch 2.11.0 + torchaudio 2.11.0",
                     "pip install torch==2.11.0 torchaudio==2.11.0"):
            assert part in line, (name, part, line)
        assert "Traceback" not in r.stderr and "skipped" not in r.stdout + r.stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.fixture(scope="module")
def broken_pinned_torchaudio(tmp_path_factory):
    """The pinned version's metadata, but a compiled library that fails (a damaged install): the
    start-up check trusts the versions, so the fault surfaces where torchaudio is first used."""
    return _broken_torchaudio(tmp_path_factory.mktemp("stub_pinned"), "2.11.0")


def test_a_damaged_pinned_torchaudio_is_named_where_it_is_first_used(tmp_path, broken_pinned_torchaudio):
    wavs = _wavs(tmp_path / "wavs", 2)
    commands = {"prepare": ["-m", "audiodiff.prepare", str(wavs), "--out", str(tmp_path / "out")],
                "evaluate": ["-m", "audiodiff.evaluate", "--vocoder-metrics", "--clips", str(wavs)]}
    for name, args in commands.items():
        r = _run(args, broken_pinned_torchaudio, tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, (name, r.returncode, r.stderr[-2000:])
        assert "broken installation: torchaudio cannot load (OSError: Could not load this library" in lines[0]
        assert "installed torch 2.11.0 + torchaudio 2.11.0" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_library_raises_install_error_not_oserror(tmp_path, broken_torchaudio):
    code = ("from audiodiff.audio import MelSpec\n"
            "from audiodiff.install import InstallError\n"
            "try:\n    MelSpec()\nexcept InstallError as e:\n    print('InstallError', e)\n")
    r = _run(["-c", code], broken_torchaudio, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("InstallError broken installation: torchaudio cannot load (OSError:"), r.stdout


def _wavs(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        sf.write(folder / f"c{i}.wav", 0.1 * np.sin(np.arange(22050) * 0.05).astype(np.float32), 22050)
    return folder


@pytest.mark.parametrize("workers", [0, 2])
def test_prepare_stops_at_the_first_install_fault(tmp_path, monkeypatch, workers):
    """The fault raised while decoding (in a worker process, too) stops the run at the first file;
    no skipped.tsv blames the audio."""
    from audiodiff import prepare as prep

    calls = []

    def broken(task):
        calls.append(task["path"])
        raise install.InstallError(install.describe("torchaudio", OSError(LOAD_ERROR)))

    monkeypatch.setattr(prep, "_process_file", broken)  # fork: the workers see it too
    out = tmp_path / "out"
    with pytest.raises(install.InstallError, match="broken installation: torchaudio cannot load"):
        prep.prepare(_wavs(tmp_path / "wavs", 6), out, workers=workers, progress=False)
    for name in ("skipped.tsv", "manifest.jsonl", "cache.json"):
        assert not (out / name).exists(), name
    if workers == 0:
        assert len(calls) == 1  # stopped at the first file


def test_prepare_calls_the_same_error_on_every_file_an_environment_fault(tmp_path, monkeypatch, capsys):
    from audiodiff import prepare as prep

    def broken(task):
        raise RuntimeError("libfoo.so: cannot open shared object file")

    monkeypatch.setattr(prep, "_process_file", broken)
    out = tmp_path / "out"
    assert prep.main([str(_wavs(tmp_path / "wavs", 3)), "--out", str(out), "--workers", "0", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "all 3 files failed with the same error" in err[0], err
    assert "RuntimeError: libfoo.so" in err[0]
    assert not (out / "skipped.tsv").exists()


def test_prepare_still_skips_files_that_fail_differently(tmp_path, monkeypatch):
    """One bad file among good ones is the file's fault: skipped with its reason, as before."""
    from audiodiff import prepare as prep

    real = prep._process_file

    def one_broken(task):
        if task["path"].endswith("c1.wav"):
            raise RuntimeError("odd file")
        return real(task)

    monkeypatch.setattr(prep, "_process_file", one_broken)
    report = prep.prepare(_wavs(tmp_path / "wavs", 3), tmp_path / "out", workers=0, progress=False)
    assert report.usable == 2
    assert [r for _, r in report.skipped] == ["error: RuntimeError: odd file"]
