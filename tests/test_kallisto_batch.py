"""Batch quantification (quant.batch_mode auto) against kallisto quant run for each run, on real data.

Every abundance.tsv must be byte-identical to kallisto quant's (est_counts, eff_length and tpm as
kallisto formats them), the run_info.json figures the same, and a run that fails its read-through
fails alone.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import need_shared, need_tool
from helpers import ROOT, luigi_args, run_luigi, write_species

from pipeline.model import RunQuant
from pipeline.quant import kallisto, kallisto_batch
from pipeline.quant import quantify as quant
from pipeline.runlog import RunLog
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

SAME_FIGURES = (
    "n_targets",
    "n_bootstraps",
    "n_processed",
    "n_pseudoaligned",
    "n_unique",
    "p_pseudoaligned",
    "p_unique",
)


# -- pure functions -------------------------------------------------------------------------------


def test_argument_lists():
    assert kallisto.pseudo_batch_args("i.idx", ".", "batch.txt", threads=2, flags=("--rf-stranded",)) == [
        "kallisto", "pseudo", "--bus", "-i", "i.idx", "-o", ".", "-b", "batch.txt", "-t", "2", "--rf-stranded",
    ]  # fmt: skip
    assert kallisto.quant_tcc_args("index.saved", "out0", "0.tcc", "0.fld") == [
        "kallisto", "quant-tcc", "-i", "index.saved", "-f", "0.fld", "-o", "out0", "0.tcc",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="--bias"):
        kallisto.pseudo_batch_args("i.idx", ".", "b.txt", flags=("--bias",))


def _run(name, n_files=2, flags=()):
    return kallisto_batch.BatchRun(run=name, fastqs=[f"{name}_{m}.fq" for m in range(n_files)], expected_reads=1,
                                   log=RunLog(None), flags=flags)  # fmt: skip


def test_groups_are_paired_runs_sharing_their_flags():
    runs = [
        _run("A"),
        _run("B", 1),
        _run("C", flags=("--fr-stranded",)),
        _run("D"),
        _run("E", flags=("--fr-stranded",)),
    ]
    runs.append(_run("F", flags=("--rf-stranded",)))
    groups, alone = kallisto_batch.batch_groups(runs)
    assert [[r.run for r in g] for g in groups] == [["A", "D"], ["C", "E"]]
    assert sorted(r.run for r in alone) == ["B", "F"]


def test_bus_records_and_counts_per_run():
    recs = np.zeros(4, kallisto_batch.BUS_RECORD)
    recs["bc"], recs["ec"], recs["count"] = [0, 1, 1, 1], [5, 2, 9, 2], [3, 4, 1, 2]
    data = b"BUS\x00" + struct.pack("<IIII", 1, 16, 1, 2) + b"hi" + recs.tobytes()
    parsed = kallisto_batch.parse_bus(data)
    ecs, counts = kallisto_batch.run_counts(parsed, 1)
    assert ecs.tolist() == [2, 9] and counts.tolist() == [6, 1]
    with pytest.raises(ValueError):
        kallisto_batch.parse_bus(data[:-3])
    with pytest.raises(ValueError):
        kallisto_batch.parse_bus(b"BAM\x01" + data[4:])


def test_when_a_run_goes_alone():
    assert kallisto_batch.alone_reason(10, [0, 5000, 5000]) is None
    assert "no read" in kallisto_batch.alone_reason(0, [1])
    assert "no fragment" in kallisto_batch.alone_reason(5, [0, 0])
    assert "10001" in kallisto_batch.alone_reason(5, [10001])


def test_run_info_rounds_as_kallisto_does():
    info = kallisto_batch.run_info_for(
        {"n_targets": 3, "kallisto_version": "0.48.0", "index_version": 10, "start_time": "t"},
        3,
        np.array([0, 7]),
        np.array([1, 1]),
        "call",
    )
    assert info["n_pseudoaligned"] == 2 and info["n_unique"] == 1
    assert (info["p_pseudoaligned"], info["p_unique"]) == (66.7, 33.3)
    assert list(info)[-1] == "call"


# -- real kallisto --------------------------------------------------------------------------------


def _per_run(index, quant_dir, calls):
    def per_run(b: kallisto_batch.BatchRun) -> RunQuant:
        calls.append(b.run)
        return quant.quantify_run(b.run, b.fastqs, index, quant_dir, threads=1, fragment_length=200,
                                  fragment_sd=20, expected_reads=b.expected_reads, verified=False, log=b.log)  # fmt: skip

    return per_run


def _both(tmp_path, index, runs: dict, expected=None, threads=1):
    """Each run by kallisto quant -t 1 (quant_dir ``alone``) and by the batch (``batch``, with
    ``threads``); the batch's results."""
    for run, files in runs.items():
        res = quant.quantify_run(run, files, index, tmp_path / "alone", threads=1, fragment_length=200,
                                 fragment_sd=20, expected_reads=None, verified=True, log=RunLog(None))  # fmt: skip
        assert res.ok, res.reason
    calls: list[str] = []
    todo = [
        kallisto_batch.BatchRun(
            run=r, fastqs=f, expected_reads=(expected or {}).get(r), log=RunLog(tmp_path / f"{r}.log")
        )
        for r, f in runs.items()
    ]
    results = kallisto_batch.quantify_runs(todo, index, tmp_path / "batch", threads=threads,
                                           per_run=_per_run(index, tmp_path / "batch", calls))  # fmt: skip
    return results, calls


