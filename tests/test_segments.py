"""Segmented downloads (download.connections) against a real server on 127.0.0.1: drops resume only
their segment, a server that ignores Range gets one stream, a corrupt segment never reaches the
final name, a killed download resumes from its sidecar, and the pipeline's results do not depend
on the number of connections."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from conftest import need_tool
from helpers import ROOT, loopback_species, run_luigi, wait_for

from pipeline.fetch import segments
from pipeline.fetch.retry import RetryPolicy
from pipeline.fetch.segments import Split, plan, sidecar_path
from pipeline.fetch.transfer import DownloadError, fetch
from pipeline.inputs.species_config import ConfigError, load_species_config
from pipeline.model import RemoteFile
from pipeline.runlog import RunLog
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

SIZE = 1 << 20
SPLIT = Split(connections=4, min_segment=64 << 10)  # 4 segments of 256 KiB
FAST = RetryPolicy(attempts=5, backoff_base=0.01, backoff_max=0.05, stall_seconds=2.0)
NAME = "R_1.fastq.gz"


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    data = os.urandom(SIZE)
    (root / NAME).write_bytes(data)
    with FileServer(root) as server:
        yield server, data, hashlib.md5(data).hexdigest()


def _rf(server, md5):
    return RemoteFile(url=f"{server.url}/{NAME}", name=NAME, md5=md5, bytes=SIZE)


def _gets(server):
    server.wait_idle()
    return [r for r in server.requests if r["method"] == "GET"]


def _nothing_left(folder):
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_plan_cuts_equal_segments_no_smaller_than_the_minimum():
    segs = plan(100, 4, 10)
    assert [(s.start, s.end) for s in segs] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert [(s.start, s.end) for s in plan(100, 8, 30)] == [(0, 33), (33, 66), (66, 100)]
    assert len(plan(59, 8, 30)) == 1
    assert not Split(4, 1 << 20).applies(RemoteFile(url="http://x/a", name="a", bytes=(2 << 20) - 1))
    assert Split(4, 1 << 20).applies(RemoteFile(url="http://x/a", name="a", bytes=2 << 20))
    assert not Split(4, 1 << 20).applies(RemoteFile(url="http://x/a", name="a", bytes=None))
    assert not Split(1, 1).applies(RemoteFile(url="http://x/a", name="a", bytes=100))


def test_segments_fetch_the_right_file_with_one_range_each(archive, tmp_path):
    server, data, md5 = archive
    dest = tmp_path / "out" / NAME
    fetch(_rf(server, md5), dest, policy=FAST, split=SPLIT)
    assert dest.read_bytes() == data
    _nothing_left(dest.parent)
    ranges = sorted(r["range"] for r in _gets(server))
    assert ranges == sorted(f"bytes={i << 18}-{((i + 1) << 18) - 1}" for i in range(4))
    assert {r["status"] for r in _gets(server)} == {206}


def test_a_drop_in_one_segment_resumes_only_that_segment(archive, tmp_path):
    server, data, md5 = archive
    # the first request is segment 1's (the others wait for its answer): it drops after 100000 bytes
    server.set_fault(f"/{NAME}", drop_after=100_000, times=1)
    dest = tmp_path / NAME
    log = tmp_path / "run.log"
    fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log), split=SPLIT)
    assert dest.read_bytes() == data
    gets = _gets(server)
    assert gets[0]["range"] == "bytes=0-262143" and gets[0]["bytes_sent"] == 100_000
    assert sorted(r["range"] for r in gets[1:]) == [
        "bytes=100000-262143",  # segment 1 again, from where it dropped
        "bytes=262144-524287",
        "bytes=524288-786431",
        "bytes=786432-1048575",
    ]
    assert sum(r["bytes_sent"] for r in gets) == SIZE  # nothing fetched twice
    assert "segment 1/4 (bytes 0-262143): attempt 1: short read" in log.read_text()


@pytest.mark.parametrize("fault", ["ignore_range", "bad_content_range"])
def test_a_server_that_ignores_range_gets_one_stream(archive, tmp_path, fault):
    server, data, md5 = archive
    server.set_fault(f"/{NAME}", **{fault: True})
    dest = tmp_path / NAME
    log = tmp_path / "run.log"
    fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log), split=SPLIT)
    assert dest.read_bytes() == data
    _nothing_left(tmp_path)
    gets = _gets(server)
    assert gets[0]["range"] == "bytes=0-262143"
    assert [r["range"] for r in gets[1:]] == [None]  # then the whole file, once
    assert "does not serve byte ranges" in log.read_text() and "one stream instead" in log.read_text()


def test_a_corrupt_segment_fails_the_md5_and_leaves_no_file(archive, tmp_path):
    server, _data, md5 = archive
    server.set_fault(f"/{NAME}", corrupt=SIZE // 2 + 5)  # inside segment 3, on every request
    dest = tmp_path / NAME
    with pytest.raises(DownloadError, match="md5 mismatch"):
        fetch(_rf(server, md5), dest, policy=FAST, split=SPLIT)
    assert not dest.exists()
    _nothing_left(tmp_path)
    assert len(_gets(server)) == 8  # the file in 4 segments, then once more from scratch


def test_a_segment_that_gives_up_fails_the_file_and_keeps_nothing(archive, tmp_path):
    server, _data, md5 = archive
    server.set_fault(f"/{NAME}", status=503)
    dest = tmp_path / NAME
    with pytest.raises(DownloadError, match=r"segment 1/4 .*failed after 5 attempts.*HTTP 503"):
        fetch(_rf(server, md5), dest, policy=FAST, split=SPLIT)
    assert not dest.exists()
    _nothing_left(tmp_path)
    assert len(_gets(server)) == 5  # the first segment's attempts; the others never started


KILLED = """
import sys
from pathlib import Path
from pipeline.fetch.retry import RetryPolicy
from pipeline.fetch.segments import Split
from pipeline.fetch.transfer import fetch
from pipeline.model import RemoteFile
url, md5, size, dest = sys.argv[1:]
rf = RemoteFile(url=url, name=Path(dest).name, md5=md5, bytes=int(size))
fetch(rf, Path(dest), policy=RetryPolicy(stall_seconds=5), split=Split(4, 64 << 10))
"""


def _kill_midway(server, md5, dest):
    """Run a segmented fetch in a child process and kill it (SIGKILL) once its sidecar records
    progress; return the sidecar's segments."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-c", KILLED, f"{server.url}/{NAME}", md5, str(SIZE), str(dest)]
    child = subprocess.Popen(args, env=env, cwd=ROOT)
    sidecar = sidecar_path(dest.with_name(f".{dest.name}.part"))

    def progress():
        try:
            return sum(d for _, _, d in json.loads(sidecar.read_text())["segments"]) >= SIZE // 8
        except (OSError, ValueError):
            return False

    try:
        assert wait_for(progress, timeout=30), "the sidecar never recorded progress"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return json.loads(sidecar.read_text())["segments"]


