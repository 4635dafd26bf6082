"""The time-left estimate (pipeline.eta) and the status command's liveness, on real parts: real
kallisto, the loopback FileServer with a throttle, real luigi subprocesses; and eta.estimate on
fabricated marker trees, where the arithmetic is exact."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import ROOT, loopback_species, luigi_args, sizes_of, status_cli

from pipeline import eta
from pipeline.cli import status
from pipeline.files import atomic_write_json
from pipeline.heartbeat import heartbeat_path
from pipeline.model import RemoteFile, Run
from pipeline.paths import SpeciesPaths
from pipeline.plan.batches import write_batch
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

SPECIES = "Eta_sim"
RUNS = [f"DRR00020{i}" for i in range(1, 9)]  # 8 runs in 4 batches of 2
# Each simulated run is ~183 kB in two mates fetched one after the other, so at 20 kB/s a run
# takes ~9 s; two runs a batch download side by side, and (prefetch 1, the default workers) two
# batches as well: about 2 x 9 s of downloads in all, the whole run 20-25 s here.
THROTTLE = 20_000


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("etasim")
    return simulate.make_species_dataset(
        root, SPECIES, RUNS, "PAIRED", reads_per_run=4000, read_len=50, n_transcripts=20, seed=5
    ) | {"archive": root / "archive"}


def _config(tmp_path, ds, server, mode="file"):
    more = {"quant": {"strandedness": "unstranded"}} if mode == "stream" else {}  # stream mode samples nothing
    loopback_species(tmp_path / "cfg", SPECIES, ds, server, batch={"size": 2}, download={"mode": mode}, **more)
    return tmp_path / "cfg"


def _json(out) -> dict:
    r = status_cli(out, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def _start(tmp_path, cfg, out) -> subprocess.Popen:
    return subprocess.Popen(
        luigi_args(cfg, out),
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=(tmp_path / "luigi.out").open("w"),
        stderr=(tmp_path / "luigi.err").open("w"),
        start_new_session=True,  # its own process group, to kill it whole
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_for(what, predicate, timeout=90.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the pipeline ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# -- on a real, throttled run ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["file", "stream"])
def test_eta_half_way_is_within_a_factor_of_two_of_the_real_remainder(tmp_path, ds, mode):
    """In stream mode too: there the reads are fetched by the quant step, and the time left is its."""
    out = tmp_path / "out"
    with FileServer(ds["archive"], throttle_bps=THROTTLE) as server:
        proc = _start(tmp_path, _config(tmp_path, ds, server, mode), out)
        try:

            def half_way():
                if not (out / SPECIES / "work" / "markers" / "split.json").is_file():
                    return None
                st = _json(out)
                return st if st["batches_cleaned"] >= 2 else None

            st = _wait_for("half the batches cleaned up", half_way, proc=proc)
            text = status_cli(out).stdout
            proc.wait(timeout=120)
            ended = time.time()
        finally:
            _stop(proc)
    assert proc.returncode == 0, (tmp_path / "luigi.err").read_text()[-3000:]
    real = ended - st["measured_at"]
    print(f"half way: eta {st['eta_s']:.2f} s, real remainder {real:.2f} s, ratio {st['eta_s'] / real:.2f}")
    assert real / 2 <= st["eta_s"] <= 2 * real, (st["eta_s"], real, st)
    assert st["state"] == "running" and st["liveness"]["state"] == "alive"
    assert st["liveness"]["pid"] == proc.pid and st["liveness"]["host"] == socket.gethostname()
    if mode == "file":
        assert st["download_bytes_per_s"] > 0 and st["share_to_disk"] == 1.0
    else:  # nothing was downloaded to disk, so no download rate is measured, and none is needed
        assert st["download_bytes_per_s"] is None and st["share_to_disk"] == 0.0 and st["bytes_left"] == 0
        assert not any((out / SPECIES / "fastq").glob("*/*.fastq.gz"))
    assert st["quant_reads_per_s"] > 0 and st["prefetch"] == 1
    assert st["reads_left"] > 0 and st["seconds_left"] == st["eta_s"]
    assert f"alive: pid {proc.pid} on {socket.gethostname()}" in text and "left" in text
    done = _json(out)
    assert done["state"] == "done" and done["eta_s"] is None and done["liveness"]["state"] == "stopped"


def test_status_says_stopped_after_the_pipeline_is_killed(tmp_path, ds):
    out = tmp_path / "out"
    fastq = out / SPECIES / "fastq"
    with FileServer(ds["archive"], throttle_bps=THROTTLE) as server:
        proc = _start(tmp_path, _config(tmp_path, ds, server), out)
        try:
            _wait_for(
                "a download under way",
                lambda: heartbeat_path(out).is_file() and any(sizes_of(fastq, ".*.part")),
                proc=proc,
            )
            before = _json(out)
            os.killpg(proc.pid, signal.SIGKILL)  # mid-download: no chance to say it ended
            proc.wait(timeout=30)
        finally:
            _stop(proc)
    assert before["state"] == "running" and before["liveness"]["state"] == "alive"
    st = _json(out)
    assert st["state"] == "stopped" and st["liveness"]["state"] == "stopped"
    assert st["liveness"]["why"] == f"process {proc.pid} is gone"
    assert st["liveness"]["stopped_at"] <= time.time() and st["batches_cleaned"] < st["batches"]
    text = status_cli(out).stdout
    assert f"{SPECIES}: stopped" in text and f"process {proc.pid} is gone" in text
    assert "running" not in text and "alive" not in text.replace("none is known to be alive", "")
    assert "resume   the same command again: " in text and "MultiSpecies" in text


# -- eta.estimate on fabricated trees: exact arithmetic ----------------------------------------


def _run(acc: str, size, reads) -> Run:
    return Run(
        run=acc,
        layout="SINGLE",
        read_count=reads,
        files=[RemoteFile(url=f"http://127.0.0.1/{acc}.fastq.gz", name=f"{acc}.fastq.gz", bytes=size)],
    )


def _tree(tmp_path, plan, prefetch=1, downloads=(), quants=()) -> SpeciesPaths:
    """``plan``: per batch, a list of ``(run, bytes or None, reads or None)``; ``downloads``:
    ``(batch, bytes, started_at, finished_at)``; ``quants``: ``(batch, [(run, n_processed,
    seconds)], started_at, finished_at)``."""
    paths = SpeciesPaths(tmp_path / "out", "Sp")
    paths.markers.mkdir(parents=True, exist_ok=True)
    n_runs = sum(len(b) for b in plan)
    atomic_write_json(paths.marker("split"), {"runs": n_runs, "batches": len(plan), "prefetch": prefetch})
    for i, batch in enumerate(plan):
        write_batch(paths.batch_file(i), i, [_run(*r) for r in batch])
    for b, nbytes, t0, t1 in downloads:
        runs = [{"run": r[0], "status": "ok", "bytes": nbytes // len(plan[b])} for r in plan[b]]
        atomic_write_json(
            paths.batch_marker("download", b),
            {"batch": b, "runs": runs, "bytes": nbytes, "seconds": t1 - t0, "started_at": t0, "finished_at": t1},
        )
    for b, runs, t0, t1 in quants:
        rows = [{"run": r, "status": "ok", "n_processed": n, "seconds": s} for r, n, s in runs]
        atomic_write_json(
            paths.batch_marker("quant", b),
            {"batch": b, "runs": rows, "seconds": t1 - t0, "started_at": t0, "finished_at": t1},
        )
    return paths


PLAN = [[("DRR000001", 1000, 100), ("DRR000002", 1000, 100)]] + [
    [(f"DRR00000{2 * b + 1}", 1000, 100), (f"DRR00000{2 * b + 2}", 1000, 100)] for b in (1, 2)
]
# batch 0 downloaded 2000 bytes in 10 s (200 B/s); kallisto did 2 x 100 reads in 2 x 0.5 s (200 reads/s)
DONE_0 = {
    "downloads": [(0, 2000, 100.0, 110.0)],
    "quants": [(0, [("DRR000001", 100, 0.5), ("DRR000002", 100, 0.5)], 110.0, 111.0)],
}


def test_prefetch_0_adds_download_and_quant_time(tmp_path):
    e = eta.estimate(_tree(tmp_path, PLAN, prefetch=0, **DONE_0), now=200.0)
    assert (e["bytes_left"], e["reads_left"]) == (4000, 400)
    assert (e["download_bytes_per_s"], e["quant_reads_per_s"]) == (200.0, 200.0)
    assert (e["download_seconds_left"], e["quant_seconds_left"]) == (20.0, 2.0)
    assert e["seconds_left"] == 22.0 and e["overlap"] is False and e["finishes_at"] == 222.0


def test_prefetch_1_takes_the_longer_of_the_two(tmp_path):
    e = eta.estimate(_tree(tmp_path, PLAN, prefetch=1, **DONE_0), now=200.0)
    assert e["seconds_left"] == 20.0 and e["overlap"] is True and e["prefetch"] == 1


def test_unknown_sizes_and_read_counts_count_as_the_mean_known(tmp_path):
    plan = [
        [("DRR000001", 1000, 100), ("DRR000002", 1000, 100)],
        [("DRR000003", 1000, 100), ("DRR000004", None, None)],
        [("DRR000005", 4000, 400), ("DRR000006", None, None)],
    ]
    e = eta.estimate(_tree(tmp_path, plan, prefetch=0, **DONE_0), now=200.0)
    # known sizes 1000, 1000, 1000, 4000: mean 1750; known reads 100, 100, 100, 400: mean 175
    assert e["mean_run_bytes"] == 1750.0 and e["mean_run_reads"] == 175.0
    assert (e["bytes_left"], e["reads_left"]) == (1000 + 1750 + 4000 + 1750, 100 + 175 + 400 + 175)
    assert e["seconds_left"] == 8500 / 200 + 850 / 200
    # a partial download of a known and of an unknown size: each less what is on disk
    paths = SpeciesPaths(tmp_path / "out", "Sp")
    for run, n in (("DRR000005", 500), ("DRR000006", 250)):
        paths.run_fastq(run).mkdir(parents=True)
        (paths.run_fastq(run) / f".{run}.fastq.gz.part").write_bytes(b"x" * n)
    assert eta.estimate(paths, now=200.0)["bytes_left"] == 1000 + 1750 + 3500 + 1500


def test_with_no_size_in_the_plan_the_mean_is_what_downloads_brought(tmp_path):
    plan = [[(r, None, None) for r, _, _ in batch] for batch in PLAN]
    e = eta.estimate(_tree(tmp_path, plan, prefetch=0, **DONE_0), now=200.0)
    # batch 0 brought 2 x 1000 bytes, kallisto processed 2 x 100 reads
    assert (e["mean_run_bytes"], e["mean_run_reads"]) == (1000.0, 100.0)
    assert (e["bytes_left"], e["reads_left"], e["seconds_left"]) == (4000, 400, 22.0)


def test_no_download_marker_means_no_estimate(tmp_path):
    e = eta.estimate(_tree(tmp_path, PLAN), now=200.0)
    assert e["seconds_left"] is None and e["download_bytes_per_s"] is None and e["finishes_at"] is None
    assert (e["bytes_left"], e["reads_left"]) == (6000, 600)  # what is left is known, the rate is not
    # downloaded but nothing quantified yet: the kallisto rate is not known either
    e = eta.estimate(_tree(tmp_path, PLAN, downloads=DONE_0["downloads"]), now=200.0)
    assert e["download_seconds_left"] == 20.0 and e["quant_seconds_left"] is None and e["seconds_left"] is None


def test_no_plan_means_no_estimate(tmp_path):
    paths = SpeciesPaths(tmp_path / "out", "Sp")
    e = eta.estimate(paths, now=1.0)
    assert e["seconds_left"] is None and e["bytes_left"] is None


def test_what_is_on_disk_or_quantified_is_not_left(tmp_path):
    paths = _tree(tmp_path, PLAN, prefetch=0, **DONE_0)
    (paths.run_fastq("DRR000003")).mkdir(parents=True)
    (paths.run_fastq("DRR000003") / ".DRR000003.fastq.gz.part").write_bytes(b"x" * 300)  # a partial download
    (paths.run_quant("DRR000005")).mkdir(parents=True)
    (paths.run_quant("DRR000005") / "abundance.tsv").write_text("target_id\n")  # quantified before a retry
    e = eta.estimate(paths, now=200.0)
    assert (e["bytes_left"], e["reads_left"]) == (4000 - 300 - 1000, 400 - 100)
    # a run whose download failed will not be quantified: its reads are not left either
    atomic_write_json(
        paths.batch_marker("download", 1),
        {
            "runs": [{"run": "DRR000003", "status": "ok", "bytes": 1000}, {"run": "DRR000004", "status": "failed"}],
            "bytes": 1000,
            "seconds": 5.0,
            "started_at": 110.0,
            "finished_at": 115.0,
        },
    )
    e = eta.estimate(paths, now=200.0)
    assert (e["bytes_left"], e["reads_left"]) == (1000, 400 - 100 - 100)
    assert e["download_bytes_per_s"] == 3000 / 15


def test_downloads_side_by_side_count_their_shared_time_once(tmp_path):
    downloads = [(0, 2000, 100.0, 110.0), (1, 2000, 100.0, 110.0)]  # two batches at once: 400 B/s
    e = eta.estimate(_tree(tmp_path, PLAN, downloads=downloads, quants=DONE_0["quants"]), now=200.0)
    assert e["download_bytes_per_s"] == 400.0 and e["bytes_left"] == 2000 and e["download_seconds_left"] == 5.0
    assert eta.covered_seconds([(0, 10), (5, 15), (20, 21), (20.5, 20.7)]) == 16.0


def test_files_are_read_once_until_they_change(tmp_path):
    paths = _tree(tmp_path, PLAN, **DONE_0)
    eta.clear_cache()
    first = eta.estimate(paths, now=200.0)
    misses = eta.cache_info()["misses"]
    assert misses == 3 + 2  # three batch files, two markers
    assert eta.estimate(paths, now=200.0) == first and eta.cache_info()["misses"] == misses
    write_batch(paths.batch_file(2), 2, [_run("DRR000005", 5000, 100), _run("DRR000006", 1000, 100)])
    assert eta.estimate(paths, now=200.0)["bytes_left"] == 2000 + 6000
    assert eta.cache_info()["misses"] == misses + 1


def _stream_marker(paths, b, plan, streamed, t0=100.0, t1=100.1):
    """Batch ``b``'s download marker: the runs named in ``streamed`` left to the quant step, the others 1000 bytes each."""
    rows = [
        {"run": r, "status": "stream", "source": "stream"}
        if r in streamed
        else {"run": r, "status": "ok", "bytes": 1000}
        for r, _, _ in plan[b]
    ]
    nbytes = 1000 * sum(1 for r in rows if r["status"] == "ok")
    atomic_write_json(
        paths.batch_marker("download", b),
        {"batch": b, "runs": rows, "bytes": nbytes, "seconds": t1 - t0, "started_at": t0, "finished_at": t1},
    )


