"""Every recipe, egs/*/run.sh, answers a bad option, a bad stage and an input folder that is not
there (--data-dir / --audio-dir, where the recipe takes one) with one line on stderr, exit status 2,
nothing on stdout, and nothing written: no data/ dump/ exp/ in the recipe folder, nothing where it
was called from.

Each case runs the real script in its own copy of egs/common + egs/NAME (the files git knows), with
no AUDIODIFF_WORK, so that outputs would land in the copy; the copy and the calling folder are
listed before and after. The runs start together from one module fixture (a few at a time), as in
test_cli_errors.py, which covers the digits recipe's other argument errors.
"""
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# recipe -> (its last stage, its input-folder options)
RECIPES = {
    "digits": (5, []),
    "sc09": (5, ["--data-dir"]),
    "ljspeech": (5, ["--data-dir"]),
    "nsynth": (5, ["--data-dir"]),
    "notes": (4, []),
    "drums": (4, []),
    "folder": (5, ["--audio-dir", "--data-dir"]),
}


def _cases():
    """(id, recipe, args, expected substrings of the one stderr line); NOPE: a path not there."""
    cases = []
    for recipe, (last, dir_opts) in RECIPES.items():
        def add(case, args, expected):
            cases.append((f"{recipe}-{case}", recipe, args, [f"{recipe}/run.sh: "] + expected))

        add("bogus", ["--smoke", "--bogus"], ["unknown option --bogus", "valid: --smoke --cpu --stage"]
            + dir_opts)
        add("positional", ["train"], ["unexpected argument 'train'"])
        add("stage-word", ["--stage", "x"], ["--stage needs a whole number", "usage: bash egs/"])
        add("stage-negative", ["--stage", "-1"], ["--stage needs a whole number"])
        add("stage-no-value", ["--stage"], ["--stage needs a whole number"])
        add("stop-stage-word", ["--stop-stage", "last"], ["--stop-stage needs a whole number"])
        add("stage-99", ["--stage", "99"], ["--stage 99", f"the stages are 0 to {last}"])
        add("stage-past-last", ["--stage", str(last + 1)], [f"--stage {last + 1}", f"the stages are 0 to {last}"])
        add("stop-before-start", ["--stage", "2", "--stop-stage", "1"],
            ["--stop-stage 1 is before --stage 2", "nothing would run"])
        for opt in dir_opts:
            add(f"{opt[2:]}-missing", ["--smoke", opt, "NOPE"], [f"{opt} NOPE is not a folder"])
            add(f"{opt[2:]}-relative-missing", [opt, "no/such/folder"], [f"{opt} no/such/folder is not a folder"])
            add(f"{opt[2:]}-a-file", [opt, "FILE"], [f"{opt} FILE is not a folder"])
            add(f"{opt[2:]}-no-value", ["--smoke", opt], [f"{opt} needs a value"])
    # the folder recipe's stage 0 needs its input folder (checked after the config is read)
    cases.append(("folder-no-audio-dir", "folder", ["--smoke", "--stop-stage", "0"],
                  ["folder/run.sh: ", "stage 0 needs --audio-dir DIR"]))
    return cases


CASES = _cases()


def _tree(root):
    """Every path under root with its kind, size and mtime."""
    return {str(p.relative_to(root)): (p.is_dir(), p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_sh")
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "egs"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    env = {k: v for k, v in os.environ.items() if k != "AUDIODIFF_WORK"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

    def run(case):
        name, recipe, args, _ = case
        case_dir = root / name
        for rel in tracked:
            if rel.startswith(("egs/common/", f"egs/{recipe}/")):
                (case_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, case_dir / rel)
        cwd = case_dir / "cwd"  # where run.sh is called from
        cwd.mkdir()
        (cwd / "a_file").write_text("not a folder\n")
        paths = {"NOPE": str(case_dir / "nope"), "FILE": str(cwd / "a_file")}
        args = [paths.get(a, a) for a in args]
        before = _tree(case_dir)
        r = subprocess.run(["bash", str(case_dir / "egs" / recipe / "run.sh"), *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        return name, {"r": r, "paths": paths, "before": before, "after": _tree(case_dir)}

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("name,recipe,args,expected", CASES, ids=[c[0] for c in CASES])
def test_run_sh_bad_arguments_one_line_exit_2_writes_nothing(results, name, recipe, args, expected):
    res = results[name]
    r = res["r"]
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err[-2000:])
    assert err and "\n" not in err and "Traceback" not in err, err
    assert r.stdout == "", r.stdout
    print(f"{name}: {err}")
    for text in expected:
        for key, value in res["paths"].items():
            text = text.replace(key, value)
        assert text in err, (text, err)
    assert res["after"] == res["before"], "written: " + ", ".join(sorted(set(res["after"]) ^ set(res["before"])))
    assert not any(part in ("data", "dump", "exp") for p in res["after"] for part in Path(p).parts)
