"""Bounded disk: the byte budget holds under real downloads and real kallisto, prefetch ordering
holds with several workers, and the free-space guard refuses a batch that cannot fit."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_tool
from helpers import files_under, run_luigi, write_species

from pipeline.testing import simulate
from pipeline.testing.disk_sampler import DiskSampler
from pipeline.testing.fileserver import FileServer

RUNS = [f"DRR0001{i:02d}" for i in range(1, 9)]
TASK_FAILED = 30  # luigi.cfg [retcode] task_failed


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    return simulate.make_species_dataset(
        root, "Budget_test", RUNS, "PAIRED", reads_per_run=4000, read_len=50, n_transcripts=20, seed=11
    ) | {"archive": root / "archive"}


def _markers(out):
    d = Path(out) / "Budget_test" / "work" / "markers"
    return {p.stem: json.loads(p.read_text()) for p in d.glob("*.json")}


def _run_bytes(ds):
    meta = pd.read_csv(ds["metadata"], sep="\t", dtype=str)
    return [sum(int(b) for b in v.split(";")) for v in meta["fastq_bytes"]]


@pytest.mark.parametrize("prefetch", [0, 1])
def test_peak_disk_stays_within_budget_and_prefetch_order_holds(tmp_path, ds, prefetch):
    need_tool("kallisto")
    sizes = _run_bytes(ds)
    max_bytes = max(sizes) * 2 + 1000  # two runs a batch
    out = tmp_path / "out"
    with FileServer(ds["archive"], throttle_bps=250_000) as server:  # slow enough to sample mid-transfer
        write_species(
            tmp_path / "cfg",
            "Budget_test",
            ds["transcriptome"],
            ds["metadata"],
            batch={"size": 100, "max_bytes": max_bytes, "prefetch": prefetch},
            # FASTQ only: with the .sra route a batch would also keep room for a conversion
            download={"parallel": 2, "sources": ["ena"], "mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
            disk={"min_free": 0},
        )
        with DiskSampler([out / "Budget_test" / "fastq"], interval=0.02) as sampler:
            r = run_luigi(tmp_path / "cfg", out, "--workers", "3")
        assert r.returncode == 0, r.stderr[-3000:]
    budget = (prefetch + 1) * max_bytes
    assert len(sampler.samples) > 50
    assert 0 < sampler.peak <= budget, f"peak {sampler.peak} over budget {budget}"
    m = _markers(out)
    n = m["split"]["batches"]
    assert n == 4
    for b in range(prefetch + 1, n):
        before = m[f"cleanup_{b - prefetch - 1:05d}"]["finished_at"]
        assert m[f"download_{b:05d}"]["started_at"] >= before, f"batch {b} started downloading too early"
    if prefetch == 1:  # with prefetch a later batch downloads while an earlier one is quantified
        assert any(m[f"download_{b + 1:05d}"]["started_at"] < m[f"quant_{b:05d}"]["finished_at"] for b in range(n - 1))
    assert files_under(out / "Budget_test" / "fastq") == set()


@pytest.mark.parametrize("sources", [["ena", "sra"], ["ena"]])
def test_free_space_guard_refuses_a_batch_that_cannot_fit(tmp_path, ds, sources):
    """With the .sra route among the sources, the space asked for includes room for one conversion
    and the message says so; with FASTQ only it does not."""
    out = tmp_path / "out"
    with FileServer(ds["archive"]) as server:
        write_species(
            tmp_path / "cfg",
            "Budget_test",
            ds["transcriptome"],
            ds["metadata"],
            batch={"size": 2},
            disk={"min_free": 0, "wait_seconds": 0.2},
            download={"sources": sources, "mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
        )
        r = run_luigi(tmp_path / "cfg", out, "--pipeline-disk-limit", "50K")
        assert r.returncode == TASK_FAILED, f"exit {r.returncode}:\n{r.stderr[-3000:]}"
        assert [q for q in server.requests if q["method"] == "GET"] == [], "a download started anyway"
    assert "needs" in r.stderr and str(out.resolve() / "Budget_test" / "fastq") in r.stderr
    # ... and says how much room there is: here the --pipeline-disk-limit itself (disk.wait_for_space)
    assert "more than the disk_limit of 50.0 KiB" in r.stderr, r.stderr[-3000:]
    assert ("room for one .sra conversion" in r.stderr) == ("sra" in sources)
    assert not list((out / "Budget_test" / "work" / "markers").glob("download_*"))
