"""MultiQC over a finished output: one sample per quantified run, named by its accession.

The real pipeline (Luigi, kallisto, a loopback archive) runs paired and single-end ENA runs, two
runs of the user's own files that share their file names (an integrate table), and a run whose
reads arrive corrupt with no md5 to catch it at download: it fails while kallisto reads it, and
its log in ``work/logs/`` ends with kallisto's. Then real MultiQC (from PyPI: the ``multiqc``
package of the test extras) reads the output with :func:`pipeline.quant.multiqc.write_config`'s
settings.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import need_tool
from helpers import run_luigi, write_metadata, write_species

from pipeline.fetch import sources
from pipeline.model import RemoteFile
from pipeline.quant import multiqc
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

PAIRS = ["DRR000201", "DRR000202", "DRR000203"]  # ENA, paired; the last one fails
LOCAL = ["DRR000204", "DRR000205"]  # the user's own files, both named HOXC_1/HOXC_2.fastq.gz
SINGLE = ["DRR000211", "DRR000212"]  # ENA, single-end
FAILED = "DRR000203"


def need_multiqc() -> list[str]:
    """The command that runs MultiQC of this venv; skip (fail under CI) when it is not installed."""
    if importlib.util.find_spec("multiqc") is None:
        why = "MultiQC is not installed in this venv: pip install 'multiqc>=1.35' (it is in the test extras)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return [sys.executable, "-m", "multiqc"]


def _from_loopback(server: FileServer) -> dict:
    """The species' ``download`` section: ENA's archive is the loopback server."""
    return {"download": {"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The output folder after one pipeline run (which fails: one run failed), and what it holds."""
    need_tool("kallisto")
    base = tmp_path_factory.mktemp("mqc")
    sim = base / "sim"
    paired = simulate.make_species_dataset(
        sim, "Mqc_pairs", PAIRS + LOCAL, "PAIRED", reads_per_run=2000, read_len=50, n_transcripts=20, seed=11
    )
    single = simulate.make_species_dataset(
        sim, "Mqc_single", SINGLE, "SINGLE", reads_per_run=2000, read_len=50, n_transcripts=20, seed=12
    )
    cfg = base / "cfg"
    # ENA pairs: no md5 for the run that fails, so its corrupt body passes the download (its size
    # is right) and is found while kallisto reads it
    with open(paired["metadata"], newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["run_accession"] in PAIRS]
    for r in rows:
        if r["run_accession"] == FAILED:
            r["fastq_md5"] = ""
    pairs_meta = write_metadata(cfg / "pairs.tsv", rows, columns=list(rows[0]))
    # the user's own files: the same names in two folders, as an amalgkit integrate table lists them
    own = base / "own"
    lines = ["run\tread1_path\tread2_path"]
    for folder, run in zip(("a", "b"), LOCAL):
        (own / folder).mkdir(parents=True)
        src = sim / "archive" / simulate.ena_fastq_dir(run)
        for m in (1, 2):
            shutil.copyfile(src / f"{run}_{m}.fastq.gz", own / folder / f"HOXC_{m}.fastq.gz")
        lines.append(f"{run}\t../own/{folder}/HOXC_1.fastq.gz\t../own/{folder}/HOXC_2.fastq.gz")
    (cfg / "local.tsv").write_text("\n".join(lines) + "\n")
    own_before = {p: p.read_bytes() for p in own.rglob("*.gz")}
    out = base / "out"
    with FileServer(sim / "archive") as server:
        server.set_fault(f"/{simulate.ena_fastq_dir(FAILED)}/{FAILED}_2.fastq.gz", corrupt=True)
        write_species(cfg, "Mqc_pairs", paired["transcriptome"], pairs_meta, **_from_loopback(server))
        write_species(cfg, "Mqc_single", single["transcriptome"], single["metadata"], **_from_loopback(server))
        write_species(cfg, "Mqc_local", paired["transcriptome"], cfg / "local.tsv")
        t0 = time.monotonic()
        r = run_luigi(cfg, out)
        seconds = time.monotonic() - t0
    assert r.returncode != 0, "the corrupt run should have failed the species"
    assert FAILED in r.stderr, r.stderr[-3000:]
    quantified = {p.parent.name for p in out.glob("*/quant/*/abundance.tsv")}
    assert quantified == set(PAIRS + LOCAL + SINGLE) - {FAILED}, r.stderr[-3000:]
    assert {p: p.read_bytes() for p in own.rglob("*.gz")} == own_before, "the user's files were touched"
    # what a run killed while kallisto ran leaves: a complete kallisto log in quant/.RUN.tmp/
    done = out / "Mqc_pairs" / "quant" / PAIRS[0] / "kallisto.log"
    left = out / "Mqc_pairs" / "quant" / f".{FAILED}.tmp" / "kallisto.log"
    left.parent.mkdir()
    left.write_text(done.read_text().replace(PAIRS[0], FAILED))
    return {"out": out, "quantified": quantified, "pipeline_seconds": seconds}


