"""quant.quantify_run with real kallisto: files no md5 vouches for are read through while kallisto
runs, and a run whose files do not hold what they should never reaches quant/RUN/."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool

from pipeline.quant import quantify as quant
from pipeline.runlog import RunLog
from pipeline.testing import simulate


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("qsim")
    d = simulate.make_species_dataset(
        root,
        "Quanta_pairs",
        ["DRR000101", "DRR000102"],
        "PAIRED",
        reads_per_run=2000,
        read_len=50,
        n_transcripts=20,
        seed=11,
    )
    index = root / "tx.idx"
    quant.build_index(d["transcriptome"], index, root / "index.log")
    return {"index": index, "files": {r["run"]: [Path(f) for f in r["files"]] for r in d["runs"]}}


def _quant(ds, tmp_path, files, **kw):
    kw.setdefault("expected_reads", None)
    kw.setdefault("verified", False)
    log = tmp_path / "run.log"
    res = quant.quantify_run(
        "DRR000101",
        files,
        ds["index"],
        tmp_path / "quant",
        threads=1,
        fragment_length=200,
        fragment_sd=20,
        log=RunLog(log),
        **kw,
    )
    return res, log.read_text() if log.exists() else ""


def _cut(src: Path, dest: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def test_unverified_files_are_read_through_and_match_n_processed(ds, tmp_path):
    res, log = _quant(ds, tmp_path, ds["files"]["DRR000101"])
    assert res.status == "ok", res
    assert res.n_processed == 2000
    assert "read through 2000 spots while kallisto ran" in log
    run_dir = tmp_path / "quant" / "DRR000101"
    kept = json.loads((run_dir / "pipeline_run.json").read_text())
    assert kept["expected_reads"] == 2000
    # kallisto read FIFOs fed with the files decompressed; none is left in the run's folder
    assert kept["kallisto_args"][-2:] == ["DRR000101_1.fastq", "DRR000101_2.fastq"]
    assert kept["fastqs"] == [Path(f).name for f in ds["files"]["DRR000101"]]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "abundance.tsv",
        "kallisto.log",
        "pipeline_run.json",
        "run_info.json",
    ]
    verified, _ = _quant(ds, tmp_path / "v", ds["files"]["DRR000101"], verified=True)
    assert (run_dir / "abundance.tsv").read_bytes() == (
        tmp_path / "v" / "quant" / "DRR000101" / "abundance.tsv"
    ).read_bytes()


def test_verified_files_are_not_read_through(ds, tmp_path):
    res, log = _quant(ds, tmp_path, ds["files"]["DRR000101"], verified=True, expected_reads=2000)
    assert res.status == "ok", res
    assert "quant: ok, n_processed=2000" in log, log  # the log was written: the absence below means something
    assert "read through" not in log


def test_truncated_gzip_fails_although_kallisto_exits_0(ds, tmp_path):
    r1, r2 = ds["files"]["DRR000101"]
    cut = _cut(r2, tmp_path / "cut_2.fastq.gz")
    # kallisto alone accepts the cut file: that is what the read-through is for
    alone = tmp_path / "alone"
    alone.mkdir()
    rc = subprocess.run(
        ["kallisto", "quant", "-i", str(ds["index"]), "-o", str(alone), str(r1), str(cut)], capture_output=True
    ).returncode
    assert rc == 0
    res, log = _quant(ds, tmp_path, [r1, cut])
    assert res.status == "failed" and "truncated" in res.reason and "cut_2.fastq.gz" in res.reason
    assert not (tmp_path / "quant" / "DRR000101").exists()
    assert not list((tmp_path / "quant").glob(".*.tmp"))


def test_mates_of_different_lengths_fail(ds, tmp_path):
    r1, r2 = ds["files"]["DRR000101"]
    short = tmp_path / "short_2.fastq.gz"
    with gzip.open(r2, "rb") as src, gzip.open(short, "wb") as out:
        out.writelines(src.readlines()[:-4])  # one record fewer, a valid gzip
    res, _ = _quant(ds, tmp_path, [r1, short])
    assert res.status == "failed" and "mates differ in read count: 2000 vs 1999" in res.reason
    assert not (tmp_path / "quant" / "DRR000101").exists()


def test_count_read_disagreeing_with_metadata_fails(ds, tmp_path):
    res, _ = _quant(ds, tmp_path, ds["files"]["DRR000101"], expected_reads=2500)
    assert res.status == "failed" and res.reason == "2000 spots in the files but the metadata says 2500"
    assert not (tmp_path / "quant" / "DRR000101").exists()


def test_verified_run_with_wrong_expected_count_fails_on_n_processed(ds, tmp_path):
    res, _ = _quant(ds, tmp_path, ds["files"]["DRR000101"], verified=True, expected_reads=2500)
    assert res.status == "failed" and "kallisto processed 2000 reads but the metadata says 2500" in res.reason


def test_missing_file_is_a_named_failure(ds, tmp_path):
    r1, _ = ds["files"]["DRR000101"]
    res, _ = _quant(ds, tmp_path, [r1, tmp_path / "absent_2.fastq.gz"])
    assert res.status == "failed" and "absent_2.fastq.gz" in res.reason
    assert not (tmp_path / "quant" / "DRR000101").exists()


def test_kallisto_failing_before_it_opens_its_fifos_fails_the_run_without_a_hang(ds, tmp_path):
    """Files without md5 are fed through FIFOs: kallisto exiting first (a broken index) must not
    leave a feeder waiting for a reader; the run fails with kallisto's exit code, nothing left."""
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"not an index")
    r1, r2 = ds["files"]["DRR000101"]
    res = quant.quantify_run("DRR000101", [r1, r2], bad, tmp_path / "quant", threads=1, fragment_length=200,
                             fragment_sd=20, expected_reads=None, verified=False, log=RunLog(tmp_path / "run.log"))  # fmt: skip
    assert res.status == "failed" and "kallisto quant exited" in res.reason, res
    assert "(FIFOs fed with" in (tmp_path / "run.log").read_text()  # the fed path, not the files themselves
    assert list((tmp_path / "quant").iterdir()) == []


def test_a_failed_attempt_leaves_an_earlier_result_alone(ds, tmp_path):
    good, _ = _quant(ds, tmp_path, ds["files"]["DRR000101"])
    assert good.status == "ok"
    before = (tmp_path / "quant" / "DRR000101" / "abundance.tsv").read_bytes()
    r1, r2 = ds["files"]["DRR000101"]
    res, _ = _quant(ds, tmp_path, [r1, _cut(r2, tmp_path / "cut_2.fastq.gz")])
    assert res.status == "failed"
    assert (tmp_path / "quant" / "DRR000101" / "abundance.tsv").read_bytes() == before


def test_kallisto_version_command_and_its_answer():
    from pipeline.quant import kallisto

    assert kallisto.version_args("/opt/k") == ["/opt/k", "version"]
    assert kallisto.parse_version("kallisto, version 0.48.0\n") == "0.48.0"
    assert kallisto.parse_version("command not found") is None
