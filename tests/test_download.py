"""egs/common/download.sh (fetch, unpack), the resumable, sha256-checked downloads of the sc09,
ljspeech and nsynth recipes, run as the recipes run it: local/data.sh does `set -euo pipefail`,
sources the file and calls `fetch URL FILE SHA256` then `unpack FILE DEST [TOP]`.

The URLs point at an HTTP server on 127.0.0.1 (a free port, in a thread of this test, with the
Range support that http.server's own handlers lack) serving a small .tar.gz built in tmp_path;
nothing else is contacted (proxies are switched off for the child). Each case runs with curl,
and with wget alone on the PATH (fetch's fallback), where installed. stderr is a pipe, as in a
log, so a failure must be one line.
"""
import hashlib
import http.server
import io
import os
import random
import re
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD_SH = ROOT / "egs" / "common" / "download.sh"
FILES = {"corpus/a.txt": b"first file\n", "corpus/sub/b.bin": random.Random(0).randbytes(20000)}  # incompressible
# What wget-only needs besides wget (fetch, unpack and their messages); bash is run by full path.
TOOLS = ["mkdir", "dirname", "mv", "rm", "touch", "sha256sum", "tar", "gzip", "sed", "tail", "cat"]


class Server:
    """A one-folder HTTP server: GET/HEAD of /NAME with a single `bytes=START-[END]` Range;
    `cut` paths send only half of the body on their first request, then drop the connection."""

    def __init__(self):
        self.files, self.cut, self.log = {}, set(), []  # log: (path, Range header, bytes sent)
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self._answer(send_body=False)

            def do_GET(self):
                self._answer(send_body=True)

            def _answer(self, send_body):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    server._record(self.path, rng, 0)
                    return
                start, end, status = 0, len(data) - 1, 200
                if rng is not None:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                    assert m, f"unexpected Range header {rng!r}"
                    start = int(m.group(1))
                    end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        server._record(self.path, rng, 0)
                        return
                    status = 206
                body = data[start:end + 1]
                self.send_response(status)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if not send_body:
                    server._record(self.path, rng, 0)
                    return
                with server.lock:
                    first = not any(p == self.path for p, _, _ in server.log)
                if name in server.cut and first:
                    body = body[: len(body) // 2]  # then the connection closes: a cut transfer
                self.wfile.write(body)
                self.wfile.flush()
                server._record(self.path, rng, len(body))

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _record(self, path, rng, sent):
        with self.lock:
            self.log.append((path, rng, sent))

    def gets(self, name):
        with self.lock:
            return [(rng, sent) for p, rng, sent in self.log if p == "/" + name]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """(bytes, sha256) of a .tar.gz holding FILES under one top folder, corpus/."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    assert len(data) > 20000  # big enough that half of it is a real cut
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["curl", "wget"])
def env(request, tmp_path):
    """The child's environment: no proxy, no user curl/wget config, and for "wget" a PATH where
    curl is missing (so fetch takes its wget branch)."""
    tool = request.param
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1"
    env["CURL_HOME"] = str(tmp_path)  # no ~/.curlrc
    (tmp_path / "wgetrc").write_text("")
    env["WGETRC"] = str(tmp_path / "wgetrc")
    if tool == "wget":
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name in TOOLS + ["wget"]:
            found = shutil.which(name)
            assert found, f"{name} is not installed"
            (bin_dir / name).symlink_to(found)
        env["PATH"] = str(bin_dir)
    env["_tool"] = tool
    return env


def sh(env, body, *args):
    """Run BODY after `set -euo pipefail; source download.sh`, as local/data.sh (its $0) does."""
    script = f'set -euo pipefail\nsource "{DOWNLOAD_SH}"\n{body}'
    env = {k: v for k, v in env.items() if k != "_tool"}
    return subprocess.run([shutil.which("bash"), "-c", script, "local/data.sh", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def fetch(env, url, file, sha=""):
    return sh(env, 'fetch "$@"', url, file, sha)


def assert_fixture_unpacked(dest):
    got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == {**{k.removeprefix("corpus/"): v for k, v in FILES.items()}, ".unpacked": b""}


def one_line(stderr):
    err = stderr.strip()
    assert err and "\n" not in err and "\r" not in err, stderr
    return err


def test_fetch_and_unpack_a_fixture_archive(server, archive, env, tmp_path):
    data, sha = archive
    server.files["corpus.tar.gz"] = data
    file, dest = tmp_path / "download" / "corpus.tar.gz", tmp_path / "download" / "corpus"
    r = sh(env, 'fetch "$1" "$2" "$3"; unpack "$2" "$4" corpus', f"{server.url}/corpus.tar.gz", file, sha, dest)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # quiet in a log: no progress meter, no wget chatter
    assert hashlib.sha256(file.read_bytes()).hexdigest() == sha
    assert sorted(p.name for p in file.parent.iterdir()) == ["corpus", "corpus.tar.gz"]  # no .part/.tmp
    assert_fixture_unpacked(dest)
    assert server.gets("corpus.tar.gz") == [(None, len(data))]
    # FILE there: nothing to do, no request
    r = fetch(env, f"{server.url}/corpus.tar.gz", file, sha)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(server.gets("corpus.tar.gz")) == 1


def test_a_cut_transfer_resumes_with_a_range_request(server, archive, env, tmp_path):
    data, sha = archive
    server.files["corpus.tar.gz"] = data
    server.cut.add("corpus.tar.gz")
    file, dest = tmp_path / "download" / "corpus.tar.gz", tmp_path / "corpus"
    half = len(data) // 2
    url = f"{server.url}/corpus.tar.gz"
    r = fetch(env, url, file, sha)
    if env["_tool"] == "curl":  # curl gives up on a cut transfer: one line, the half kept as .part
        assert r.returncode == 1
        err = one_line(r.stderr)
        assert err.startswith("local/data.sh: cannot download " + url), err
        assert "--data-dir" in err and "re-run to resume" in err, err
        assert not file.exists()
        assert Path(f"{file}.part").stat().st_size == half
        r = fetch(env, url, file, sha)  # the re-run
    # (wget retries by itself, with a Range request, in the same run)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert server.gets("corpus.tar.gz") == [(None, half), (f"bytes={half}-", len(data) - half)]
    assert file.read_bytes() == data and not Path(f"{file}.part").exists()
    r = sh(env, 'unpack "$@" corpus', file, dest)
    assert r.returncode == 0, r.stderr
    assert_fixture_unpacked(dest)


def test_a_partial_file_left_behind_is_resumed(server, archive, env, tmp_path):
    data, sha = archive
    server.files["corpus.tar.gz"] = data
    file = tmp_path / "corpus.tar.gz"
    third = len(data) // 3
    Path(f"{file}.part").write_bytes(data[:third])  # an earlier run killed a third of the way
    r = fetch(env, f"{server.url}/corpus.tar.gz", file, sha)
    assert r.returncode == 0, r.stderr
    assert server.gets("corpus.tar.gz") == [(f"bytes={third}-", len(data) - third)]
    assert file.read_bytes() == data and not Path(f"{file}.part").exists()


def test_a_wrong_checksum_is_refused_in_one_line_and_no_file_is_left(server, archive, env, tmp_path):
    data, sha = archive
    server.files["corpus.tar.gz"] = data
    wrong = hashlib.sha256(b"another archive").hexdigest()
    file = tmp_path / "download" / "corpus.tar.gz"
    r = fetch(env, f"{server.url}/corpus.tar.gz", file, wrong)
    assert r.returncode != 0
    err = one_line(r.stderr)
    assert err.startswith("local/data.sh: "), err
    assert str(file) in err and wrong in err and "re-run" in err, err
    assert not file.exists() and not Path(f"{file}.part").exists()
    assert Path(f"{file}.bad").read_bytes() == data  # kept aside, under another name
    # the re-run downloads it afresh (no Range) and, with the right sha256, keeps it
    r = fetch(env, f"{server.url}/corpus.tar.gz", file, sha)
    assert r.returncode == 0, r.stderr
    assert file.read_bytes() == data
    assert [rng for rng, _ in server.gets("corpus.tar.gz")] == [None, None]


def test_a_missing_file_is_one_line_naming_the_url_and_data_dir(server, env, tmp_path):
    url = f"{server.url}/missing.tar.gz"
    file = tmp_path / "missing.tar.gz"
    r = fetch(env, url, file, "0" * 64)
    assert r.returncode == 1
    err = one_line(r.stderr)
    assert err.startswith(f"local/data.sh: cannot download {url} (") and "404" in err, err
    assert "pass --data-dir PATH" in err, err
    assert not file.exists()
