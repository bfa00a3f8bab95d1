#!/usr/bin/env bash
# LJSpeech data: download and unpack LJSpeech-1.1 (or take an unpacked copy), then write
# train/valid/test manifests with the fixed held-out split (audiodiff.datasets.ljspeech).
# Usage: local/data.sh --out DIR --download-dir DIR [--data-dir LJSpeech-1.1] [--num-valid N]
#                      [--num-test N] [--seed N] [--max-train N]
set -euo pipefail
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
  data_dir=$download_dir/LJSpeech-1.1
  if [ ! -f "$data_dir/.unpacked" ]; then
    archive=$download_dir/LJSpeech-1.1.tar.bz2
    fetch "$url" "$archive" "$sha256"
    echo "unpacking $archive -> $data_dir"
    rm -rf "$download_dir/unpack.tmp" && mkdir -p "$download_dir/unpack.tmp"
    tar -xjf "$archive" -C "$download_dir/unpack.tmp"  # holds LJSpeech-1.1/
    rm -rf "$data_dir" && mv "$download_dir/unpack.tmp/LJSpeech-1.1" "$data_dir" && rm -rf "$download_dir/unpack.tmp"
    touch "$data_dir/.unpacked"
  fi
fi
python -m audiodiff.datasets.ljspeech --data-dir "$data_dir" --out "$out" "${args[@]}"
