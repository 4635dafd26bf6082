"""Tests of pipeline.testing.fileserver against a real server on 127.0.0.1 (clients: urllib, http.client)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.testing.fileserver import FileServer, parse_range  # noqa: E402

FASTQ = "/vol1/fastq/DRR900/DRR900001/DRR900001_1.fastq.gz"
BIG = "/big.bin"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    fq = root / FASTQ.lstrip("/")
    fq.parent.mkdir(parents=True)
    rng = random.Random(0)
    reads = "".join(f"@r{i}\n{''.join(rng.choice('ACGT') for _ in range(50))}\n+\n{'I' * 50}\n" for i in range(2000))
    fq.write_bytes(gzip.compress(reads.encode(), mtime=0))
    (root / BIG.lstrip("/")).write_bytes(os.urandom(300_000))
    (root / "small.txt").write_bytes(b"0123456789")
    (root / "empty").write_bytes(b"")
    (tmp_path / "secret.txt").write_bytes(b"top secret")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    return root


@pytest.fixture
def server(tree):
    with FileServer(tree) as srv:
        yield srv
    assert srv.errors == []


def data_of(tree: Path, path: str) -> bytes:
    return (tree / path.lstrip("/")).read_bytes()


def get(server, path, headers=None, method="GET"):
    """(status, headers, body) over a fresh http.client connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


# -- plain serving ---------------------------------------------------------------------------


def test_full_get_exact_bytes_no_decoding(server, tree):
    with urllib.request.urlopen(server.url + FASTQ, timeout=10) as resp:
        body = resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Length"] == str(len(body))
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers.get("Content-Encoding") is None
    assert body == data_of(tree, FASTQ)
    assert body[:2] == b"\x1f\x8b" and len(body) > 10_000  # still gzip: served as stored


