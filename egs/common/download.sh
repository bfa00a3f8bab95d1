# Download and unpack for egs/*/local/data.sh (sourced). Gives:
#   fetch URL FILE [SHA256]   resumable download (curl -C - / wget -c) into FILE.part, then
#                             checked against SHA256 when one is given, renamed to FILE.
#                             Nothing to do when FILE is there. Offline: a one-line error
#                             naming URL and --data-dir, exit 1; a re-run resumes.
#   unpack ARCHIVE DEST [TOP] extract ARCHIVE (tar: gzip/bzip2/xz) to DEST through DEST.tmp;
#                             TOP: the folder inside the archive that becomes DEST (none: the
#                             archive has no top folder). Marks DEST/.unpacked when complete.
# Messages start with the calling script's name, as run.sh invokes it (local/data.sh).

fetch() {
  local url=$1 file=$2 sha=${3:-}
  [ -f "$file" ] && return 0
  mkdir -p "$(dirname "$file")"
  echo "downloading $url -> $file (re-run to resume)"
  if command -v curl >/dev/null; then
    curl -fL --connect-timeout 30 --retry 3 -C - -o "$file.part" "$url" || _cannot_download "$url"
  elif command -v wget >/dev/null; then
    wget -c --timeout 30 -O "$file.part" "$url" || _cannot_download "$url"
  else
    echo "$0: neither curl nor wget is installed; install one, or pass --data-dir PATH to an unpacked copy" >&2
    exit 1
  fi
  if [ -n "$sha" ] && ! echo "$sha  $file.part" | sha256sum -c --status; then
    mv "$file.part" "$file.bad"
    echo "$0: $url does not match its sha256 $sha (kept as $file.bad); download it again" >&2
    exit 1
  fi
  mv "$file.part" "$file"
}

_cannot_download() {
  echo "$0: cannot download $1; pass --data-dir PATH to an unpacked copy (or re-run to resume)" >&2
  exit 1
}

unpack() {
  local archive=$1 dest=$2 top=${3:-}
  echo "unpacking $archive -> $dest"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  tar -xf "$archive" -C "$dest.tmp"  # GNU tar and bsdtar both detect the compression
  rm -rf "$dest"
  if [ -n "$top" ]; then
    mv "$dest.tmp/$top" "$dest" && rm -rf "$dest.tmp"
  else
    mv "$dest.tmp" "$dest"
  fi
  touch "$dest/.unpacked"
}