def test_a_killed_download_resumes_each_segment_from_its_sidecar(archive, tmp_path):
    server, data, md5 = archive
    server.throttle_bps = 80_000  # per connection: ~3.3 s for a 256 KiB segment
    dest = tmp_path / NAME
    recorded = _kill_midway(server, md5, dest)
    assert any(0 < d < e - s for s, e, d in recorded)  # killed with segments half done
    server.throttle_bps = None
    server.wait_idle()
    server.clear_requests()
    log = tmp_path / "run.log"
    fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log), split=SPLIT)
    assert dest.read_bytes() == data
    _nothing_left(tmp_path)
    asked = {int(r["range"].split("=")[1].split("-")[0]) for r in _gets(server)}
    for s, e, d in recorded:  # each unfinished segment goes on from at least what was recorded
        if d < e - s:
            assert [a for a in asked if s <= a < e][0] >= s + d
        else:
            assert not [a for a in asked if s <= a < e]
    assert "resuming with" in log.read_text()


def test_bytes_the_sidecar_vouches_for_are_still_checked(archive, tmp_path):
    """A sidecar says segments are done, but the bytes on disk are wrong: the md5 over the
    assembled file catches it and the file is fetched again from scratch."""
    server, data, md5 = archive
    dest = tmp_path / NAME
    part = dest.with_name(f".{NAME}.part")
    segs = SPLIT.plan(SIZE)
    segs[0].done = segs[1].done = 1 << 18  # segments 1 and 2 complete, 3 half done, 4 not begun
    segs[2].done = 1 << 17
    bad = bytearray(data[: segs[2].start + segs[2].done])
    bad[1000] ^= 0xFF  # a flipped byte in segment 1, which the sidecar calls complete
    part.write_bytes(bytes(bad))
    sidecar_path(part).write_text(
        json.dumps({"bytes": SIZE, "md5": md5, "segments": [[s.start, s.end, s.done] for s in segs]})
    )
    log = tmp_path / "run.log"
    fetch(_rf(server, md5), dest, policy=FAST, log=RunLog(log), split=SPLIT)
    assert dest.read_bytes() == data
    text = log.read_text()
    assert "md5 mismatch" in text and "retrying once from scratch" in text
    first = [r["range"] for r in _gets(server)][:2]
    assert sorted(first) == ["bytes=655360-786431", "bytes=786432-1048575"]  # the resume came first