def test_runs_are_staged_under_their_accessions(finished):
    """kallisto was given RUN_1/RUN_2 (paired) and RUN (single) files, whatever the source named them."""
    out = finished["out"]
    for run in finished["quantified"]:
        (record,) = out.glob(f"*/quant/{run}/pipeline_run.json")
        fastqs = json.loads(record.read_text())["fastqs"]
        assert fastqs == ([f"{run}.fastq.gz"] if run in SINGLE else [f"{run}_1.fastq.gz", f"{run}_2.fastq.gz"])
        log = (record.parent / "kallisto.log").read_text()
        first = f"{run}.fastq.gz" if run in SINGLE else f"{run}_1.fastq.gz"
        assert f"[quant] will process {'file' if run in SINGLE else 'pair'} 1: ../../fastq/{run}/{first}" in log
    for run in LOCAL:  # the run's log still names the user's file
        log = (out / "Mqc_local" / "work" / "logs" / f"{run}.log").read_text()
        assert f"HOXC_1.fastq.gz ({(out.parent / 'own').as_uri()}" in log and f"staged as {run}_1.fastq.gz" in log
    # the failed run's log holds kallisto's own log, the trap for MultiQC
    failed_log = (out / "Mqc_pairs" / "work" / "logs" / f"{FAILED}.log").read_text()
    assert "[quant] finding pseudoalignments for the reads" in failed_log
    # (no md5: kallisto read FIFOs named as the staged files less .gz, fed with them decompressed)
    assert f"[quant] will process pair 1: {FAILED}_1.fastq\n" in failed_log


def test_multiqc_names_every_quantified_run_by_accession(finished):
    cmd = need_multiqc()
    out = finished["out"]
    config = multiqc.write_config(out)
    assert config == out / "multiqc_config.yaml" and yaml.safe_load(config.read_text()) == multiqc.config()
    mtime = config.stat().st_mtime_ns
    assert multiqc.write_config(out) == config and config.stat().st_mtime_ns == mtime  # unchanged: not rewritten
    report = out / "multiqc"
    # MultiQC reads multiqc_config.yaml only from the folder it runs in: run it elsewhere, with -c
    t0 = time.monotonic()
    r = subprocess.run(
        [*cmd, str(out), "-o", str(report), "-c", str(config), "--no-version-check", "--no-ansi", "--force"],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - t0
    printed = r.stdout + r.stderr
    assert r.returncode == 0, printed[-4000:]
    print(f"\npipeline {finished['pipeline_seconds']:.1f} s, MultiQC {seconds:.1f} s; MultiQC printed:\n{printed}")
    assert f"Loading config settings from: {config}" in printed, printed
    data = report / "multiqc_data"
    kallisto = pd.read_csv(data / "multiqc_kallisto.txt", sep="\t", dtype={"Sample": str})
    assert sorted(kallisto["Sample"]) == sorted(finished["quantified"]), printed
    stats = pd.read_csv(data / "multiqc_general_stats.txt", sep="\t", dtype={"Sample": str})
    assert set(stats["Sample"]) == finished["quantified"]
    # MultiQC's figures are kallisto's own, run by run
    for row in kallisto.to_dict("records"):
        info = json.loads(next(out.glob(f"*/quant/{row['Sample']}/run_info.json")).read_text())
        assert row["total_reads"] == info["n_processed"] == 2000
        assert row["pseudoaligned_reads"] == info["n_pseudoaligned"]


def test_without_the_settings_multiqc_counts_failed_runs_and_mate_names(finished):
    """What the settings are for: MultiQC on its own takes the failed run's log (and an interrupted
    run's) for a sample and names paired runs RUN_1 (and, before the files were staged by
    accession, after the user's files)."""
    cmd = need_multiqc()
    out = finished["out"]
    report = out.parent / "plain_report"
    r = subprocess.run(
        [*cmd, str(out), "-o", str(report), "--no-version-check", "--no-ansi", "--force"],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "Loading config settings" not in r.stdout + r.stderr  # not found in the folder searched
    names = set(pd.read_csv(report / "multiqc_data" / "multiqc_kallisto.txt", sep="\t", dtype=str)["Sample"])
    assert f"{FAILED}_1" in names
    assert names == {f"{run}_1" for run in PAIRS + LOCAL} | set(SINGLE)


def test_staged_names_and_compression_suffix(tmp_path):
    """Paired RUN_1/RUN_2, single RUN; .fastq.gz or .fastq from a local file's first bytes, from
    a remote file's name."""
    gz, plain, misnamed = tmp_path / "r_1.fq.gz", tmp_path / "reads.txt", tmp_path / "HOXC_2.fastq.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(b"@r\nACGT\n+\nIIII\n")
    plain.write_bytes(b"@r\nACGT\n+\nIIII\n")
    misnamed.write_bytes(b"@r\nACGT\n+\nIIII\n")  # plain text under a gzip name

    def local(p: Path) -> RemoteFile:
        return RemoteFile(url=p.as_uri(), name=p.name)

    assert sources.staged_names("SRR1", [local(gz), local(misnamed)]) == ["SRR1_1.fastq.gz", "SRR1_2.fastq"]
    assert sources.staged_names("ERR22", [local(plain)]) == ["ERR22.fastq"]
    remote = [RemoteFile(url=f"https://h/x/{n}", name=n) for n in ("DRR3_1.fastq.gz", "DRR3_2.fq")]
    assert sources.staged_names("DRR3", remote) == ["DRR3_1.fastq.gz", "DRR3_2.fastq"]
    # a local file that is missing is named by its name; its fetch then fails saying so
    assert sources.staged_names("SRR9", [local(tmp_path / "gone.fastq.gz")]) == ["SRR9.fastq.gz"]
