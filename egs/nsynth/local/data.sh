#!/usr/bin/env bash
# NSynth data: download and unpack the json/wav archives of each split (or take a folder
# holding nsynth-{train,valid,test}/), then write manifests labelled by instrument family
# (audiodiff.datasets.nsynth). The train archive is about 22 GB.
# Usage: local/data.sh --out DIR --download-dir DIR [--data-dir FOLDER] [--pitch-min N]
#                      [--pitch-max N] [--sources LIST] [--per-label N]
set -euo pipefail
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

# fetch URL FILE: resumable download (curl -C - / wget -c). NSynth publishes no checksums;
# `tar` below fails on a damaged archive.
fetch() {
  local url=$1 file=$2
  [ -f "$file" ] && return 0
  mkdir -p "$(dirname "$file")"
  echo "downloading $url -> $file (re-run to resume)"
  if command -v curl >/dev/null; then
    curl -fL --connect-timeout 30 --retry 3 -C - -o "$file.part" "$url" || fail "$url"
  elif command -v wget >/dev/null; then
    wget -c --timeout 30 -O "$file.part" "$url" || fail "$url"
  else
    echo "local/data.sh: neither curl nor wget is installed; install one, or pass --data-dir PATH to an unpacked copy" >&2
    exit 1
  fi
  mv "$file.part" "$file"
}
fail() {
  echo "local/data.sh: cannot download $1; pass --data-dir PATH to an unpacked copy (or re-run to resume)" >&2
  exit 1
}

if [ -z "$data_dir" ]; then
  data_dir=$download_dir/nsynth
  for split in valid test train; do  # smallest first: a broken network shows up early
    [ -f "$data_dir/nsynth-$split/.unpacked" ] && continue
    archive=$download_dir/nsynth-$split.jsonwav.tar.gz
    fetch "$base_url/nsynth-$split.jsonwav.tar.gz" "$archive"
    echo "unpacking $archive -> $data_dir/nsynth-$split"
    rm -rf "$data_dir/unpack.tmp" && mkdir -p "$data_dir/unpack.tmp"
    tar -xzf "$archive" -C "$data_dir/unpack.tmp"  # holds nsynth-<split>/
    rm -rf "$data_dir/nsynth-$split" && mv "$data_dir/unpack.tmp/nsynth-$split" "$data_dir/nsynth-$split"
    rm -rf "$data_dir/unpack.tmp" && touch "$data_dir/nsynth-$split/.unpacked"
  done
fi
python -m audiodiff.datasets.nsynth --data-dir "$data_dir" --out "$out" "${args[@]}"