def test_one_stream_keeps_only_the_written_prefix_of_a_segmented_part(archive, tmp_path):
    server, data, md5 = archive
    dest = tmp_path / NAME
    part = dest.with_name(f".{NAME}.part")
    segs = SPLIT.plan(SIZE)
    segs[0].done, segs[1].done, segs[3].done = segs[0].end, 1000, 5000  # written: 0..262144+1000, and a piece of 4
    with open(part, "wb") as fh:
        fh.write(data[: segs[1].start + 1000])
        fh.seek(segs[3].start)
        fh.write(data[segs[3].start : segs[3].start + 5000])
    sidecar_path(part).write_text(
        json.dumps({"bytes": SIZE, "md5": md5, "segments": [[s.start, s.end, s.done] for s in segs]})
    )
    fetch(_rf(server, md5), dest, policy=FAST)  # no split: one stream
    assert dest.read_bytes() == data
    assert [r["range"] for r in _gets(server)] == [f"bytes={segs[1].start + 1000}-"]
    _nothing_left(tmp_path)


def test_connections_are_bounded_in_the_species_yaml(tmp_path):
    tx = tmp_path / "tx.fa"
    tx.write_text(">t\nACGT\n")
    meta = tmp_path / "m.tsv"
    meta.write_text("run_accession\n")

    def load(download):
        p = tmp_path / "s.yaml"
        p.write_text(
            json.dumps(
                {"species": "Testus_testus", "reference": {"transcriptome": str(tx)}, "metadata": {"file": str(meta)}}
                | ({"download": download} if download is not None else {})
            )
        )
        return load_species_config(p)

    cfg = load(None)
    assert (cfg.download_connections, cfg.min_segment) == (segments.DEFAULT_CONNECTIONS, segments.MIN_SEGMENT)
    assert load({"connections": 16, "min_segment": "1M"}).min_segment == 1 << 20
    for bad, words in [(17, "must be <= 16"), (0, "must be >= 1"), ("4", "must be an integer")]:
        with pytest.raises(ConfigError, match=f"download.connections.*{words}"):
            load({"connections": bad})
    with pytest.raises(ConfigError, match="download.min_segment"):
        load({"min_segment": 100})


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("segsim")
    runs = ["DRR000301", "DRR000302"]
    return simulate.make_species_dataset(
        root, "Segmenta_sim", runs, "PAIRED", reads_per_run=4000, read_len=50, n_transcripts=20, seed=11
    ) | {"archive": root / "archive"}


def test_pipeline_results_do_not_depend_on_connections(tmp_path, ds):
    tables = {}
    with FileServer(ds["archive"]) as server:
        for n in (1, 4):
            cfg, out = tmp_path / f"cfg{n}", tmp_path / f"out{n}"
            loopback_species(cfg, ds["species"], ds, server, download={"connections": n, "min_segment": "16K"})
            server.clear_requests()
            r = run_luigi(cfg, out)
            assert r.returncode == 0, r.stderr[-3000:]
            server.wait_idle()
            ranged = [q for q in server.requests if q["method"] == "GET" and q["range"]]
            assert bool(ranged) == (n > 1)
            if n > 1:
                assert len(ranged) == 4 * 4 and {q["status"] for q in ranged} == {206}  # 4 files in 4 segments
                logs = " ".join(p.read_text() for p in (out / ds["species"]).rglob("*.log"))
                assert "4 segments over 4 connections" in logs
            merged = out / ds["species"] / "merged"
            tables[n] = {m: pd.read_csv(merged / f"{ds['species']}_{m}.tsv", sep="\t") for m in ("tpm", "est_counts")}
    for m in ("tpm", "est_counts"):
        pd.testing.assert_frame_equal(tables[1][m], tables[4][m])


def test_a_one_stream_part_resumes_as_segments(archive, tmp_path):
    server, data, md5 = archive
    dest = tmp_path / NAME
    dest.with_name(f".{NAME}.part").write_bytes(data[:300_000])  # a one-stream attempt got this far
    fetch(_rf(server, md5), dest, policy=FAST, split=SPLIT)
    assert dest.read_bytes() == data
    assert sorted(r["range"] for r in _gets(server)) == [
        "bytes=300000-524287",  # segment 1 is on disk, segment 2 from where the stream stopped
        "bytes=524288-786431",
        "bytes=786432-1048575",
    ]
