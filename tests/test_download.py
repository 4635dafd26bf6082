"""The HTTP client against a hostile archive on 127.0.0.1: every fault ends in the right bytes or
a named failure, never a wrong file in place."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from pipeline.fetch.retry import RetryPolicy
from pipeline.fetch.transfer import DownloadError, apply_mirrors, fetch
from pipeline.model import RemoteFile
from pipeline.runlog import RunLog
from pipeline.testing.fileserver import FileServer

SIZE = 300_000
FAST = RetryPolicy(attempts=5, backoff_base=0.01, backoff_max=0.05, stall_seconds=1.0, max_retry_after=5)


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    data = os.urandom(SIZE)
    (root / "R_1.fastq.gz").write_bytes(data)
    with FileServer(root) as server:
        yield server, data, hashlib.md5(data).hexdigest()


def _rf(server, md5, size=SIZE, name="R_1.fastq.gz"):
    return RemoteFile(url=f"{server.url}/{name}", name=name, md5=md5, bytes=size)


def _gets(server):
    server.wait_idle()
    return [r for r in server.requests if r["method"] == "GET"]


def _ok(dest, data):
    assert dest.read_bytes() == data
    assert not list(dest.parent.glob(".*.part"))


def test_clean_download_verified(archive, tmp_path):
    server, data, md5 = archive
    dest = tmp_path / "out" / "R_1.fastq.gz"
    info = fetch(_rf(server, md5), dest, policy=FAST)
    _ok(dest, data)
    assert info["attempts"] == 1


def test_dropped_connection_resumes_with_range(archive, tmp_path):
    server, data, md5 = archive
    server.set_fault("/R_1.fastq.gz", drop_after=100_000, times=2)
    dest = tmp_path / "R_1.fastq.gz"
    log = tmp_path / "run.log"
    info = fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log))
    _ok(dest, data)
    gets = _gets(server)
    assert [g["range"] for g in gets] == [None, "bytes=100000-", "bytes=200000-"]
    assert sum(g["bytes_sent"] for g in gets) == SIZE  # nothing fetched twice
    assert info["attempts"] == 3
    assert "dropped" in log.read_text() or "short read" in log.read_text()


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured(archive, tmp_path, status):
    server, data, md5 = archive
    server.set_fault("/R_1.fastq.gz", status=status, retry_after=1, times=1)
    dest = tmp_path / "R_1.fastq.gz"
    log = tmp_path / "run.log"
    t0 = time.monotonic()
    fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log))
    assert time.monotonic() - t0 >= 0.9  # waited as told, not the tiny back-off
    _ok(dest, data)
    assert f"HTTP {status}" in log.read_text() and "retrying in 1.0 s" in log.read_text()


def test_persistent_503_is_a_named_failure(archive, tmp_path):
    server, _, md5 = archive
    server.set_fault("/R_1.fastq.gz", status=503)
    dest = tmp_path / "R_1.fastq.gz"
    with pytest.raises(
        DownloadError, match=r"R_1.fastq.gz: failed after 5 attempts over [0-9.]+ s of waiting; last: HTTP 503"
    ):
        fetch(_rf(server, md5), dest, policy=FAST)
    assert not dest.exists() and len(_gets(server)) == 5


def test_corrupt_body_never_lands(archive, tmp_path):
    server, _, md5 = archive
    server.set_fault("/R_1.fastq.gz", corrupt=True)
    dest = tmp_path / "R_1.fastq.gz"
    with pytest.raises(DownloadError, match="md5 mismatch"):
        fetch(_rf(server, md5), dest, policy=FAST)
    assert not dest.exists() and not list(tmp_path.glob(".*.part"))
    assert len(_gets(server)) == 2  # one clean retry from scratch, then a named failure


def test_corrupt_once_then_good(archive, tmp_path):
    server, data, md5 = archive
    server.set_fault("/R_1.fastq.gz", corrupt=True, times=1)
    dest = tmp_path / "R_1.fastq.gz"
    fetch(_rf(server, md5), dest, policy=FAST)
    _ok(dest, data)


def test_wrong_size_without_md5_is_caught(archive, tmp_path):
    server, _, _ = archive
    dest = tmp_path / "R_1.fastq.gz"
    # Listed larger than served: the transfer comes up short and is retried until it gives up.
    with pytest.raises(DownloadError, match="short read"):
        fetch(_rf(server, None, size=SIZE + 10), dest, policy=FAST)
    assert not dest.exists()
    # Listed smaller than served: the transfer does not come up short, so only the size check in
    # download._verify can catch it (without an md5 nothing else would).
    with pytest.raises(DownloadError, match=rf"size mismatch: expected {SIZE - 10} bytes, got \d+"):
        fetch(_rf(server, None, size=SIZE - 10), dest, policy=FAST)
    assert not dest.exists() and not list(tmp_path.glob(".*.part"))


def test_stall_aborts_and_resumes(archive, tmp_path):
    server, data, md5 = archive
    server.set_fault("/R_1.fastq.gz", stall_after=50_000, stall_seconds=30, times=1)
    dest = tmp_path / "R_1.fastq.gz"
    log = tmp_path / "run.log"
    t0 = time.monotonic()
    fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log))
    assert time.monotonic() - t0 < 15
    _ok(dest, data)
    assert "stalled" in log.read_text()
    assert _gets(server)[1]["range"] == "bytes=50000-"


def test_slow_but_healthy_download_is_not_cut(archive, tmp_path):
    """No wall-clock cap: a transfer slower than stall_seconds in total but never silent completes."""
    server, data, md5 = archive
    server.throttle_bps = 200_000  # 1.5 s in all, with stall_seconds = 1
    dest = tmp_path / "R_1.fastq.gz"
    info = fetch(_rf(server, md5), dest, policy=FAST)
    _ok(dest, data)
    assert info["attempts"] == 1


def test_server_ignoring_range_starts_over(archive, tmp_path):
    server, data, md5 = archive
    server.set_fault("/R_1.fastq.gz", drop_after=120_000, times=1)
    dest = tmp_path / "R_1.fastq.gz"
    with pytest.raises(DownloadError):
        fetch(_rf(server, md5), dest, policy=RetryPolicy(attempts=1))
    part = tmp_path / ".R_1.fastq.gz.part"
    assert part.stat().st_size == 120_000
    server.clear_faults()
    server.set_fault("/R_1.fastq.gz", ignore_range=True)
    fetch(_rf(server, md5), dest, policy=FAST)
    _ok(dest, data)
    last = _gets(server)[-1]
    assert last["range"] == "bytes=120000-" and last["status"] == 200 and last["bytes_sent"] == SIZE


def test_mismatched_content_range_is_rejected(archive, tmp_path):
    """A 206 whose Content-Range does not start where we asked is never appended."""
    server, data, md5 = archive
    server.set_fault("/R_1.fastq.gz", drop_after=100_000, times=1)
    dest = tmp_path / "R_1.fastq.gz"
    with pytest.raises(DownloadError):
        fetch(_rf(server, md5), dest, policy=RetryPolicy(attempts=1))
    server.clear_faults()
    server.set_fault("/R_1.fastq.gz", bad_content_range=True, times=1)
    log = tmp_path / "run.log"
    fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log))
    _ok(dest, data)
    gets = _gets(server)
    assert gets[1]["range"] == "bytes=100000-" and gets[1]["status"] == 206
    assert gets[2]["range"] is None  # started over from byte 0
    assert "Content-Range" in log.read_text()


def test_404_is_final_not_retried(archive, tmp_path):
    server, _, md5 = archive
    dest = tmp_path / "missing.fastq.gz"
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(_rf(server, md5, name="missing.fastq.gz"), dest, policy=FAST)
    assert len(_gets(server)) == 1


def test_no_transparent_gzip_decoding(tmp_path):
    import gzip

    root = tmp_path / "a"
    root.mkdir()
    raw = gzip.compress(b"@r\nACGT\n+\nIIII\n" * 1000)
    (root / "x.fastq.gz").write_bytes(raw)
    with FileServer(root) as server:
        server.set_fault("/x.fastq.gz", headers={"Content-Encoding": "gzip"})
        dest = tmp_path / "x.fastq.gz"
        fetch(
            RemoteFile(
                url=server.url + "/x.fastq.gz", name="x.fastq.gz", md5=hashlib.md5(raw).hexdigest(), bytes=len(raw)
            ),
            dest,
            policy=FAST,
        )
    assert dest.read_bytes() == raw


def test_existing_verified_file_is_not_fetched_again(archive, tmp_path):
    server, data, md5 = archive
    dest = tmp_path / "R_1.fastq.gz"
    fetch(_rf(server, md5), dest, policy=FAST)
    fetch(_rf(server, md5), dest, policy=FAST)
    assert len(_gets(server)) == 1


def test_mirrors_longest_prefix_wins():
    m = {"https://ftp.sra.ebi.ac.uk/": "http://a/", "https://ftp.sra.ebi.ac.uk/vol1/fastq/": "http://b/"}
    assert apply_mirrors("https://ftp.sra.ebi.ac.uk/vol1/fastq/x", m) == "http://b/x"
    assert apply_mirrors("https://ftp.sra.ebi.ac.uk/vol1/srr/x", m) == "http://a/vol1/srr/x"
    assert apply_mirrors("https://elsewhere/x", m) == "https://elsewhere/x"


def test_resume_without_md5_uses_range(archive, tmp_path):
    """Files the metadata gives no md5 for (e.g. a .sra from AWS) still resume from their .part."""
    server, data, _ = archive
    server.set_fault("/R_1.fastq.gz", drop_after=100_000, times=1)
    dest = tmp_path / "R_1.fastq.gz"
    fetch(_rf(server, None), dest, policy=FAST)
    _ok(dest, data)
    gets = _gets(server)
    assert [g["range"] for g in gets] == [None, "bytes=100000-"] and gets[1]["status"] == 206
