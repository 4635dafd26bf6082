"""Several machines, one study: workers started as separate hosts (their own settings, HOME and
host name) share one real luigid on loopback and one output folder, as over a shared file system.
Real kallisto, a real loopback server, real processes."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import env_without_config, free_port, loopback_species, wait_for

from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

CLI = str(Path(sys.executable).with_name("rnaseq-batch"))
SPECIES = "Multia_hostis"
RUNS = [f"DRR00050{i:02d}" for i in range(12)]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("sim")
    ds = simulate.make_species_dataset(
        root, SPECIES, RUNS, "PAIRED", reads_per_run=60_000, read_len=50, n_transcripts=30, seed=31
    )  # fmt: skip
    return {"archive": root / "archive", "ds": ds}


def _species(cfg_dir: Path, sim, server) -> Path:
    # one run per batch: 12 batches. The disk bound is the species', whatever the number of
    # machines: prefetch 7 lets eight batches be on disk at once, enough for every machine
    return loopback_species(cfg_dir, SPECIES, sim["ds"], server, batch={"size": 1, "prefetch": 7})


def _run_args(cfg: Path, out: Path, *extra) -> list[str]:
    return [CLI, "run", "--config-dir", str(cfg.parent), "--output-dir", str(out), *extra]


def _tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / SPECIES / "merged").glob("*.tsv"))}


@pytest.fixture(scope="module")
def reference(sim, tmp_path_factory):
    """The merged tables of one worker on a local scheduler."""
    tmp = tmp_path_factory.mktemp("reference")
    with FileServer(sim["archive"]) as server:
        cfg = _species(tmp / "cfg", sim, server)
        r = subprocess.run(_run_args(cfg, tmp / "out"), env=env_without_config(), capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return _tables(tmp / "out")


class Luigid:
    """``rnaseq-batch luigid`` on a free port with a short worker_disconnect_delay."""

    def __init__(self, root: Path):
        self.port = free_port()
        cfg = root / "luigid.cfg"
        cfg.write_text("[scheduler]\nworker_disconnect_delay = 2\nretry_delay = 1\n")
        self.proc = subprocess.Popen([CLI, "luigid", str(root / "sched"), "--port", str(self.port)],
                                     env=env_without_config(LUIGI_CONFIG_PATH=str(cfg)), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        assert wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", self.port)) == 0, 30), "luigid did not start"

    def worker_args(self, cfg: Path, out: Path) -> list[str]:
        """``rnaseq-batch run`` of one machine: two worker processes, this scheduler."""
        return _run_args(
            cfg, out, "--scheduler-host", "127.0.0.1", "--scheduler-port", str(self.port), "--workers", "2"
        )

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)

    def downloading_pids(self) -> set[int]:
        """The processes whose worker this scheduler sees running a BatchDownload (Luigi's worker
        id names its process)."""
        data = urllib.parse.quote(json.dumps({"status": "RUNNING"}))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/task_list?data={data}", timeout=5) as r:
                running = json.load(r)["response"]
        except (OSError, ValueError, KeyError):
            return set()
        found = (re.search(r"\bpid=(\d+)", t.get("worker_running") or "") for t in running.values()
                 if t.get("name") == "BatchDownload")  # fmt: skip
        return {int(m.group(1)) for m in found if m}


def _host(root: Path, name: str, cpu: int = 1, archive_connections: int = 12) -> dict:
    """The environment of one simulated machine: its own HOME, settings and lock folder (Luigi
    lets one copy of a command run per machine), naming the host and giving it its own cpu and
    download caps; ``archive_connections`` is the cap all machines share (the default's)."""
    home = root / name
    home.mkdir(parents=True)
    cfg = home / "luigi.cfg"
    cfg.write_text(f"[core]\nlock_pid_dir = {home / 'luigi-lock'}\n\n[pipeline]\nhost = {name}\nrejoin_seconds = 1\n"
                   f"archive_connections = {archive_connections}\n\n[resources]\ncpu = {cpu}\ndownload = 1\n")  # fmt: skip
    return env_without_config(HOME=str(home), LUIGI_CONFIG_PATH=str(cfg))


def _batch_markers(out: Path, stage: str) -> list[dict]:
    markers = out / SPECIES / "work" / "markers"
    return [json.loads(p.read_text()) for p in sorted(markers.glob(f"{stage}_*.json"))]


def _overlaps(intervals: list[tuple[float, float]]) -> int:
    """How many pairs of the intervals overlap in time."""
    s = sorted(intervals)
    return sum(1 for i, a in enumerate(s) for b in s[i + 1 :] if b[0] < a[1])


def test_three_machines_share_the_batches_each_within_its_own_cpu_cap(tmp_path, sim, reference):
    daemon = Luigid(tmp_path)
    try:
        # Downloads crawl until every machine is downloading a batch, then a file takes ~0.5 s.
        # Three machines and kallisto on two cores: a machine slow to start could otherwise find
        # every batch taken, and its share of none would say nothing of the scheduling. The
        # archive cap all machines share is raised so that it lets every worker process download
        # (at the default, 12 connections, 4 a batch, three batches download at once in all, and
        # one machine's two processes may hold two of them, one waiting for its machine's cap).
        with FileServer(sim["archive"], throttle_bps=20_000) as server:
            cfg = _species(tmp_path / "cfg", sim, server)
            out = tmp_path / "out"
            argv = daemon.worker_args(cfg, out)
            hosts = ["hostA", "hostB", "hostC"]
            procs = [subprocess.Popen(argv, env=_host(tmp_path, h, archive_connections=48), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for h in hosts]  # fmt: skip
            pids = {p.pid for p in procs}
            everyone_in = wait_for(lambda: daemon.downloading_pids() >= pids, 120)
            server.throttle_bps = 3_000_000
            results = [p.communicate(timeout=400) for p in procs]
            gets = [q["path"] for q in server.requests if q["method"] == "GET"]
    finally:
        daemon.stop()
    for h, p, (_, err) in zip(hosts, procs, results):
        assert p.returncode == 0, f"{h} exited {p.returncode}: {err[-3000:]}"
    assert _tables(out) == reference, "the merged tables differ from one worker's"
    repeated = [g for g, n in collections.Counter(gets).items() if n > 1]
    assert repeated == [], f"fetched more than once: {repeated}"
    assert len(gets) == 2 * len(RUNS)

    quants = _batch_markers(out, "quant")
    assert len(quants) == len(RUNS)
    by_host = collections.defaultdict(list)
    for m in quants:
        by_host[m["host"]].append((m["started_at"], m["finished_at"]))
    ran = {m["host"] for stage in ("download", "quant", "cleanup") for m in _batch_markers(out, stage)}
    idle = {h: err[-3000:] for h, (_, err) in zip(hosts, results) if h not in ran}
    assert everyone_in and ran == set(hosts), f"machines that ran no batch: {idle}"
    # cpu = 1 on every machine and kallisto takes 1 thread: never two kallisto runs on one machine
    for h, intervals in by_host.items():
        assert _overlaps(intervals) == 0, (h, intervals)
    # but the machines quantify at the same time: the cap is each machine's, not one for all
    everyone = [iv for ivs in by_host.values() for iv in ivs]
    assert len(by_host) >= 2 and _overlaps(everyone) > 0, by_host


def test_a_machine_killed_mid_download_loses_its_batches_to_the_others(tmp_path, sim, reference):
    daemon = Luigid(tmp_path)
    try:
        with FileServer(sim["archive"], throttle_bps=1_500_000) as server:
            cfg = _species(tmp_path / "cfg", sim, server)
            out = tmp_path / "out"
            argv = daemon.worker_args(cfg, out)
            doomed = subprocess.Popen(argv, env=_host(tmp_path, "hostA"), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            assert wait_for(lambda: any((out / SPECIES / "fastq").rglob("*.part")), 120)
            survivor = subprocess.Popen(argv, env=_host(tmp_path, "hostB"), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
            # hostA is killed while its download is under way (partial files on disk)
            time.sleep(0.5)
            partial = sorted(p.name for p in (out / SPECIES / "fastq").rglob("*.part"))
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=30)
            _, err = survivor.communicate(timeout=400)
            resumed = [q for q in server.requests if q["method"] == "GET" and q.get("range")]
    finally:
        daemon.stop()
    assert survivor.returncode == 0, err[-3000:]
    assert _tables(out) == reference
    assert partial, "hostA was killed before any partial file existed"
    # what hostA had begun was resumed from its partial files, not fetched again from byte 0
    assert resumed, "no download resumed with a Range request"
    assert {m["host"] for m in _batch_markers(out, "cleanup")} >= {"hostB"}
