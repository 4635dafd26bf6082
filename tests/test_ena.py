"""Tests of pipeline.inputs.ena against a scripted HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import csv
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conftest import need_shared  # noqa: E402

from pipeline.fetch.retry import RetryPolicy  # noqa: E402
from pipeline.inputs import ena  # noqa: E402
from pipeline.inputs.ena import FIELDS, EnaError, fetch_search, search_url  # noqa: E402
from pipeline.inputs.metadata import load_runs  # noqa: E402

QUERY = 'tax_eq(104421) AND library_strategy="RNA-Seq" AND library_source="TRANSCRIPTOMIC"'
FAST = RetryPolicy(attempts=4, backoff_base=0.01, backoff_max=0.02, stall_seconds=5)


def tsv(rows: list[dict]) -> bytes:
    lines = ["\t".join(FIELDS)] + ["\t".join(str(r.get(f, "")) for f in FIELDS) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def synthetic_rows() -> list[dict]:
    base = "ftp.sra.ebi.ac.uk/vol1/fastq/SRR700/000"
    return [
        {
            "run_accession": "SRR7000001",
            "library_layout": "PAIRED",
            "library_strategy": "RNA-Seq",
            "library_source": "TRANSCRIPTOMIC",
            "tax_id": "104421",
            "scientific_name": "Camponotus floridanus",
            "read_count": "1000",
            "base_count": "200000",
            "fastq_ftp": f"{base}/SRR7000001/SRR7000001_1.fastq.gz;{base}/SRR7000001/SRR7000001_2.fastq.gz",
            "fastq_md5": "0123456789abcdef0123456789abcdef;fedcba9876543210fedcba9876543210",
            "fastq_bytes": "1000;1001",
        },
        {
            "run_accession": "SRR7000002",
            "library_layout": "SINGLE",
            "library_strategy": "RNA-Seq",
            "library_source": "TRANSCRIPTOMIC",
            "tax_id": "104421",
            "scientific_name": "Camponotus floridanus",
            "read_count": "500",
            "base_count": "50000",
            "fastq_ftp": f"{base}/SRR7000002/SRR7000002.fastq.gz",
            "fastq_md5": "00112233445566778899aabbccddeeff",
            "fastq_bytes": "700",
        },
    ]


SYNTHETIC = tsv(synthetic_rows())


class Script:
    """Responses served in order (the last one repeats) and the requests that were received."""

    def __init__(self):
        self.responses: list[dict] = [{"status": 200, "body": SYNTHETIC}]
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def next(self) -> dict:
        with self.lock:
            i = min(len(self.requests) - 1, len(self.responses) - 1)
            return self.responses[i]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        script: Script = self.server.script
        parts = urlsplit(self.path)
        with script.lock:
            script.requests.append(
                {
                    "path": parts.path,
                    "query": parse_qs(parts.query, keep_blank_values=True),
                    "raw_query": parts.query,
                    "headers": dict(self.headers),
                }
            )
        r = script.next()
        if r.get("drop"):  # close without any answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = r.get("body", b"")
        self.send_response(r["status"])
        self.send_header("Content-Type", r.get("content_type", "text/plain;charset=UTF-8"))
        for k, v in r.get("headers", {}).items():
            self.send_header(k, v)
        if r["status"] == 204:
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body) + r.get("short", 0)))
        self.end_headers()
        self.wfile.write(body)
        if r.get("short"):  # promised more bytes than sent: a truncated answer
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def ena_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.script = Script()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    srv.base_url = f"http://127.0.0.1:{srv.server_address[1]}/ena/portal/api"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def no_leftovers(directory: Path, dest: Optional[Path] = None) -> None:
    """No temporary file in ``directory``; with ``dest``, no ``dest`` either (the failed fetch left none)."""
    if dest is not None:
        assert not dest.exists(), f"{dest} was written"
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------------------
# search_url
# ----------------------------------------------------------------------------------------------


def test_search_url_round_trips_the_query():
    url = search_url(QUERY, base_url="https://example.org/ena/portal/api/")
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "example.org"
    assert parts.path == "/ena/portal/api/search"
    q = parse_qs(parts.query)
    assert q["result"] == ["read_run"]
    assert q["query"] == [QUERY]
    assert q["fields"] == [",".join(FIELDS)]
    assert q["format"] == ["tsv"]
    assert q["limit"] == ["0"]
    assert " " not in url and '"' not in url


def test_search_url_default_base_and_limit():
    url = search_url("tax_eq(13686)", limit=10, fields=["run_accession", "fastq_ftp"])
    assert url.startswith(ena.DEFAULT_BASE_URL + "/search?")
    q = parse_qs(urlsplit(url).query)
    assert q["limit"] == ["10"] and q["fields"] == ["run_accession,fastq_ftp"]


def test_fields_cover_what_the_ena_reader_uses():
    for f in (
        "run_accession",
        "library_layout",
        "library_strategy",
        "library_source",
        "read_count",
        "base_count",
        "fastq_ftp",
        "fastq_md5",
        "fastq_bytes",
        "sra_ftp",
        "sra_md5",
        "sra_bytes",
        "tax_id",
        "scientific_name",
    ):
        assert f in FIELDS
    assert FIELDS[0] == "run_accession" and len(set(FIELDS)) == len(FIELDS)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"query": ""}, "non-empty"),
        ({"query": "   "}, "non-empty"),
        ({"query": "tax_eq(1)", "fields": []}, "at least one field"),
        ({"query": "tax_eq(1)", "fields": ["run_accession", "bad field"]}, "bad field"),
        ({"query": "tax_eq(1)", "limit": -1}, "limit"),
        ({"query": "tax_eq(1)", "base_url": "ftp://x"}, "base URL"),
    ],
)
def test_search_url_rejects_bad_arguments(kwargs, match):
    with pytest.raises(EnaError, match=match):
        search_url(**kwargs)


# ----------------------------------------------------------------------------------------------
# fetch_search
# ----------------------------------------------------------------------------------------------


def test_fetch_sends_the_search_and_saves_a_table_load_runs_reads(ena_server, tmp_path):
    dest = tmp_path / "meta" / "ena_runs.tsv"
    info = fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert len(ena_server.script.requests) == 1
    req = ena_server.script.requests[0]
    assert req["path"] == "/ena/portal/api/search"
    q = req["query"]
    assert q["result"] == ["read_run"]
    assert q["format"] == ["tsv"]
    assert q["query"] == [QUERY]
    assert set(q["fields"][0].split(",")) >= set(FIELDS)
    assert q["limit"] == ["0"]
    assert info["path"] == str(dest) and info["runs"] == 2 and info["reused"] is False
    assert info["url"] == search_url(QUERY, ena_server.base_url)
    assert info["seconds"] >= 0
    assert dest.read_bytes() == SYNTHETIC
    no_leftovers(dest.parent)
    runs, skipped = load_runs(dest, {"library_strategy": "RNA-Seq"})
    assert [r.run for r in runs] == ["SRR7000001", "SRR7000002"] and skipped == []
    assert [f.name for f in runs[0].files] == ["SRR7000001_1.fastq.gz", "SRR7000001_2.fastq.gz"]
    assert runs[0].files[0].url.startswith("https://ftp.sra.ebi.ac.uk/vol1/fastq/")
    assert runs[1].files[0].bytes == 700


def test_fetch_with_the_real_ena_row(ena_server, tmp_path):
    """The SRR9320616 row as ENA really returned it, re-served with the pipeline's fields."""
    src = need_shared("metadata", "ena_filereport_SRR9320616_fetchngs_usage.tsv")
    with open(src, newline="") as fh:
        real = list(csv.DictReader(fh, delimiter="\t"))
    assert real and real[0]["run_accession"] == "SRR9320616"
    ena_server.script.responses = [{"status": 200, "body": tsv(real)}]
    dest = tmp_path / "real.tsv"
    info = fetch_search("run_accession=SRR9320616", dest, base_url=ena_server.base_url, policy=FAST)
    assert info["runs"] == 1
    runs, skipped = load_runs(dest, {"library_strategy": "RNA-Seq"})
    assert skipped == [] and [r.run for r in runs] == ["SRR9320616"]
    r = runs[0]
    assert r.read_count == int(real[0]["read_count"]) and r.base_count == int(real[0]["base_count"])
    # ENA lists this PAIRED run as one interleaved-name file: the reader keeps that single file
    assert [f.name for f in r.files] == ["SRR9320616.fastq.gz"]
    assert r.files[0].md5 == real[0]["fastq_md5"] and r.files[0].bytes == int(real[0]["fastq_bytes"])
    assert r.files[0].url == "https://" + real[0]["fastq_ftp"]


