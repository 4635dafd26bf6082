"""End to end through Luigi with real kallisto, downloading from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_shared, need_tool
from helpers import (
    ROOT,
    ena_row,
    files_under,
    luigi_args,
    run_luigi,
    sizes_of,
    tree_snapshot,
    write_metadata,
    write_species,
)

from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer


@pytest.fixture(scope="module")
def kallisto_bin():
    return need_tool("kallisto")


def test_hoxc_paired_end_matches_kallisto_reference(tmp_path, kallisto_bin):
    """The HOXC reads served over HTTP give kallisto's own expected abundance.tsv, byte for byte."""
    reads = need_shared("reads")
    transcripts = need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz")
    expected = need_shared("expected", "kallisto048_hoxc_pe_abundance.tsv")
    files = [reads / "HOXC_1.fastq.gz", reads / "HOXC_2.fastq.gz"]
    with FileServer(reads) as server:
        meta = write_metadata(
            tmp_path / "cfg" / "hoxc.tsv",
            [ena_row("SRR0000001", files, "ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000001", 10000)],
        )
        write_species(
            tmp_path / "cfg",
            "Homo_sapiens_HOXC",
            transcripts,
            meta,
            download={"mirrors": {"https://ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000001/": server.url + "/"}},
        )
        out = tmp_path / "out"
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
        gets = [q for q in server.requests if q["method"] == "GET"]
        assert sorted(q["path"] for q in gets) == ["/HOXC_1.fastq.gz", "/HOXC_2.fastq.gz"]
    sp = out / "Homo_sapiens_HOXC"
    assert (sp / "quant" / "SRR0000001" / "abundance.tsv").read_bytes() == expected.read_bytes()
    info = json.loads((sp / "quant" / "SRR0000001" / "run_info.json").read_text())
    assert info["n_processed"] == 10000
    qc = pd.read_csv(sp / "merged" / "Homo_sapiens_HOXC_qc.tsv", sep="\t")
    assert qc.to_dict("records")[0]["layout"] == "PAIRED"
    counts = pd.read_csv(sp / "merged" / "Homo_sapiens_HOXC_est_counts.tsv", sep="\t")
    ref = pd.read_csv(expected, sep="\t")
    assert list(counts.columns) == ["target_id", "SRR0000001"]
    assert counts["SRR0000001"].tolist() == ref["est_counts"].tolist()
    assert files_under(sp / "fastq") == set()
    assert not [p for p in files_under(out) if ".tmp" in p or ".part" in p]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A simulated species: 6 paired runs (2 of them single-end) in ENA's archive layout."""
    root = tmp_path_factory.mktemp("sim")
    paired = simulate.make_species_dataset(
        root,
        "Simulata_pairs",
        [f"DRR00000{i}" for i in range(1, 5)],
        "PAIRED",
        reads_per_run=3000,
        read_len=50,
        n_transcripts=25,
        seed=7,
    )
    single = simulate.make_species_dataset(
        root,
        "Simulata_single",
        ["DRR000011", "DRR000012"],
        "SINGLE",
        reads_per_run=3000,
        read_len=50,
        n_transcripts=25,
        seed=8,
    )
    return {"root": root, "archive": root / "archive", "paired": paired, "single": single}


def _species(tmp_path, sim, server, name="Simulata_pairs", **sections):
    ds = sim["paired"] if name == "Simulata_pairs" else sim["single"]
    sections.setdefault("download", {})
    # the AWS copy of each .sra (a fallback source) is sent to the loopback server too: no test
    # request ever leaves this machine, and a missing .sra is a quick 404
    mirrors = {
        "https://ftp.sra.ebi.ac.uk/": server.url + "/",
        "https://sra-pub-run-odp.s3.amazonaws.com/": server.url + "/odp/",
    }
    sections["download"] = {"mirrors": mirrors, **sections["download"]}
    return write_species(tmp_path / "cfg", name, ds["transcriptome"], ds["metadata"], **sections)


