#!/usr/bin/env bash
# Stage 0 of egs/drums: onset-aligned 1 s one-shots from Hydrogen drum kits.
# Usage: local/data.sh OUT_DIR KITS_DIR
# The kits are Debian's: apt-get install hydrogen-drumkits hydrogen-drumkits-effects
# (files under /usr/share/hydrogen/data/drumkits/<Kit>/). When KITS_DIR has none the builder
# prints that command in one line and exits 2.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: local/data.sh OUT_DIR KITS_DIR" >&2; exit 2; }
python -m audiodiff.datasets.drums --out "$1" --kits-dir "$2"
