#!/usr/bin/env bash
# The README's test command (and CI's, through .ci/run): every step a fresh machine needs.
#  1. Debian's hydrogen-drumkits (real recorded drum hits for the drums recipe's test), when this
#     user can install it with apt; elsewhere that one test skips and says why.
#  2. A new virtual environment in .venv (git-ignored; --clear empties an old one), so the pinned
#     torch/torchaudio pair is installed, never a version the machine already had.
#  3. The package with its test extra, tinysoundfont without its PyAudio dependency (playback only,
#     it needs PortAudio's headers to build), then ruff, mypy (audiodiff/, pyproject.toml), the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s hydrogen-drumkits >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's hydrogen-drumkits (143 MB) for the real-drums test"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hydrogen-drumkits >/dev/null) \
            || echo "note: hydrogen-drumkits could not be installed; the real-drums test will skip"
    else
        echo "note: hydrogen-drumkits is not installed (apt-get install hydrogen-drumkits as root); the real-drums test will skip"
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
