#!/usr/bin/env bash
# Folder data: list the audio files under --audio-dir and pick training settings from them
# (median duration, native sample rates) into OUT/overrides.yaml (audiodiff.datasets.folder).
# Usage: local/data.sh --audio-dir DIR --out DIR --config RESOLVED_EXPERIMENT.yaml
set -euo pipefail
audio_dir= out= config=
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "local/data.sh: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --audio-dir) audio_dir=$2 ;; --out) out=$2 ;; --config) config=$2 ;;
    *) echo "local/data.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done
python -m audiodiff.datasets.folder --audio-dir "$audio_dir" --out "$out" --config "$config"