def test_429_with_retry_after_zero_is_retried(ena_server, tmp_path):
    ena_server.script.responses = [
        {"status": 429, "body": b"Too many requests", "headers": {"Retry-After": "0"}},
        {"status": 200, "body": SYNTHETIC},
    ]
    info = fetch_search(QUERY, tmp_path / "a.tsv", base_url=ena_server.base_url, policy=FAST)
    assert len(ena_server.script.requests) == 2
    assert info["runs"] == 2


def test_retry_after_value_is_honoured(ena_server, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(ena.time, "sleep", waits.append)
    ena_server.script.responses = [
        {"status": 503, "headers": {"Retry-After": "7"}},
        {"status": 200, "body": SYNTHETIC},
    ]
    fetch_search(QUERY, tmp_path / "a.tsv", base_url=ena_server.base_url, policy=FAST)
    assert waits == [7.0]


def test_503_twice_then_200(ena_server, tmp_path):
    ena_server.script.responses = [
        {"status": 503, "body": b"Service Unavailable"},
        {"status": 503, "body": b"Service Unavailable"},
        {"status": 200, "body": SYNTHETIC},
    ]
    info = fetch_search(QUERY, tmp_path / "a.tsv", base_url=ena_server.base_url, policy=FAST)
    assert len(ena_server.script.requests) == 3
    assert info["runs"] == 2


def test_persistent_503_gives_up_after_the_policy_attempts(ena_server, tmp_path):
    ena_server.script.responses = [{"status": 503, "body": b"down"}]
    dest = tmp_path / "a.tsv"
    with pytest.raises(EnaError, match=r"failed after 4 attempts over [0-9.]+ s of waiting; last: HTTP 503"):
        fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert len(ena_server.script.requests) == 4
    no_leftovers(tmp_path, dest=dest)


def test_dropped_connection_and_truncated_answer_are_retried(ena_server, tmp_path):
    ena_server.script.responses = [
        {"status": 200, "drop": True},
        {"status": 200, "body": SYNTHETIC[:40], "short": 100},
        {"status": 200, "body": SYNTHETIC},
    ]
    dest = tmp_path / "a.tsv"
    info = fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert len(ena_server.script.requests) == 3
    assert info["runs"] == 2 and dest.read_bytes() == SYNTHETIC
    no_leftovers(tmp_path)


def test_unreachable_server_is_retried_then_fails(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(EnaError, match="failed after 2 attempts over [0-9.]+ s of waiting; last: connection refused"):
        fetch_search(
            QUERY,
            tmp_path / "a.tsv",
            base_url=f"http://127.0.0.1:{port}",
            policy=RetryPolicy(attempts=2, backoff_base=0.01, backoff_max=0.01, stall_seconds=2),
        )


def test_204_means_no_runs(ena_server, tmp_path):
    ena_server.script.responses = [{"status": 204}]
    dest = tmp_path / "a.tsv"
    with pytest.raises(EnaError, match=r"ENA returned no runs for query .*tax_eq\(104421\).*check the taxon id"):
        fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert len(ena_server.script.requests) == 1
    no_leftovers(tmp_path, dest=dest)


def test_header_only_answer_means_no_runs(ena_server, tmp_path):
    ena_server.script.responses = [{"status": 200, "body": tsv([])}]
    dest = tmp_path / "a.tsv"
    with pytest.raises(EnaError, match="ENA returned no runs.*check the taxon id / query"):
        fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert len(ena_server.script.requests) == 1
    no_leftovers(tmp_path, dest=dest)


def test_400_quotes_enas_explanation(ena_server, tmp_path):
    explanation = b'{"message":"Invalid query: unknown field library_stratgy","status":400}'
    ena_server.script.responses = [{"status": 400, "body": explanation, "content_type": "application/json"}]
    dest = tmp_path / "a.tsv"
    with pytest.raises(EnaError) as ei:
        fetch_search('tax_eq(104421) AND library_stratgy="RNA-Seq"', dest, base_url=ena_server.base_url, policy=FAST)
    msg = str(ei.value)
    assert "HTTP 400" in msg and "Invalid query: unknown field library_stratgy" in msg
    assert ena_server.base_url in msg
    assert len(ena_server.script.requests) == 1  # a bad query is not retried
    no_leftovers(tmp_path, dest=dest)


def test_long_error_body_is_cut(ena_server, tmp_path):
    ena_server.script.responses = [{"status": 404, "body": b"x" * 5000}]
    with pytest.raises(EnaError) as ei:
        fetch_search(QUERY, tmp_path / "a.tsv", base_url=ena_server.base_url, policy=FAST)
    assert "HTTP 404" in str(ei.value) and "x" * 300 in str(ei.value) and "x" * 301 not in str(ei.value)


def test_answer_that_is_not_a_run_table(ena_server, tmp_path):
    ena_server.script.responses = [
        {"status": 200, "body": b"<html><body>Maintenance</body></html>\n", "content_type": "text/html"}
    ]
    dest = tmp_path / "a.tsv"
    with pytest.raises(EnaError, match="not a read_run TSV.*Maintenance"):
        fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    no_leftovers(tmp_path, dest=dest)


def test_saved_answer_is_reused_without_a_request_and_refresh_fetches_again(ena_server, tmp_path):
    dest = tmp_path / "a.tsv"
    first = fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert first["reused"] is False and len(ena_server.script.requests) == 1

    again = fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert again["reused"] is True and again["runs"] == 2 and again["path"] == str(dest)
    assert len(ena_server.script.requests) == 1  # no request at all

    one_row = tsv(synthetic_rows()[:1])
    ena_server.script.responses = [{"status": 200, "body": one_row}]
    fresh = fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST, refresh=True)
    assert fresh["reused"] is False and fresh["runs"] == 1
    assert len(ena_server.script.requests) == 2
    assert dest.read_bytes() == one_row


def test_failed_refresh_keeps_the_previous_answer(ena_server, tmp_path):
    dest = tmp_path / "a.tsv"
    fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    ena_server.script.responses = [{"status": 500, "body": b"boom"}]
    with pytest.raises(EnaError, match="HTTP 500"):
        fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST, refresh=True)
    assert dest.read_bytes() == SYNTHETIC
    no_leftovers(tmp_path)


def test_unusable_existing_file_is_an_error_not_a_silent_reuse(ena_server, tmp_path):
    dest = tmp_path / "a.tsv"
    dest.write_text("something else\n")
    with pytest.raises(EnaError, match=f"existing metadata file {dest} is not usable"):
        fetch_search(QUERY, dest, base_url=ena_server.base_url, policy=FAST)
    assert ena_server.script.requests == []


def test_log_records_the_retries(ena_server, tmp_path):
    from pipeline.runlog import RunLog

    ena_server.script.responses = [{"status": 502}, {"status": 200, "body": SYNTHETIC}]
    log_path = tmp_path / "logs" / "ena.log"
    fetch_search(QUERY, tmp_path / "a.tsv", base_url=ena_server.base_url, policy=FAST, log=RunLog(log_path))
    text = log_path.read_text()
    assert "attempt 1: HTTP 502; retrying" in text and "2 runs from" in text
