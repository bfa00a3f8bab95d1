#!/usr/bin/env bash
# SC09 data: download and unpack Speech Commands v0.02 (or take an unpacked copy), then write
# train/valid/test manifests of the ten digit words (audiodiff.datasets.sc09).
# Usage: local/data.sh --out DIR --download-dir DIR [--data-dir UNPACKED] [--per-label N]
set -euo pipefail
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

# fetch URL FILE SHA256: resumable download (curl -C - / wget -c), checked against SHA256.
fetch() {
  local url=$1 file=$2 sha=$3
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
  if ! echo "$sha  $file.part" | sha256sum -c --status; then
    mv "$file.part" "$file.bad"
    echo "local/data.sh: $url does not match its sha256 $sha (kept as $file.bad); download it again" >&2
    exit 1
  fi
  mv "$file.part" "$file"
}
fail() {
  echo "local/data.sh: cannot download $1; pass --data-dir PATH to an unpacked copy (or re-run to resume)" >&2
  exit 1
}

if [ -z "$data_dir" ]; then
  data_dir=$download_dir/speech_commands_v0.02
  if [ ! -f "$data_dir/.unpacked" ]; then
    archive=$download_dir/speech_commands_v0.02.tar.gz
    fetch "$url" "$archive" "$sha256"
    echo "unpacking $archive -> $data_dir"
    rm -rf "$data_dir.tmp" && mkdir -p "$data_dir.tmp"
    tar -xzf "$archive" -C "$data_dir.tmp"  # the archive has no top folder
    rm -rf "$data_dir" && mv "$data_dir.tmp" "$data_dir" && touch "$data_dir/.unpacked"
  fi
fi
python -m audiodiff.datasets.sc09 --data-dir "$data_dir" --out "$out" --per-label "$per_label"
