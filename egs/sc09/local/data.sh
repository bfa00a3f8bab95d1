#!/usr/bin/env bash
# SC09 data: download and unpack Speech Commands v0.02 (or take an unpacked copy), then write
# train/valid/test manifests of the ten digit words (audiodiff.datasets.sc09).
# Usage: local/data.sh --out DIR --download-dir DIR [--data-dir UNPACKED] [--per-label N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common/download.sh"  # fetch, unpack
url=http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz
sha256=af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58  # torchaudio's SPEECHCOMMANDS
out= download_dir= data_dir= per_label=0
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "local/data.sh: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --out) out=$2 ;; --download-dir) download_dir=$2 ;; --data-dir) data_dir=$2 ;; --per-label) per_label=$2 ;;
    *) echo "local/data.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done

if [ -z "$data_dir" ]; then
  data_dir=$download_dir/speech_commands_v0.02
  if [ ! -f "$data_dir/.unpacked" ]; then
    archive=$download_dir/speech_commands_v0.02.tar.gz
    fetch "$url" "$archive" "$sha256"
    unpack "$archive" "$data_dir"  # the archive has no top folder
  fi
fi
python -m audiodiff.datasets.sc09 --data-dir "$data_dir" --out "$out" --per-label "$per_label"