def test_in_stream_mode_the_time_left_is_the_quantifications(tmp_path):
    """Streamed runs are fetched by their quantification: no download remainder, and an estimate
    as soon as a streamed batch is quantified (without this, no download rate ever comes)."""
    paths = _tree(tmp_path, PLAN, prefetch=1, quants=DONE_0["quants"])
    _stream_marker(paths, 0, PLAN, {"DRR000001", "DRR000002"})
    e = eta.estimate(paths, now=200.0)
    assert e["share_to_disk"] == 0.0 and e["download_bytes_per_s"] is None
    assert (e["bytes_left"], e["download_seconds_left"]) == (0, 0.0)
    assert e["reads_left"] == 400 and e["seconds_left"] == e["quant_seconds_left"] == 2.0


def test_runs_that_cannot_stream_still_count_as_downloads(tmp_path):
    # one run of two streamed: half of the bytes still to download go to disk, at 1000 B per 10 s
    paths = _tree(tmp_path, PLAN, prefetch=0, quants=DONE_0["quants"])
    _stream_marker(paths, 0, PLAN, {"DRR000001"}, t0=100.0, t1=110.0)
    e = eta.estimate(paths, now=200.0)
    assert e["share_to_disk"] == 0.5 and e["download_bytes_per_s"] == 100.0
    assert e["bytes_left"] == 2000 and e["seconds_left"] == 2000 / 100 + 400 / 200


