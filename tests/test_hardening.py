"""Faults no other test plans: two runs on one folder, kills at random instants, a worker killed
under luigid, a reference that cannot be fetched, a disk that fills mid-download. Real kallisto,
a real loopback server, real processes, a real tmpfs where the machine allows one."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import env_without_config, free_port, loopback_species, sizes_of, wait_for

from pipeline.files import is_temp_name
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

CLI = str(Path(sys.executable).with_name("rnaseq-batch"))
SPECIES = "Hardia_testis"
RUNS = [f"DRR00030{i}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("sim")
    ds = simulate.make_species_dataset(
        root, SPECIES, RUNS, "PAIRED", reads_per_run=4000, read_len=50, n_transcripts=25, seed=21
    )  # fmt: skip
    return {"archive": root / "archive", "ds": ds}


def _species(cfg_dir: Path, sim, server, **sections) -> Path:
    sections.setdefault("batch", {"size": 2, "prefetch": 1})
    return loopback_species(cfg_dir, SPECIES, sim["ds"], server, **sections)


def _run_args(cfg: Path, out: Path, *extra) -> list[str]:
    return [CLI, "run", "--config-dir", str(cfg.parent), "--output-dir", str(out), *extra]


def _gets(server) -> list[str]:
    return [q["path"] for q in server.requests if q["method"] == "GET" and q["status"] in (200, 206)]


def _leftovers(out: Path) -> list[str]:
    return [str(p.relative_to(out)) for p in out.rglob("*") if is_temp_name(p.name) or p.name.endswith(".part")]


def _tables(out: Path) -> dict[str, bytes]:
    merged = out / SPECIES / "merged"
    return {p.name: p.read_bytes() for p in sorted(merged.glob("*.tsv"))}


@pytest.fixture(scope="module")
def reference(sim, tmp_path_factory):
    """The merged tables of one uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    with FileServer(sim["archive"]) as server:
        cfg = _species(tmp / "cfg", sim, server)
        r = subprocess.run(
            _run_args(cfg, tmp / "out"), env=env_without_config(), capture_output=True, text=True, timeout=300
        )
    assert r.returncode == 0, r.stderr[-3000:]
    return _tables(tmp / "out")


