"""The .sra route end to end: FASTQ missing (404) falls through to the run's .sra file, converted
offline by real fasterq-dump and quantified by real kallisto; bad .sra files are named failures."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_shared, need_tool
from helpers import run_luigi, write_metadata, write_species

from pipeline.fetch import sources, sra
from pipeline.fetch.retry import RetryPolicy
from pipeline.model import Run
from pipeline.plan import sizes
from pipeline.runlog import RunLog
from pipeline.testing.fileserver import FileServer

ODP = "https://sra-pub-run-odp.s3.amazonaws.com/"


def test_fastq_404_falls_back_to_sra_and_bad_sra_is_reported(tmp_path):
    need_tool("kallisto")
    need_tool("fasterq-dump")
    sra_dir = need_shared("sra")
    transcripts = need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz")
    expected = need_shared("expected", "kallisto048_hoxc_pe_abundance.tsv")
    archive = tmp_path / "archive"
    for run, src in (("SRR0000009", "SRRHOXC.sra"), ("SRR2096940", "SRR2096940.sra")):
        (archive / "odp" / "sra" / run).mkdir(parents=True)
        shutil.copyfile(sra_dir / src, archive / "odp" / "sra" / run / run)
    (archive / "odp").mkdir(exist_ok=True)
    rows = [
        # FASTQ listed but gone from the archive (404): the .sra copy must be used
        {
            "run_accession": "SRR0000009",
            "library_layout": "PAIRED",
            "read_count": "10000",
            "fastq_ftp": "ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000009/SRR0000009_1.fastq.gz;"
            "ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000009/SRR0000009_2.fastq.gz",
            "fastq_md5": "0" * 32 + ";" + "1" * 32,
            "fastq_bytes": "100;100",
        },
        # no FASTQ at all; the .sra needs remote references and fasterq-dump fails offline
        {"run_accession": "SRR2096940", "library_layout": "PAIRED", "read_count": ""},
        # no FASTQ; the archive answers with an XML error document instead of a .sra
        {"run_accession": "SRR0000010", "library_layout": "SINGLE", "read_count": ""},
    ]
    meta = write_metadata(tmp_path / "cfg" / "meta.tsv", rows)
    with FileServer(archive) as server:
        server.set_fault(
            "/odp/sra/SRR0000010/SRR0000010", body=b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>'
        )
        write_species(
            tmp_path / "cfg",
            "Homo_sapiens",
            transcripts,
            meta,
            batch={"size": 3},
            download={"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/", ODP: server.url + "/odp/"}},
        )
        out = tmp_path / "out"
        r = run_luigi(tmp_path / "cfg", out)
        server.wait_idle()
        paths = [q["path"] for q in server.requests if q["method"] == "GET"]
    assert r.returncode != 0
    sp = out / "Homo_sapiens"
    assert "/vol1/fastq/SRR000/SRR0000009/SRR0000009_1.fastq.gz" in paths
    assert "/odp/sra/SRR0000009/SRR0000009" in paths
    assert (sp / "quant" / "SRR0000009" / "abundance.tsv").read_bytes() == expected.read_bytes()
    failed = pd.read_csv(sp / "work" / "metadata" / "failed_runs.tsv", sep="\t").set_index("run")
    assert set(failed.index) == {"SRR2096940", "SRR0000010"}
    assert "fasterq-dump exited 3" in failed.loc["SRR2096940", "reason"]
    assert "XML" in failed.loc["SRR0000010", "reason"]
    assert "SRR2096940" in r.stderr and "SRR0000010" in r.stderr
    qc = pd.read_csv(sp / "merged" / "Homo_sapiens_qc.tsv", sep="\t")
    assert qc[["run", "layout", "source", "n_processed"]].values.tolist() == [["SRR0000009", "PAIRED", "sra", 10000]]
    log = (sp / "work" / "logs" / "SRR0000009.log").read_text()
    assert "source ena failed" in log and "HTTP 404" in log and "obtained from sra" in log
    assert not [p for p in sp.rglob("*") if p.is_file() and ("fastq" in p.parts or p.suffix == ".sra")]
    assert not [p for p in sp.rglob("*") if ".tmp" in p.name or ".part" in p.name]


def _plain_fastq_bytes_and_counts(paths):
    """Bytes of fasterq-dump's plain output, its bases and its spots (records of the first file)."""
    size = sum(p.stat().st_size for p in paths)
    bases = 0
    for p in paths:
        with open(p, "rb") as fh:
            bases += sum(len(line.rstrip(b"\n")) for i, line in enumerate(fh) if i % 4 == 1)
    with open(paths[0], "rb") as fh:
        spots = sum(1 for _ in fh) // 4
    return size, bases, spots