def test_two_species_rerun_is_a_no_op(tmp_path, sim, kallisto_bin):
    with FileServer(sim["archive"]) as server:
        _species(tmp_path, sim, server)
        _species(tmp_path, sim, server, "Simulata_single")
        out = tmp_path / "out"
        r = run_luigi(tmp_path / "cfg", out, "--workers", "2")
        assert r.returncode == 0, r.stderr[-3000:]
        n_requests = len(server.requests)
        assert n_requests == 4 * 2 + 2
        before = tree_snapshot(out)
        r2 = run_luigi(tmp_path / "cfg", out)
        assert r2.returncode == 0, r2.stderr[-3000:]
        assert len(server.requests) == n_requests, "the second run downloaded again"
        # only the run's own bookkeeping (its heartbeat and run.log lines) is written
        bookkeeping = {"run.log", ".rnaseq-batch/heartbeat.json"}
        after = tree_snapshot(out)
        assert {k: v for k, v in after.items() if k not in bookkeeping} == {
            k: v for k, v in before.items() if k not in bookkeeping
        }, "the second run wrote files"
        assert "downloading" not in r2.stderr and "runs quantified" not in r2.stderr, r2.stderr
    for name, n in (("Simulata_pairs", 4), ("Simulata_single", 2)):
        sp = out / name
        tpm = pd.read_csv(sp / "merged" / f"{name}_tpm.tsv", sep="\t")
        assert tpm.shape == (25, n + 1)
        runs = list(tpm.columns[1:])
        assert runs == sorted(runs)  # metadata order, which is accession order here
        assert all(abs(tpm[r].sum() - 1e6) < 1 for r in runs)
        qc = pd.read_csv(sp / "merged" / f"{name}_qc.tsv", sep="\t")
        assert set(qc["layout"]) == {"PAIRED" if n == 4 else "SINGLE"}
        assert (qc["n_processed"] == 3000).all()
        assert files_under(sp / "fastq") == set()
        markers = json.loads((sp / "work" / "markers" / "cleanup_00000.json").read_text())
        assert markers["bytes_freed"] > 0
        assert (sp / "work" / "metadata" / "failed_runs.tsv").read_text().strip() == "run\tbatch\tstage\treason"


def test_corrupt_download_fails_the_run_not_the_batch(tmp_path, sim, kallisto_bin):
    """A body whose md5 differs is never quantified: the run is reported failed, the rest go on."""
    with FileServer(sim["archive"]) as server:
        bad = "/vol1/fastq/DRR000/DRR000002/DRR000002_2.fastq.gz"
        server.set_fault(bad, corrupt=True)
        _species(tmp_path, sim, server)
        out = tmp_path / "out"
        r = run_luigi(tmp_path / "cfg", out)
    assert r.returncode != 0
    sp = out / "Simulata_pairs"
    assert not (sp / "quant" / "DRR000002").exists()
    failed = pd.read_csv(sp / "work" / "metadata" / "failed_runs.tsv", sep="\t")
    assert failed["run"].tolist() == ["DRR000002"]
    assert "md5 mismatch" in failed["reason"][0]
    assert "DRR000002" in r.stderr and "failed_runs.tsv" in r.stderr
    counts = pd.read_csv(sp / "merged" / "Simulata_pairs_est_counts.tsv", sep="\t")
    assert list(counts.columns) == ["target_id", "DRR000001", "DRR000003", "DRR000004"]
    assert files_under(sp / "fastq") == set()
    log = (sp / "work" / "logs" / "DRR000002.log").read_text()
    assert "md5 mismatch" in log

    # Retry just the failure once the archive serves the right bytes.
    with FileServer(sim["archive"]) as server:
        _species(tmp_path, sim, server)
        subprocess.run(
            [str(Path(os.sys.executable)), "-m", "pipeline.retry", str(out)], cwd=ROOT, check=True, capture_output=True
        )
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
        fetched = {q["path"] for q in server.requests if q["method"] == "GET"}
    assert fetched == {"/vol1/fastq/DRR000/DRR000002/DRR000002_1.fastq.gz", bad}
    counts = pd.read_csv(sp / "merged" / "Simulata_pairs_est_counts.tsv", sep="\t")
    assert list(counts.columns) == ["target_id", "DRR000001", "DRR000002", "DRR000003", "DRR000004"]


def test_truncated_read_count_mismatch_fails(tmp_path, sim, kallisto_bin):
    """Metadata whose read_count disagrees with what kallisto processed fails that run."""
    meta = pd.read_csv(sim["paired"]["metadata"], sep="\t", dtype=str)
    meta.loc[meta["run_accession"] == "DRR000003", "read_count"] = "3500"
    mfile = tmp_path / "meta.tsv"
    meta.to_csv(mfile, sep="\t", index=False)
    with FileServer(sim["archive"]) as server:
        _species(tmp_path, sim, server, metadata={"file": str(mfile)})
        r = run_luigi(tmp_path / "cfg", tmp_path / "out")
    assert r.returncode != 0
    failed = pd.read_csv(tmp_path / "out" / "Simulata_pairs" / "work" / "metadata" / "failed_runs.tsv", sep="\t")
    assert failed["run"].tolist() == ["DRR000003"]
    # batched (quant.batch_mode auto) the read-through counts the spots; alone, kallisto's n_processed
    assert re.search(r"(processed 3000 reads|3000 spots in the files) but the metadata says 3500", failed["reason"][0])
    assert not (tmp_path / "out" / "Simulata_pairs" / "quant" / "DRR000003").exists()


