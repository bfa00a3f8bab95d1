# Download and unpack for egs/*/local/data.sh (sourced). Gives:
#   fetch URL FILE [SHA256]   resumable download (curl -C - / wget -c) into FILE.part, then
#                             checked against SHA256 when one is given, renamed to FILE.
#                             Nothing to do when FILE is there. Offline: a one-line error
#                             naming URL and --data-dir, exit 1; a re-run resumes. A wrong
#                             sha256: one line, exit 1, the download kept as FILE.bad. The
#                             tool's progress meter only on a terminal (a log gets one line).
#   unpack ARCHIVE DEST [TOP] extract ARCHIVE (tar: gzip/bzip2/xz) to DEST through DEST.tmp;
#                             TOP: the folder inside the archive that becomes DEST (none: the
#                             archive has no top folder). Marks DEST/.unpacked when complete.
# Messages start with the calling script's name, as run.sh invokes it (local/data.sh).

fetch() {
  local url=$1 file=$2 sha=${3:-} err
  [ -f "$file" ] && return 0
  mkdir -p "$(dirname "$file")"
  echo "downloading $url -> $file (re-run to resume)"
  if [ -t 2 ]; then  # a terminal: the tool's progress meter (and its own reason on a failure)
    _download "$url" "$file.part" || _cannot_download "$url"
  elif ! err=$(_download "$url" "$file.part" quiet 2>&1 >/dev/null); then  # a log: one line
    _cannot_download "$url" "$err"
  fi
  if [ -n "$sha" ] && ! echo "$sha  $file.part" | sha256sum -c --status; then
    mv "$file.part" "$file.bad"
    echo "$0: $file from $url does not match its sha256 $sha (kept as $file.bad); re-run to download it again" >&2
    exit 1
  fi
  mv "$file.part" "$file"
}

# _download URL PART [quiet]: fetch or resume URL into PART; quiet: no progress, errors only.
_download() {
  if command -v curl >/dev/null; then
    curl -fL --connect-timeout 30 --retry 3 -C - ${3:+-sS} -o "$2" "$1"
  elif command -v wget >/dev/null; then
    wget -c --timeout 30 ${3:+-nv} -O "$2" "$1"
  else
    echo "neither curl nor wget is installed; install one" >&2
    return 1
  fi
}

# _cannot_download URL [REASON]: REASON's last line (curl's or wget's) goes into the one line.
_cannot_download() {
  local reason=${2:-}
  reason=$(printf '%s\n' "$reason" | sed '/^[[:space:]]*$/d' | tail -n 1)
  echo "$0: cannot download $1${reason:+ ($reason)}; pass --data-dir PATH to an unpacked copy (or re-run to resume)" >&2
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
