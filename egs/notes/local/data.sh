#!/usr/bin/env bash
# Stage 0 of egs/notes: render the notes. Usage: local/data.sh OUT_DIR PER_CLASS SEED
# Needs pretty_midi (its wheel ships the TimGM6mb SoundFont) and tinysoundfont, installed
# without its PyAudio dependency (playback only; it builds only with PortAudio's headers):
#   pip install -e ".[notes]" && pip install --no-deps tinysoundfont
# When either is missing the builder says so in one line and exits 2.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: local/data.sh OUT_DIR PER_CLASS SEED" >&2; exit 2; }
python -m audiodiff.datasets.notes --out "$1" --per-class "$2" --seed "$3"