def _put(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))  # a fabricated tree needs no atomic writes


def test_ten_thousand_runs(tmp_path):
    """1,250 batches of 8 runs, half of them done: exact figures, and a second call reads no file."""
    paths = SpeciesPaths(tmp_path / "out", "Big")
    paths.markers.mkdir(parents=True)
    paths.batch_file(0).parent.mkdir(parents=True)
    n, size = 1250, 8
    _put(paths.marker("split"), {"runs": n * size, "batches": n, "prefetch": 1})
    for b in range(n):
        runs = [_run(f"SRR{b * size + i + 1:07d}", 2_000_000, 10_000) for i in range(size)]
        _put(paths.batch_file(b), {"batch": b, "runs": [r.to_dict() for r in runs]})
        if b < n // 2:
            t0 = 1000.0 + 10 * b
            rows = [{"run": r.run, "status": "ok", "bytes": 2_000_000} for r in runs]
            _put(
                paths.batch_marker("download", b),
                {"runs": rows, "bytes": 16_000_000, "seconds": 8.0, "started_at": t0, "finished_at": t0 + 8.0},
            )
            q = [{"run": r.run, "status": "ok", "n_processed": 10_000, "seconds": 0.5} for r in runs]
            _put(
                paths.batch_marker("quant", b),
                {"runs": q, "seconds": 4.0, "started_at": t0 + 8.0, "finished_at": t0 + 12.0},
            )
            _put(paths.batch_marker("cleanup", b), {"seconds": 0.1})
    eta.clear_cache()
    t = time.perf_counter()
    e = eta.estimate(paths, now=0.0)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    assert eta.estimate(paths, now=0.0) == e
    warm = time.perf_counter() - t
    print(f"estimate() at 10,000 runs: {cold * 1000:.0f} ms cold, {warm * 1000:.0f} ms warm")
    assert e["bytes_left"] == 625 * 8 * 2_000_000 and e["reads_left"] == 625 * 8 * 10_000
    assert e["download_bytes_per_s"] == 2_000_000.0 and e["quant_reads_per_s"] == 20_000.0
    assert e["seconds_left"] == max(625 * 8.0, 625 * 4.0)
    assert eta.cache_info()["misses"] == n + n  # 1,250 batch files + 625 download and 625 quant markers