def test_resume_after_kill_downloads_no_quantified_run_again(tmp_path, sim, kallisto_bin):
    """Kill the pipeline once some runs are quantified; the next run fetches none of those again."""
    with FileServer(sim["archive"], throttle_bps=60_000) as server:  # ~1.1 s a file: time to kill mid-way
        _species(tmp_path, sim, server, batch={"size": 1}, download={"parallel": 1})
        out = tmp_path / "out"
        proc = subprocess.Popen(
            luigi_args(tmp_path / "cfg", out),
            cwd=ROOT,
            start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        quant = out / "Simulata_pairs" / "quant"
        fastq = out / "Simulata_pairs" / "fastq"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            (quant / "DRR000002" / "abundance.tsv").exists() and any(sizes_of(fastq, ".*.part"))
        ):
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = {p.name for p in quant.iterdir() if (p / "abundance.tsv").exists()}
        partials = [p for p in fastq.rglob(".*.part") if p.stat().st_size > 0]
        assert partials, "the kill came between transfers; nothing to resume"
        assert {"DRR000001", "DRR000002"} <= done_before and len(done_before) < 4
        server.throttle_bps = None
        n = len(server.requests)
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
        again = [q for q in server.requests[n:] if q["method"] == "GET"]
    refetched = {q["path"].rsplit("/", 1)[1].split("_")[0] for q in again}
    assert not refetched & done_before, f"re-downloaded quantified runs: {refetched & done_before}"
    assert refetched | done_before == {f"DRR00000{i}" for i in range(1, 5)}
    # a transfer cut by the kill resumes from its partial file with a Range request
    resumed = {q["path"].rsplit("/", 1)[1] for q in again if q.get("range")}
    assert {f".{n}.part" for n in resumed} == {p.name for p in partials}, (
        "an interrupted transfer restarted from byte 0 instead of resuming from its partial file"
    )
    sp = out / "Simulata_pairs"
    assert pd.read_csv(sp / "merged" / "Simulata_pairs_tpm.tsv", sep="\t").shape == (25, 5)
    assert files_under(sp / "fastq") == set()
    assert not [p for p in files_under(out) if ".tmp" in p or ".part" in p]


def test_max_bp_caps_each_run_and_qc_says_so(tmp_path, sim, kallisto_bin):
    with FileServer(sim["archive"]) as server:
        _species(tmp_path, sim, server, download={"max_bp": 100_000})  # 1,000 pairs of 2 x 50 bases
        out = tmp_path / "out"
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
    qc = pd.read_csv(out / "Simulata_pairs" / "merged" / "Simulata_pairs_qc.tsv", sep="\t")
    assert qc["n_processed"].tolist() == [1000] * 4
    assert qc["capped"].tolist() == ["yes"] * 4  # booleans are yes/no, as amalgkit writes them
    assert (
        "max_bp: kept the first 1000 spots" in (out / "Simulata_pairs" / "work" / "logs" / "DRR000001.log").read_text()
    )