@pytest.mark.parametrize("name, layout", [("SRRHOXC", "PAIRED"), ("SRR600096", "PAIRED"), ("SRRHOXCSE", "SINGLE")])
def test_conversion_estimate_covers_what_fasterq_dump_writes(tmp_path, name, layout):
    """The room a batch keeps for a conversion is computed from base_count and read_count; the
    plain FASTQ real fasterq-dump writes (with the submitters' own read names) must fit in it."""
    need_tool("fasterq-dump")
    src = need_shared("sra", f"{name}.sra")
    paths = sra.sra_to_fastq(src, tmp_path / "out", "SRR0000001", compress=False)
    size, bases, spots = _plain_fastq_bytes_and_counts(paths)
    r = Run(run="SRR0000001", layout=layout, read_count=spots, base_count=bases, sra_bytes=src.stat().st_size)
    assert sizes.fastq_text_bytes(r) >= size
    assert sizes.sra_peak_bytes(r) >= src.stat().st_size + 2 * size


class _WatchedLock:
    """A real lock that notes, each time it is taken, which files are under ``fastq/``."""

    def __init__(self, fastq: Path):
        self._lock, self.fastq, self.seen = threading.Lock(), fastq, []

    def acquire(self, blocking=True):
        got = self._lock.acquire(blocking)
        if got:
            self.seen.append(sorted(str(p.relative_to(self.fastq)) for p in self.fastq.rglob("*") if p.is_file()))
        return got

    def release(self):
        self._lock.release()


def test_a_batchs_sra_routes_take_turns(tmp_path):
    """Two runs of one batch fall to the .sra route at once: the second fetches nothing until the
    first's conversion is done, so the batch holds one conversion's excess at a time."""
    need_tool("fasterq-dump")
    src = need_shared("sra", "SRRHOXC.sra")
    archive = tmp_path / "archive"
    runs = []
    for acc in ("SRR0000011", "SRR0000012"):
        (archive / "odp" / "sra" / acc).mkdir(parents=True)
        shutil.copyfile(src, archive / "odp" / "sra" / acc / acc)
        runs.append(Run(run=acc, layout="PAIRED", read_count=10000, sra_urls=[f"{ODP}sra/{acc}/{acc}"]))
    fastq = tmp_path / "fastq"
    fastq.mkdir()
    lock = _WatchedLock(fastq)
    start = threading.Barrier(2)
    # about 0.9 s per .sra: both runs ask for the lock while the first one holds it
    with FileServer(archive, throttle_bps=500_000) as server:
        mirrors = {ODP: server.url + "/odp/"}

        def one(r):
            start.wait()
            setup = sources.FetchSetup(
                policy=RetryPolicy(attempts=2, backoff_base=0.05), mirrors=mirrors, sources=["sra"], sra_lock=lock
            )
            return sources.obtain_run(r, fastq / r.run, setup, RunLog(tmp_path / f"{r.run}.log"))

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(one, runs))
    assert [r.status for r in results] == ["ok", "ok"], results
    assert len(lock.seen) == 2
    assert lock.seen[0] == []  # the first holder starts on an empty folder: the other one waits
    first = lock.seen[1][0].split("/")[0]
    # when the second takes its turn, the first is done: its two FASTQs and nothing else (no .sra,
    # no .part, no fasterq-dump folder), and the second has fetched nothing yet
    assert lock.seen[1] == [f"{first}/{first}_1.fastq.gz", f"{first}/{first}_2.fastq.gz"]
    second = ({"SRR0000011", "SRR0000012"} - {first}).pop()
    waited = "waiting while another run of this batch fetches and converts its .sra"
    assert waited in (tmp_path / f"{second}.log").read_text()
    assert "waiting" not in (tmp_path / f"{first}.log").read_text()
