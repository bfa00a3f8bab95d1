#!/usr/bin/env bash
# The README's test command (and CI's, through .ci/run): every step a fresh machine needs.
#  1. Debian's hydrogen-drumkits (real recorded drum hits for the drums recipe's test) and chromium +
#     chromium-driver (the browser tests), when this user can install them with apt; elsewhere those
#     tests skip and say why.
#  2. A new virtual environment in .venv (git-ignored; --clear empties an old one), so the pinned
#     torch/torchaudio pair is installed, never a version the machine already had.
#  3. The package with its test extra, tinysoundfont without its PyAudio dependency (playback only,
#     it needs PortAudio's headers to build), then ruff, mypy (audiodiff/, pyproject.toml), the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the tests take from Debian: real recorded drum hits, and a browser for the page tests.
missing=""
for pkg in hydrogen-drumkits chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing from Debian:$missing (the real-drums test and the browser tests need them)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
            || echo "note:$missing could not be installed; the tests that need them will skip and say why"
    else
        echo "note:$missing not installed (apt-get install$missing as root); the tests that need them will skip"
    fi
fi
echo "creating a new virtual environment in $PWD/.venv ($(python3 --version))"
python3 -m venv --clear .venv
. .venv/bin/activate
python -m pip install -e ".[test]"
python -m pip install --no-deps "tinysoundfont>=0.3.5,<0.4"
python -c "import audiodiff.install as i; print('installed:', i.installed_versions(), 'pinned:', i.PINNED)"
ruff check .
mypy
python -m pytest -q