def _assert_same(tmp_path, run):
    alone, batch = tmp_path / "alone" / run, tmp_path / "batch" / run
    assert (batch / "abundance.tsv").read_bytes() == (alone / "abundance.tsv").read_bytes()
    a, b = kallisto.read_run_info(alone), json.loads((batch / "run_info.json").read_text())
    assert {k: b[k] for k in SAME_FIGURES} == {k: a[k] for k in SAME_FIGURES}
    assert sorted(p.name for p in batch.iterdir()) == [
        "abundance.tsv",
        "kallisto.log",
        "pipeline_run.json",
        "run_info.json",
    ]


def test_hoxc_batch_gives_kallisto_quants_abundance(tmp_path):
    """The HOXC pairs, twice in one batch: kallisto 0.48's own abundance.tsv, byte for byte."""
    need_tool("kallisto")
    reads = need_shared("reads")
    fasta = need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz")
    expected = need_shared("expected", "kallisto048_hoxc_pe_abundance.tsv").read_bytes()
    index = tmp_path / "hoxc.idx"
    quant.build_index(fasta, index, tmp_path / "index.log")
    files = [reads / "HOXC_1.fastq.gz", reads / "HOXC_2.fastq.gz"]
    results, calls = _both(tmp_path, index, {"SRR0000001": files, "SRR0000002": files},
                           expected={"SRR0000001": 10000, "SRR0000002": 10000})  # fmt: skip
    assert calls == [] and all(r.ok for r in results), results
    for r in results:
        assert r.n_processed == 10000
        assert (tmp_path / "batch" / r.run / "abundance.tsv").read_bytes() == expected
        _assert_same(tmp_path, r.run)
    rec = json.loads((tmp_path / "batch" / "SRR0000001" / "pipeline_run.json").read_text())
    assert rec["quant_mode"] == "batch" and rec["kallisto_args"][1] == "quant-tcc"
    assert rec["kallisto_batch_args"][1:3] == ["pseudo", "--bus"]
    assert [p.name for p in (tmp_path / "batch").iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("bsim")
    runs = [f"DRR00020{i}" for i in range(1, 5)]
    d = simulate.make_species_dataset(root, "Batcha_pairs", runs, "PAIRED", 30000, 75, 300, seed=5)
    index = root / "tx.idx"
    quant.build_index(d["transcriptome"], index, root / "index.log")
    return {"index": index, "files": {r["run"]: [Path(f) for f in r["files"]] for r in d["runs"]}}


@pytest.mark.parametrize("threads", [1, 2])
def test_simulated_runs_batch_equals_kallisto_quant(tmp_path, sim, threads):
    """With 2 threads kallisto maps two runs at once, reading four FIFOs; each run is still -t 1's."""
    results, calls = _both(tmp_path, sim["index"], sim["files"], expected={r: 30000 for r in sim["files"]},
                           threads=threads)  # fmt: skip
    assert calls == [] and [r.ok for r in results] == [True] * 4, results
    for r in results:
        assert r.n_processed == 30000
        _assert_same(tmp_path, r.run)
        rec = json.loads((tmp_path / "batch" / r.run / "pipeline_run.json").read_text())
        assert rec["kallisto_batch_args"][-2:] == ["-t", str(threads)]


def test_a_truncated_run_fails_alone(tmp_path, sim):
    runs = dict(sim["files"])
    bad = "DRR000202"
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in runs[bad]:
        data = f.read_bytes()
        (cut / f.name).write_bytes(data[: len(data) // 2])
    runs[bad] = [cut / f.name for f in runs[bad]]
    calls: list[str] = []
    todo = [kallisto_batch.BatchRun(run=r, fastqs=f, expected_reads=None, log=RunLog(tmp_path / f"{r}.log"))
            for r, f in runs.items()]  # fmt: skip
    results = kallisto_batch.quantify_runs(todo, sim["index"], tmp_path / "batch", threads=1,
                                           per_run=_per_run(sim["index"], tmp_path / "batch", calls))  # fmt: skip
    by = {r.run: r for r in results}
    assert not by[bad].ok and "truncated" in by[bad].reason
    assert not (tmp_path / "batch" / bad).exists()
    assert calls == []  # the others were batched again, without it
    good = [r for r in runs if r != bad]
    assert all(by[r].ok and by[r].n_processed == 30000 for r in good)
    for r in good:
        res = quant.quantify_run(r, runs[r], sim["index"], tmp_path / "alone", threads=1, fragment_length=200,
                                 fragment_sd=20, expected_reads=None, verified=True, log=RunLog(None))  # fmt: skip
        assert res.ok
        _assert_same(tmp_path, r)
    assert "batched again" in (tmp_path / f"{good[0]}.log").read_text()
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == sorted(good)


def test_a_count_that_disagrees_with_the_metadata_fails_that_run(tmp_path, sim):
    expected = {r: 30000 for r in sim["files"]} | {"DRR000203": 29999}
    results, calls = _both(tmp_path, sim["index"], sim["files"], expected=expected)
    by = {r.run: r for r in results}
    assert not by["DRR000203"].ok and "metadata says 29999" in by["DRR000203"].reason
    assert sum(r.ok for r in results) == 3 and calls == []


def test_a_run_whose_fragment_sample_differs_goes_alone_and_still_equals(tmp_path):
    """Most reads from duplicated transcripts: few fragments give a length per read chunk, so batch
    mode samples more than kallisto quant's 10,000; that run is quantified alone."""
    need_tool("kallisto")
    unique = simulate.make_transcriptome(20, 800, 1500, seed=3)
    twins = simulate.make_transcriptome(200, 800, 1500, seed=4)
    tx = [(f"u{name}", seq) for name, seq in unique] + twins + [(f"{name}_twin", seq) for name, seq in twins]
    fasta = tmp_path / "tx.fa.gz"
    simulate.write_fasta_gz(tx, str(fasta))
    index = tmp_path / "tx.idx"
    quant.build_index(fasta, index, tmp_path / "index.log")
    runs = {}
    for i, n in enumerate((250_000, 3000), 1):
        r = simulate.simulate_run(
            tx, str(tmp_path / f"DRR00030{i}"), n, 50, "PAIRED", seed=i, abundances=[1.0] * len(tx)
        )
        runs[f"DRR00030{i}"] = [Path(f) for f in r["files"]]
    results, calls = _both(tmp_path, index, runs)
    assert all(r.ok for r in results), results
    assert calls == ["DRR000301"]
    assert "quantified alone" in (tmp_path / "DRR000301.log").read_text()
    for r in runs:
        _assert_same(tmp_path, r)


# -- through the pipeline -------------------------------------------------------------------------


def _pipeline(tmp_path, name: str, ds: dict, archive: Path, mode: str) -> Path:
    with FileServer(archive) as server:
        write_species(tmp_path / name / "cfg", "Batcha_pipe", ds["transcriptome"], ds["metadata"],
                      batch={"size": 4}, quant={"batch_mode": mode},
                      download={"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}, "sources": ["ena"]})  # fmt: skip
        r = run_luigi(tmp_path / name / "cfg", tmp_path / name / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / name / "out" / "Batcha_pipe"


def test_the_pipeline_batches_by_quant_batch_mode(tmp_path):
    """md5-verified ENA runs: per_run runs kallisto quant for each, auto (and batch, its synonym) maps
    them together; every abundance.tsv and the merged tables are the same."""
    need_tool("kallisto")
    runs = [f"DRR00050{i}" for i in range(1, 5)]
    ds = simulate.make_species_dataset(tmp_path / "sim", "Batcha_pipe", runs, "PAIRED", 3000, 50, 30, seed=8)
    archive = tmp_path / "sim" / "archive"
    alone = _pipeline(tmp_path, "per_run", ds, archive, "per_run")
    auto = _pipeline(tmp_path, "auto", ds, archive, "auto")
    batch = _pipeline(tmp_path, "batch", ds, archive, "batch")
    for run in runs:
        modes = [
            json.loads((sp / "quant" / run / "pipeline_run.json").read_text()).get("quant_mode")
            for sp in (alone, auto, batch)
        ]
        assert modes == [None, "batch", "batch"]
        for sp in (auto, batch):
            assert (sp / "quant" / run / "abundance.tsv").read_bytes() == (
                alone / "quant" / run / "abundance.tsv"
            ).read_bytes()
    merged = sorted(p.name for p in (alone / "merged").iterdir() if p.suffix == ".tsv" and "est_counts" in p.name)
    assert merged
    for name in merged:
        for sp in (auto, batch):
            assert (sp / "merged" / name).read_bytes() == (alone / "merged" / name).read_bytes()


def test_stranded_runs_batch_with_their_flag_and_equal_kallisto_quant(tmp_path, sim):
    """Per-run strand flags: the runs of one flag are batched together, as kallisto quant --rf-stranded."""
    runs = dict(list(sim["files"].items())[:2])
    for run, files in runs.items():
        (tmp_path / "alone" / run).mkdir(parents=True)
        args = kallisto.quant_args(sim["index"], tmp_path / "alone" / run, files)
        subprocess.run(args[:2] + ["--rf-stranded"] + args[2:], check=True, capture_output=True)
    calls: list[str] = []
    todo = [kallisto_batch.BatchRun(run=r, fastqs=f, expected_reads=30000, log=RunLog(None), flags=("--rf-stranded",))
            for r, f in runs.items()]  # fmt: skip
    results = kallisto_batch.quantify_runs(todo, sim["index"], tmp_path / "batch", threads=1,
                                           per_run=_per_run(sim["index"], tmp_path / "batch", calls))  # fmt: skip
    assert calls == [] and all(r.ok for r in results), results
    for r in results:
        assert 0 < r.n_pseudoaligned < 30000  # the strand filter dropped reads
        _assert_same(tmp_path, r.run)
    rec = json.loads((tmp_path / "batch" / results[0].run / "pipeline_run.json").read_text())
    assert rec["kallisto_batch_args"][-1] == "--rf-stranded"


def test_a_kill_mid_batch_leaves_nothing_the_next_run_does_not_clean(tmp_path):
    """SIGKILL while kallisto pseudo reads a batch's FIFOs: the scratch folder (FIFOs included) is
    what the next run removes, and that run gives the same results as an uninterrupted one."""
    need_tool("kallisto")
    runs = ["DRR000601", "DRR000602"]
    ds = simulate.make_species_dataset(tmp_path / "sim", "Batcha_pipe", runs, "PAIRED", 150_000, 75, 300, seed=9)
    archive = tmp_path / "sim" / "archive"
    whole = _pipeline(tmp_path, "whole", ds, archive, "auto")
    with FileServer(archive) as server:
        cfg, out = tmp_path / "killed" / "cfg", tmp_path / "killed" / "out"
        write_species(cfg, "Batcha_pipe", ds["transcriptome"], ds["metadata"], batch={"size": 4},
                      download={"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}, "sources": ["ena"]})  # fmt: skip
        proc = subprocess.Popen(luigi_args(cfg, out), cwd=ROOT, start_new_session=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        quant_dir = out / "Batcha_pipe" / "quant"
        deadline, fifos = time.monotonic() + 120, []
        while time.monotonic() < deadline and proc.poll() is None:
            fifos = [p for p in quant_dir.glob(".batch-*.tmp/*.fastq") if stat.S_ISFIFO(p.lstat().st_mode)]
            if fifos and (quant_dir.parent / "genome").exists():
                break
            time.sleep(0.005)
        time.sleep(0.2)  # kallisto is loading the index or reading the FIFOs
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert fifos, "the pipeline ended before the batch began; nothing was interrupted"
        assert [p for p in quant_dir.glob(".batch-*.tmp") if p.is_dir()], "the kill came after the batch"
        assert not any((quant_dir / r / "abundance.tsv").exists() for r in runs)
        r = run_luigi(cfg, out)
        assert r.returncode == 0, r.stderr[-3000:]
    assert not list(quant_dir.glob(".*.tmp")) and not [
        p for p in quant_dir.rglob("*") if stat.S_ISFIFO(p.lstat().st_mode)
    ]
    for run in runs:
        assert (quant_dir / run / "abundance.tsv").read_bytes() == (
            whole / "quant" / run / "abundance.tsv"
        ).read_bytes()
        assert json.loads((quant_dir / run / "pipeline_run.json").read_text())["quant_mode"] == "batch"