def test_a_second_run_on_the_same_folder_is_refused_or_waits(tmp_path, sim, reference):
    """Different command lines (so Luigi's own lock lets both through): the second is refused
    with the holder named, or waits with --wait-for-lock; no file is fetched twice."""
    with FileServer(sim["archive"], throttle_bps=400_000) as server:
        cfg = _species(tmp_path / "cfg", sim, server)
        out = tmp_path / "out"
        first = subprocess.Popen(_run_args(cfg, out, "--workers", "2"), env=env_without_config(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        assert wait_for(lambda: any(out.rglob("*.part")))
        second = subprocess.run(_run_args(cfg, out, "--workers", "1"), env=env_without_config(), capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        assert second.returncode == 10, second.stderr[-2000:]
        assert f"pid {first.pid}" in second.stderr and "--wait-for-lock" in second.stderr
        assert "Traceback" not in second.stderr
        waiter = subprocess.run(_run_args(cfg, out, "--workers", "3", "--wait-for-lock"), env=env_without_config(),
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        first.communicate(timeout=300)
        assert first.returncode == 0
        assert waiter.returncode == 0, waiter.stderr[-2000:]
        assert "waiting for the run of pid" in waiter.stderr
        gets = _gets(server)
    assert sorted(set(gets)) == sorted(gets), "a file was fetched twice"
    assert len(gets) == 2 * len(RUNS)
    assert _tables(out) == reference
    assert _leftovers(out) == []


def test_kill_9_at_random_instants_then_the_same_command_finishes_the_same(tmp_path, sim, reference):
    rng = random.Random(20261202)
    with FileServer(sim["archive"], throttle_bps=1_500_000) as server:
        cfg = _species(tmp_path / "cfg", sim, server)
        out = tmp_path / "out"
        quant = out / SPECIES / "quant"
        for _ in range(6):
            p = subprocess.Popen(_run_args(cfg, out, "--workers", "3"), env=env_without_config(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            time.sleep(rng.uniform(0.3, 2.5))
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
            done = {d.name for d in quant.iterdir() if (d / "abundance.tsv").is_file()} if quant.is_dir() else set()
            seen = len(server.requests)
            # a finished run is never fetched again
            r = subprocess.Popen(_run_args(cfg, out, "--workers", "3"), env=env_without_config(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            time.sleep(rng.uniform(0.2, 1.0))
            os.killpg(r.pid, signal.SIGKILL)
            r.wait(timeout=30)
            again = [q["path"] for q in server.requests[seen:] if q["method"] == "GET"]
            assert not [g for g in again if any(f"/{run}/" in g for run in done)], (done, again)
        final = subprocess.run(
            _run_args(cfg, out), env=env_without_config(), capture_output=True, text=True, timeout=300
        )
    assert final.returncode == 0, final.stderr[-3000:]
    assert _tables(out) == reference
    assert _leftovers(out) == [], "temporary files survived a successful run"
    assert not any((out / SPECIES / "fastq").rglob("*.gz"))


def test_a_worker_killed_under_luigid_is_finished_by_another_that_exits_0(tmp_path, sim, reference):
    port = free_port()
    settings = tmp_path / "luigi.cfg"
    settings.write_text("[scheduler]\nworker_disconnect_delay = 1\nretry_delay = 1\n")
    env = env_without_config(LUIGI_CONFIG_PATH=str(settings))
    daemon = subprocess.Popen([CLI, "luigid", str(tmp_path / "sched"), "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        assert wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 30)
        with FileServer(sim["archive"], throttle_bps=400_000) as server:
            cfg = _species(tmp_path / "cfg", sim, server)
            out = tmp_path / "out"
            argv = _run_args(cfg, out, "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port))
            first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # fmt: skip
            assert wait_for(lambda: any(out.rglob("*.part")))
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            time.sleep(3)  # past worker_disconnect_delay: the scheduler drops the dead worker
            second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert _tables(out) == reference
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)


def test_a_reference_that_cannot_be_fetched_fetches_no_reads(tmp_path, sim):
    with FileServer(sim["archive"]) as server:
        cfg = _species(tmp_path / "cfg", sim, server)
        text = cfg.read_text().replace(str(sim["ds"]["transcriptome"]), server.url + "/no/such/transcripts.fa.gz")
        cfg.write_text(text)
        out = tmp_path / "out"
        r = subprocess.run(_run_args(cfg, out), env=env_without_config(), capture_output=True, text=True, timeout=300)
        gets = [q["path"] for q in server.requests if q["method"] == "GET"]
    assert r.returncode == 30, r.stderr[-3000:]
    assert gets and all(g == "/no/such/transcripts.fa.gz" for g in gets), gets
    assert "404" in r.stderr and "Traceback" not in r.stderr
    assert not (out / SPECIES / "fastq").exists() or not any((out / SPECIES / "fastq").rglob("*"))
    assert _leftovers(out) == []


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_that_fills_mid_download_is_a_named_failure_then_a_correct_rerun(small_disk, sim, reference):
    out = small_disk / "out"
    with FileServer(sim["archive"], throttle_bps=300_000) as server:
        cfg = _species(small_disk.parent / "cfg", sim, server, batch={"size": 6, "prefetch": 0})
        p = subprocess.Popen(_run_args(cfg, out), env=env_without_config(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
        assert wait_for(lambda: any(sizes_of(out, "*.part")))
        filler = small_disk / "filler"
        with open(filler, "wb") as fh:  # another program takes the rest of the disk
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 30, stderr[-3000:]
        assert "Traceback" not in stderr and "Errno 28" not in stderr, stderr[-3000:]
        named = [x for x in stderr.splitlines() if "the disk filled while" in x]
        assert named and str(out / SPECIES / "fastq") in named[0] and "still to come" in named[0], stderr[-2000:]
        filler.unlink()  # room is made
        r = subprocess.run(_run_args(cfg, out), env=env_without_config(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _tables(out) == reference
    assert _leftovers(out) == []


def test_a_running_pipeline_samples_the_reads_on_disk(tmp_path, sim):
    """OUT/.rnaseq-batch/disk.tsv: reads on disk over time, within the budget, back to 0 at the end."""
    settings = tmp_path / "luigi.cfg"
    settings.write_text("[pipeline]\nheartbeat_seconds = 0.1\n")
    with FileServer(sim["archive"], throttle_bps=600_000) as server:
        cfg = _species(tmp_path / "cfg", sim, server, batch={"size": 2, "prefetch": 0, "max_bytes": "2M"})
        out = tmp_path / "out"
        r = subprocess.run(_run_args(cfg, out), env=env_without_config(LUIGI_CONFIG_PATH=str(settings)), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split("\t") for line in (out / ".rnaseq-batch" / "disk.tsv").read_text().splitlines()[1:]]
    assert len(rows) >= 5 and all(row[1] == SPECIES for row in rows)
    on_disk = [int(row[2]) for row in rows]
    assert max(on_disk) > 0 and max(on_disk) <= 2 * 2**20  # (prefetch + 1) x max_bytes
    assert all(int(row[3]) > 0 for row in rows)
