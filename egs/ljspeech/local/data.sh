#!/usr/bin/env bash
# LJSpeech data: download and unpack LJSpeech-1.1 (or take an unpacked copy), then write
# train/valid/test manifests with the fixed held-out split (audiodiff.datasets.ljspeech).
# Usage: local/data.sh --out DIR --download-dir DIR [--data-dir LJSpeech-1.1] [--num-valid N]
#                      [--num-test N] [--seed N] [--max-train N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common/download.sh"  # fetch, unpack
url=https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2
sha256=be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5  # torchaudio's LJSPEECH
out= download_dir= data_dir= args=()
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "local/data.sh: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --out) out=$2 ;; --download-dir) download_dir=$2 ;; --data-dir) data_dir=$2 ;;
    --num-valid|--num-test|--seed|--max-train) args+=("$1" "$2") ;;
    *) echo "local/data.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done

if [ -z "$data_dir" ]; then
  data_dir=$download_dir/LJSpeech-1.1
  if [ ! -f "$data_dir/.unpacked" ]; then
    archive=$download_dir/LJSpeech-1.1.tar.bz2
    fetch "$url" "$archive" "$sha256"
    unpack "$archive" "$data_dir" LJSpeech-1.1
  fi
fi
python -m audiodiff.datasets.ljspeech --data-dir "$data_dir" --out "$out" "${args[@]}"
