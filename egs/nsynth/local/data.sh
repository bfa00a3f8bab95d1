#!/usr/bin/env bash
# NSynth data: download and unpack the json/wav archives of each split (or take a folder
# holding nsynth-{train,valid,test}/), then write manifests labelled by instrument family
# (audiodiff.datasets.nsynth). The train archive is about 22 GB.
# Usage: local/data.sh --out DIR --download-dir DIR [--data-dir FOLDER] [--pitch-min N]
#                      [--pitch-max N] [--sources LIST] [--per-label N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common/download.sh"  # fetch, unpack
base_url=http://download.magenta.tensorflow.org/datasets/nsynth
out= download_dir= data_dir= args=()
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "local/data.sh: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --out) out=$2 ;; --download-dir) download_dir=$2 ;; --data-dir) data_dir=$2 ;;
    --pitch-min|--pitch-max|--sources|--per-label) args+=("$1" "$2") ;;
    *) echo "local/data.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done

if [ -z "$data_dir" ]; then
  data_dir=$download_dir/nsynth
  for split in valid test train; do  # smallest first: a broken network shows up early
    [ -f "$data_dir/nsynth-$split/.unpacked" ] && continue
    archive=$download_dir/nsynth-$split.jsonwav.tar.gz
    # No sha256: NSynth publishes no checksums; `tar` in unpack fails on a damaged archive.
    fetch "$base_url/nsynth-$split.jsonwav.tar.gz" "$archive"
    unpack "$archive" "$data_dir/nsynth-$split" "nsynth-$split"
  done
fi
python -m audiodiff.datasets.nsynth --data-dir "$data_dir" --out "$out" "${args[@]}"
