"""python -m pipeline.status on real pipeline outputs (real kallisto, a real loopback server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import need_tool
from helpers import LUIGI, ROOT, loopback_species, run_luigi, status_cli

from pipeline.cli import status
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

SPECIES = "Statua_pairs"
RUNS = [f"DRR00010{i}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("stsim")
    return simulate.make_species_dataset(
        root, SPECIES, RUNS, "PAIRED", reads_per_run=2000, read_len=50, n_transcripts=20, seed=21
    ) | {"archive": root / "archive"}


def _config(tmp_path, ds, server):
    return loopback_species(tmp_path / "cfg", SPECIES, ds, server, batch={"size": 2})


def test_part_done_then_failures_then_done(tmp_path, ds):
    out = tmp_path / "out"
    with FileServer(ds["archive"]) as server:
        cfg = _config(tmp_path, ds, server)
        # only the first batch, as if the pipeline had been stopped after it
        r = subprocess.run(
            [
                LUIGI,
                "--module",
                "pipeline",
                "BatchCleanup",
                "--config-path",
                str(cfg),
                "--output-dir",
                str(out),
                "--BatchCleanup-batch",
                "0",
                "--local-scheduler",
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        st = status.species_status(out, SPECIES)
        # the process has ended and, started as a lone BatchCleanup, left no heartbeat: not "running"
        assert st["state"] == "stopped" and st["liveness"]["state"] == "unknown"
        assert (st["batches"], st["batches_cleaned"], st["runs_quantified"], st["runs_failed"], st["runs_left"]) == (
            3,
            1,
            2,
            0,
            4,
        )
        assert st["bytes_downloaded"] > 0 and st["bytes_on_disk"] == 0 and st["eta_s"] > 0  # batch 0 gave the rates
        text = status_cli(out)
        assert text.returncode == 0 and "1 of 3 done" in text.stdout and "2 of 6 quantified" in text.stdout

        # the rest, with one run's second mate gone from the archive
        server.set_fault("/vol1/fastq/DRR000/DRR000104/DRR000104_2.fastq.gz", status=404)
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode != 0
        st = status.species_status(out, SPECIES)
        assert st["state"] == "stopped with failures"
        assert (st["batches_cleaned"], st["runs_quantified"], st["runs_failed"], st["runs_left"]) == (3, 5, 1, 0)
        assert [(f["run"], f["batch"], f["stage"]) for f in st["failed"]] == [("DRR000104", 1, "download")]
        assert "404" in st["failed"][0]["reason"]
        assert st["eta_s"] is None and st["elapsed_s"] > 0
        text = status_cli(out).stdout
        assert "failed   DRR000104 (batch 1, download)" in text and f"rnaseq-batch retry {out}" in text

        # retry the failure with the file back: done
        server.clear_faults()
        assert _retry(out).returncode == 0
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads(status_cli(out, "--json").stdout)[0]
    assert st["state"] == "done" and (st["runs_quantified"], st["runs_failed"]) == (6, 0)


def _retry(out):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.retry", str(out)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_arguments_are_named(tmp_path):
    r = status_cli(tmp_path / "absent")
    assert r.returncode == 2 and "output directory not found" in r.stderr
    (tmp_path / "empty").mkdir()
    r = status_cli(tmp_path / "empty")
    assert r.returncode == 2 and "no species" in r.stderr
    r = status_cli(tmp_path / "empty", "--species", "../etc")
    assert r.returncode == 2 and "invalid species name" in r.stderr
    r = status_cli(tmp_path / "empty", "--species", "Not_yet")  # no such species folder: an error, not "not started"
    assert r.returncode == 2 and "no species 'Not_yet'" in r.stderr


def test_an_unknown_species_is_an_error_naming_it(tmp_path):
    out = tmp_path / "out"
    (out / "Known_sp" / "work" / "markers").mkdir(parents=True)
    r = status_cli(out, "--species", "Nope")
    assert r.returncode == 2
    assert "'Nope'" in r.stderr and "Known_sp" in r.stderr and r.stdout == ""
    r = status_cli(out, "--species", "Known_sp")
    assert r.returncode == 0 and "Known_sp: not started" in r.stdout