def test_head(server, tree):
    status, headers, body = get(server, BIG, method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == "300000"
    assert headers["Accept-Ranges"] == "bytes"


def test_keep_alive_two_requests_one_connection(server, tree):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", "/small.txt")
            resp = conn.getresponse()
            assert resp.read() == b"0123456789"
    finally:
        conn.close()


def test_range_open_ended_and_bounded(server, tree):
    data = data_of(tree, BIG)
    status, headers, body = get(server, BIG, {"Range": "bytes=1000-"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert body == data[1000:]
    status, headers, body = get(server, BIG, {"Range": "bytes=10-19"})
    assert status == 206 and headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert headers["Content-Length"] == "10" and body == data[10:20]
    status, headers, body = get(server, BIG, {"Range": "bytes=-5"})
    assert status == 206 and body == data[-5:]
    status, headers, body = get(server, "/small.txt", {"Range": "bytes=5-999"})
    assert status == 206 and headers["Content-Range"] == "bytes 5-9/10" and body == b"56789"


def test_range_unsatisfiable_and_multi(server, tree):
    status, headers, _ = get(server, "/small.txt", {"Range": "bytes=10-"})
    assert status == 416 and headers["Content-Range"] == "bytes */10"
    status, headers, _ = get(server, "/empty", {"Range": "bytes=0-"})
    assert status == 416 and headers["Content-Range"] == "bytes */0"
    status, _, body = get(server, "/small.txt", {"Range": "bytes=0-1,4-5"})
    assert status == 200 and body == b"0123456789"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(
            urllib.request.Request(server.url + "/small.txt", headers={"Range": "bytes=50-60"}), timeout=10
        )
    err.value.close()
    assert err.value.code == 416


def test_parse_range():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-", 10) == (2, 9)
    assert parse_range("bytes=2-4", 10) == (2, 4)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=4-2", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=10-", 10) == (-1, -1)


@pytest.mark.parametrize(
    "path",
    ["/../secret.txt", "/%2e%2e/secret.txt", "/a/../../secret.txt", "//etc/passwd", "/escape.txt", "/vol1/./fastq"],
)
def test_traversal_rejected(server, path):
    status, _, body = get(server, path)
    assert status in (403, 404)
    assert b"secret" not in body


def test_missing_and_directory_404(server):
    assert get(server, "/nope.bin")[0] == 404
    assert get(server, "/vol1/fastq")[0] == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/nope.bin", timeout=10)
    err.value.close()
    assert err.value.code == 404


def test_loopback_only(tree):
    for host in ("0.0.0.0", "8.8.8.8", "example.com", ""):
        with pytest.raises(ValueError):
            FileServer(tree, host=host)
    with FileServer(tree, host="localhost") as srv:
        assert srv.url.startswith("http://127.0.0.1:")


def test_request_log(server):
    get(server, "/small.txt", {"Range": "bytes=2-3"})
    get(server, "/nope.bin", method="HEAD")
    assert server.wait_idle()
    log = server.requests
    assert log[0] == {
        "method": "GET",
        "path": "/small.txt",
        "range": "bytes=2-3",
        "status": 206,
        "bytes_sent": 2,
        "fault": False,
    }
    assert log[1]["method"] == "HEAD" and log[1]["status"] == 404 and log[1]["bytes_sent"] == 0
    server.clear_requests()
    assert server.requests == []


# -- faults ----------------------------------------------------------------------------------


def test_drop_after(server, tree):
    server.set_fault(FASTQ, drop_after=1000)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", FASTQ)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(data_of(tree, FASTQ)))
    with pytest.raises(http.client.IncompleteRead) as err:
        resp.read()
    assert len(err.value.partial) == 1000
    conn.close()
    with urllib.request.urlopen(server.url + FASTQ, timeout=10) as resp:
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            resp.read()


def test_drop_after_with_reset(server):
    server.set_fault(BIG, drop_after=0, reset=True)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        with urllib.request.urlopen(server.url + BIG, timeout=10) as resp:
            resp.read()


def test_status_503_retry_after_then_success(server, tree):
    server.set_fault(FASTQ, status=503, retry_after=7, times=1)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + FASTQ, timeout=10)
    err.value.close()
    assert err.value.code == 503
    assert err.value.headers["Retry-After"] == "7"
    with urllib.request.urlopen(server.url + FASTQ, timeout=10) as resp:
        assert resp.read() == data_of(tree, FASTQ)
    assert server.wait_idle()
    assert [r["status"] for r in server.requests] == [503, 200]
    assert [r["fault"] for r in server.requests] == [True, False]


def test_status_429_and_404_and_clear(server):
    server.set_fault(server.url + "/small.txt", status=429, retry_after=1)  # full URL accepted
    assert get(server, "/small.txt")[0] == 429
    assert get(server, "/small.txt")[0] == 429  # no times: every request
    server.set_fault("/small.txt", status=404)
    assert get(server, "/small.txt")[0] == 404
    server.clear_faults()
    assert get(server, "/small.txt")[2] == b"0123456789"


def test_fault_methods_filter(server):
    server.set_fault("/small.txt", status=500, methods=["GET"], times=1)
    assert get(server, "/small.txt", method="HEAD")[0] == 200  # does not match, not used up
    assert get(server, "/small.txt")[0] == 500
    assert get(server, "/small.txt")[0] == 200


def test_unknown_fault_keyword(server):
    with pytest.raises(TypeError):
        server.set_fault("/small.txt", explode=True)


def test_corrupt_same_length_other_md5(server, tree):
    data = data_of(tree, FASTQ)
    server.set_fault(FASTQ, corrupt=True)
    _, _, body = get(server, FASTQ)
    assert len(body) == len(data) and md5(body) != md5(data)
    # a range that resumes past the flipped byte is consistent with the corrupt whole
    _, _, tail = get(server, FASTQ, {"Range": "bytes=100-"})
    assert tail == body[100:]


def test_stall_delays_then_completes(server, tree):
    server.set_fault(BIG, stall_after=5000, stall_seconds=0.5)
    t0 = time.monotonic()
    with urllib.request.urlopen(server.url + BIG, timeout=10) as resp:
        body = resp.read()
    assert time.monotonic() - t0 >= 0.45
    assert body == data_of(tree, BIG)


def test_stop_returns_fast_during_stall(tree):
    srv = FileServer(tree).start()
    srv.set_fault(BIG, stall_after=1000, stall_seconds=30)
    got = {}

    def client():
        try:
            with urllib.request.urlopen(srv.url + BIG, timeout=20) as resp:
                got["data"] = resp.read()
        except Exception as e:  # noqa: BLE001 - any short read is fine
            got["error"] = e

    t = threading.Thread(target=client, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not any(r["bytes_sent"] >= 1000 for r in srv.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 5  # the stall is 30 s
    t.join(5)
    assert not t.is_alive()
    assert "error" in got  # the client saw a short read, not the whole file


def test_ignore_range(server, tree):
    server.set_fault(BIG, ignore_range=True)
    status, headers, body = get(server, BIG, {"Range": "bytes=100-"})
    assert status == 200 and "Content-Range" not in headers
    assert body == data_of(tree, BIG)


def test_body_fault(server):
    xml = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>'
    server.set_fault("/sra/DRR900001.sra", body=xml)  # no such file
    status, headers, body = get(server, "/sra/DRR900001.sra")
    assert status == 200 and body == xml and headers["Content-Length"] == str(len(xml))
    server.set_fault("/small.txt", body=b"denied", status=403, content_type="text/plain")
    status, headers, body = get(server, "/small.txt")
    assert status == 403 and body == b"denied" and headers["Content-Type"] == "text/plain"


def test_bad_content_range(server, tree):
    data = data_of(tree, BIG)
    server.set_fault(BIG, bad_content_range=True)
    status, headers, body = get(server, BIG, {"Range": "bytes=1000-"})
    assert status == 206
    start = int(headers["Content-Range"].split()[1].split("-")[0])
    assert start != 1000
    assert body == data[start:]


def test_delay_seconds_and_extra_headers(server):
    server.set_fault("/small.txt", delay_seconds=0.3, status=302, headers={"Location": "/vol1/fastq/x"}, times=1)
    t0 = time.monotonic()
    status, headers, _ = get(server, "/small.txt")
    assert time.monotonic() - t0 >= 0.25
    assert status == 302 and headers["Location"] == "/vol1/fastq/x"


# -- throttling ------------------------------------------------------------------------------


def test_throttle_at_construction(tree):
    (tree / "200k.bin").write_bytes(os.urandom(200_000))
    with FileServer(tree, throttle_bps=100_000) as srv:
        t0 = time.monotonic()
        with urllib.request.urlopen(srv.url + "/200k.bin", timeout=20) as resp:
            assert len(resp.read()) == 200_000
        assert time.monotonic() - t0 >= 1.5


def test_throttle_changed_at_runtime(server):
    assert server.throttle_bps is None
    server.throttle_bps = 1_000_000
    t0 = time.monotonic()
    assert len(get(server, BIG)[2]) == 300_000
    assert time.monotonic() - t0 >= 0.2


# -- command line ----------------------------------------------------------------------------


def test_cli_prints_url_and_serves(tree):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.testing.fileserver", str(tree), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline().decode()
        url = line.split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/small.txt", timeout=10) as resp:
            assert resp.read() == b"0123456789"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err == b""  # quiet by default