def test_metadata_from_an_ena_query_is_saved_and_reused(tmp_path, sim, kallisto_bin):
    """metadata.query asks the (loopback) ENA portal once; the saved answer drives the batches."""
    with FileServer(sim["archive"]) as server:
        server.set_fault("/ena/portal/api/search", body=Path(sim["paired"]["metadata"]).read_bytes())
        _species(tmp_path, sim, server, metadata={"file": None, "query": 'tax_eq(999) AND library_strategy="RNA-Seq"'})
        out = tmp_path / "out"
        portal = ("--pipeline-ena-portal-url", server.url + "/ena/portal/api")
        r = run_luigi(tmp_path / "cfg", out, *portal)
        assert r.returncode == 0, r.stderr[-3000:]
        searches = [q for q in server.requests if q["path"] == "/ena/portal/api/search"]
        assert len(searches) == 1
        saved = out / "Simulata_pairs" / "work" / "metadata" / "ena_search.tsv"
        assert saved.read_bytes() == Path(sim["paired"]["metadata"]).read_bytes()
        # planning again (markers gone) re-uses the saved answer instead of asking ENA again
        for m in (out / "Simulata_pairs" / "work" / "markers").glob("*.json"):
            m.unlink()
        r = run_luigi(tmp_path / "cfg", out, *portal)
        assert r.returncode == 0, r.stderr[-3000:]
        assert len([q for q in server.requests if q["path"] == "/ena/portal/api/search"]) == 1
        # on request, ENA is asked again and the new answer replaces the saved one
        lines = Path(sim["paired"]["metadata"]).read_text().splitlines(keepends=True)
        server.set_fault("/ena/portal/api/search", body="".join(lines[:3]).encode())
        r = subprocess.run(
            [
                os.sys.executable,
                "-m",
                "pipeline.refresh",
                str(tmp_path / "cfg"),
                str(out),
                "--ena-portal-url",
                server.url + "/ena/portal/api",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and "ENA now lists 2 runs" in r.stdout, r.stdout + r.stderr
        assert len([q for q in server.requests if q["path"] == "/ena/portal/api/search"]) == 2
        assert saved.read_text() == "".join(lines[:3])
    assert pd.read_csv(out / "Simulata_pairs" / "merged" / "Simulata_pairs_tpm.tsv", sep="\t").shape == (25, 5)


def test_empty_ena_answer_is_a_clear_error(tmp_path, sim):
    with FileServer(sim["archive"]) as server:
        server.set_fault("/ena/portal/api/search", status=204)
        _species(tmp_path, sim, server, metadata={"file": None, "query": "tax_eq(1)"})
        r = run_luigi(tmp_path / "cfg", tmp_path / "out", "--pipeline-ena-portal-url", server.url + "/ena/portal/api")
    assert r.returncode != 0
    assert "ENA returned no runs" in r.stderr and "tax_eq(1)" in r.stderr


def test_refresh_adds_new_runs_and_keeps_started_batches(tmp_path, sim, kallisto_bin):
    """New rows in the metadata: started batches keep their runs, only the new runs are fetched."""
    full = pd.read_csv(sim["paired"]["metadata"], sep="\t", dtype=str)
    mfile = tmp_path / "meta.tsv"
    full.iloc[:3].to_csv(mfile, sep="\t", index=False)
    out = tmp_path / "out"
    with FileServer(sim["archive"]) as server:
        write_species(
            tmp_path / "cfg",
            "Simulata_pairs",
            sim["paired"]["transcriptome"],
            mfile,
            download={"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
        )
        assert run_luigi(tmp_path / "cfg", out).returncode == 0
        plan = out / "Simulata_pairs" / "work" / "metadata" / "batches"
        before = {p.name: p.read_bytes() for p in plan.iterdir()}
        assert sorted(before) == ["batch_00000.json", "batch_00001.json"]  # 2 + 1 runs
        n = len(server.requests)
        full.to_csv(mfile, sep="\t", index=False)  # DRR000004 appears
        r = subprocess.run(
            [os.sys.executable, "-m", "pipeline.refresh", str(tmp_path / "cfg"), str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
        fetched = {q["path"].rsplit("/", 1)[1] for q in server.requests[n:] if q["method"] == "GET"}
    assert fetched == {"DRR000004_1.fastq.gz", "DRR000004_2.fastq.gz"}
    after = {p.name: p.read_bytes() for p in plan.iterdir()}
    assert {k: after[k] for k in before} == before  # started batches unchanged
    assert "DRR000004" in after["batch_00002.json"].decode()
    tpm = pd.read_csv(out / "Simulata_pairs" / "merged" / "Simulata_pairs_tpm.tsv", sep="\t")
    assert list(tpm.columns) == ["target_id", "DRR000001", "DRR000002", "DRR000003", "DRR000004"]


def _private_species(tmp_path, sim, cut=None):
    """Copies of two simulated runs as the user's own files, listed in an integrate table with
    relative paths; ``cut`` = (run, mate) is truncated to half its bytes."""
    src = sim["archive"] / "vol1" / "fastq" / "DRR000"
    own = tmp_path / "private"
    own.mkdir()
    for run in ("DRR000001", "DRR000002"):
        for m in (1, 2):
            data = (src / run / f"{run}_{m}.fastq.gz").read_bytes()
            (own / f"{run}_{m}.fastq.gz").write_bytes(data[: len(data) // 2] if (run, m) == cut else data)
    table = tmp_path / "cfg" / "local.tsv"
    table.parent.mkdir(parents=True)
    table.write_text(
        "run\tread1_path\tread2_path\n"
        + "".join(f"{r}\t../private/{r}_1.fastq.gz\t../private/{r}_2.fastq.gz\n" for r in ("DRR000001", "DRR000002"))
    )
    write_species(tmp_path / "cfg", "Simulata_pairs", sim["paired"]["transcriptome"], table)
    return own


def test_private_local_files_are_quantified_and_never_deleted(tmp_path, sim, kallisto_bin):
    """An integrate table (run, read1_path, read2_path): the user's own files survive the cleanup."""
    own = _private_species(tmp_path, sim)
    before = {p.name: p.read_bytes() for p in own.iterdir()}
    out = tmp_path / "out"
    r = run_luigi(tmp_path / "cfg", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before
    qc = pd.read_csv(out / "Simulata_pairs" / "merged" / "Simulata_pairs_qc.tsv", sep="\t")
    assert qc["n_processed"].tolist() == [3000, 3000] and qc["layout"].tolist() == ["PAIRED", "PAIRED"]
    assert qc["source"].tolist() == ["local", "local"] and qc["capped"].tolist() == ["no", "no"]
    assert files_under(out / "Simulata_pairs" / "fastq") == set()


def test_layout_follows_the_files_and_a_mismatch_is_logged(tmp_path, sim, kallisto_bin):
    """Metadata says PAIRED but one FASTQ is listed: quantified single-end, noted in the run's log."""
    meta = pd.read_csv(sim["single"]["metadata"], sep="\t", dtype=str)
    meta["library_layout"] = "PAIRED"
    mfile = tmp_path / "meta.tsv"
    meta.to_csv(mfile, sep="\t", index=False)
    with FileServer(sim["archive"]) as server:
        _species(tmp_path, sim, server, "Simulata_single", metadata={"file": str(mfile)})
        r = run_luigi(tmp_path / "cfg", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    sp = tmp_path / "out" / "Simulata_single"
    qc = pd.read_csv(sp / "merged" / "Simulata_single_qc.tsv", sep="\t")
    assert qc["layout"].tolist() == ["SINGLE", "SINGLE"]
    assert "layout: metadata says PAIRED, files give SINGLE" in (sp / "work" / "logs" / "DRR000011.log").read_text()


def test_truncated_local_file_without_md5_is_a_named_failure(tmp_path, sim, kallisto_bin):
    """No md5 for private files: they are read through, so a cut gzip fails instead of being quantified."""
    _private_species(tmp_path, sim, cut=("DRR000002", 2))
    r = run_luigi(tmp_path / "cfg", tmp_path / "out")
    assert r.returncode != 0
    sp = tmp_path / "out" / "Simulata_pairs"
    failed = pd.read_csv(sp / "work" / "metadata" / "failed_runs.tsv", sep="\t")
    assert failed["run"].tolist() == ["DRR000002"] and "truncated" in failed["reason"][0]
    assert not (sp / "quant" / "DRR000002").exists() and (sp / "quant" / "DRR000001" / "abundance.tsv").is_file()


def test_merge_h5ad_false_leaves_the_columnar_copy_out(tmp_path, sim, kallisto_bin):
    """merge.h5ad: false (a large study's extra gigabytes): the TSVs as always, no merged/SPECIES.h5ad."""
    name = "Simulata_single"
    with FileServer(sim["archive"]) as server:
        _species(tmp_path, sim, server, name, merge={"h5ad": False})
        out = tmp_path / "out"
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
    merged = out / name / "merged"
    assert pd.read_csv(merged / f"{name}_est_counts.tsv", sep="\t").shape == (25, 3)
    assert not (merged / f"{name}.h5ad").exists()
    assert list(merged.glob("*.h5ad")) == []


def test_merge_h5ad_must_be_true_or_false(tmp_path, sim):
    from pipeline.inputs.species_config import ConfigError, load_species_config

    with FileServer(sim["archive"]) as server:
        path = _species(tmp_path, sim, server, "Simulata_single", merge={"h5ad": "no"})
        with pytest.raises(ConfigError, match=r"merge\.h5ad.*true or false.*'no'"):
            load_species_config(path)
        assert load_species_config(_species(tmp_path, sim, server, "Simulata_single")).h5ad is True