# -- the status command's state on fabricated trees ----------------------------------------------


def _heartbeat(out, **fields) -> None:
    rec = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": 100.0, "interval": 5.0}
    atomic_write_json(heartbeat_path(out), rec | fields)


def test_status_is_running_only_while_the_heartbeat_is_alive(tmp_path):
    paths = _tree(tmp_path, PLAN, **DONE_0)
    out = paths.output_dir
    now = time.time()
    _heartbeat(out, updated_at=now - 1)  # this very process, beating a second ago
    st = status.species_status(out, "Sp", now=now)
    assert st["state"] == "running" and st["liveness"]["state"] == "alive" and st["eta_s"] == 20.0
    text = status.format_status(st, out, now=now)
    assert f"alive: pid {os.getpid()} on {socket.gethostname()}" in text
    assert "about 20.0 s left" in text and "prefetch 1" in text

    _heartbeat(out, updated_at=now - 60, ended_at=now - 60, exit_code=0)
    st = status.species_status(out, "Sp", now=now)
    assert st["state"] == "stopped" and st["liveness"]["stopped_at"] == now - 60
    text = status.format_status(st, out, now=now)
    assert "Sp: stopped" in text and "stopped 1m 00s ago" in text and "ended with exit code 0" in text
    assert "left once resumed" in text and "running" not in text

    _heartbeat(out, host="elsewhere.example", updated_at=now - 600)  # another host, silent for 10 min
    st = status.species_status(out, "Sp", now=now)
    assert st["state"] == "stopped" and st["liveness"]["why"] == "no heartbeat for 600 s"

    heartbeat_path(out).unlink()  # no heartbeat at all: not claimed to be running
    st = status.species_status(out, "Sp", now=now)
    assert st["state"] == "stopped" and st["liveness"]["state"] == "unknown"
    assert "none is known to be alive" in status.format_status(st, out, now=now)


def test_failures_name_the_retry_command(tmp_path):
    paths = _tree(tmp_path, PLAN, **DONE_0)
    atomic_write_json(
        paths.batch_marker("quant", 1),
        {"runs": [{"run": "DRR000003", "status": "failed", "stage": "download", "reason": "HTTP 404"}]},
    )
    st = status.species_status(paths.output_dir, "Sp", now=200.0)
    text = status.format_status(st, paths.output_dir, now=200.0)
    assert f"rnaseq-batch retry {paths.output_dir}" in text and "python -m pipeline.retry" not in text
