"""quant.strandedness: auto with real kallisto on simulated fr, rf and unstranded libraries (paired
and single-end) and on kallisto's own HOXC reads; the run is then quantified as a direct
``kallisto quant --fr-stranded`` / ``--rf-stranded`` would; SRA Lite's one-value qualities flagged."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import need_shared, need_tool

from pipeline.model import Tools
from pipeline.quant import kallisto, quantifier, strand
from pipeline.quant import quantify as kq
from pipeline.reads.fastq import FastqError
from pipeline.reads.sample import sample_head
from pipeline.runlog import RunLog
from pipeline.testing import simulate

READS = 4000
CASES = [(s, lay) for s in simulate.STRANDS for lay in ("PAIRED", "SINGLE")]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("strand")
    runs = {}
    for i, (s, lay) in enumerate(CASES):
        ds = simulate.make_species_dataset(
            root / f"{s}_{lay}", "Strandus", [f"DRR0003{i:02d}"], lay, READS, 50, 30, seed=21, strand=s
        )
        runs[(s, lay)] = [Path(f) for f in ds["runs"][0]["files"]]
    index = root / "tx.idx"
    kq.build_index(ds["transcriptome"], index, root / "index.log")  # one transcriptome: the same seed
    return {"root": root, "index": index, "runs": runs}


def _opts(**kw) -> quantifier.QuantOptions:
    return quantifier.QuantOptions(**({"strand_sample": 1000} | kw))


def _quant(index, files, out: Path, opts, run="DRR000300"):
    res = quantifier.quantify(
        run, files, index, out, opts, Tools(), expected_reads=READS, verified=True, log=RunLog(out / "run.log")
    )
    record = json.loads((out / run / "pipeline_run.json").read_text()) if res.ok else {}
    return res, record


def test_decide_thresholds():
    assert strand.decide(1000, 1000, 0) == ("fr", 1.0, 0.0)
    assert strand.decide(1000, 40, 950)[0] == "rf"
    assert strand.decide(1000, 510, 490)[0] == "unstranded"
    assert strand.decide(1000, 800, 200)[0] == "undecided"  # neither stranded (0.9) nor balanced (0.4-0.6)
    assert strand.decide(1000, 650, 350)[0] == "undecided"
    assert strand.decide(50, 50, 0)[0] == "undecided"  # too few hits to say


def test_simulated_strands_are_what_they_say(sim):
    """fr: mate 1 is a piece of its transcript as written; rf: of its reverse complement."""
    seqs = [s for _, s in simulate.make_transcriptome(30, 500, 2500, 21)]
    for s in ("fr", "rf"):
        with gzip.open(sim["runs"][(s, "SINGLE")][0], "rt") as fh:
            reads = [line.strip() for n, line in enumerate(fh) if n % 4 == 1][:200]
        on_forward = sum(any(r in t for t in seqs) for r in reads)
        assert on_forward == (200 if s == "fr" else 0), s


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{lay}" for s, lay in CASES])
def test_auto_finds_the_strand_and_quantifies_as_kallisto_would(sim, tmp_path, case):
    s, lay = case
    files = sim["runs"][case]
    res, rec = _quant(sim["index"], files, tmp_path / "q", _opts())
    assert res.ok, res
    assert rec["strandedness"] == s and rec["strand_how"] == "detected", rec
    fr, rf = rec["strand_fr"], rec["strand_rf"]
    if s == "unstranded":
        assert 0.4 <= fr <= 0.6 and 0.4 <= rf <= 0.6, rec
    else:
        assert (fr, rf) == ((1.0, 0.0) if s == "fr" else (0.0, 1.0)), rec
    assert rec["strand_sample_spots"] == 1000
    assert rec["lite_qualities"] == "yes"  # the simulator writes every quality as I
    assert (kallisto.STRAND_FLAGS.get(s) in rec["kallisto_args"]) == (s != "unstranded"), rec["kallisto_args"]
    # the same files through kallisto directly, with the mode found
    direct = tmp_path / "direct"
    args = kallisto.quant_args(
        sim["index"], direct, files, single=lay == "SINGLE", fragment_length=200, fragment_sd=20, strand=s
    )
    assert (s == "unstranded") == ("--fr-stranded" not in args and "--rf-stranded" not in args)
    subprocess.run(args, check=True, capture_output=True)
    assert (tmp_path / "q" / "DRR000300" / "abundance.tsv").read_bytes() == (direct / "abundance.tsv").read_bytes()
    assert not list((tmp_path / "q").glob(".*.tmp")), "the sample's folder was left behind"


def test_configured_strandedness_is_used_without_a_sample_quant(sim, tmp_path):
    res, rec = _quant(sim["index"], sim["runs"][("rf", "PAIRED")], tmp_path / "q", _opts(strandedness="rf"))
    assert res.ok and rec["strandedness"] == "rf" and rec["strand_how"] == "configured", rec
    assert "--rf-stranded" in rec["kallisto_args"] and "strand_fr" not in rec
    log = (tmp_path / "q" / "run.log").read_text()
    assert "strand:" not in log and "quant: ok" in log, log


def test_hoxc_reads_are_found_unstranded(tmp_path):
    need_tool("kallisto")
    reads = [need_shared("reads", f"HOXC_{m}.fastq.gz") for m in (1, 2)]
    index = tmp_path / "hoxc.idx"
    kq.build_index(need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz"), index, tmp_path / "i.log")
    res = quantifier.quantify(
        "SRR000001", reads, index, tmp_path / "q", _opts(strand_sample=10_000), Tools(),
        expected_reads=10_000, verified=True, log=RunLog(tmp_path / "run.log"),
    )  # fmt: skip
    assert res.ok, res
    rec = json.loads((tmp_path / "q" / "SRR000001" / "pipeline_run.json").read_text())
    assert rec["strandedness"] == "unstranded" and rec["strand_how"] == "detected", rec
    assert 0.4 <= rec["strand_fr"] <= 0.6 and 0.4 <= rec["strand_rf"] <= 0.6, rec
    assert rec["lite_qualities"] == "yes"  # kallisto's HOXC reads are simulated: every quality is I
    expected = need_shared("expected", "kallisto048_hoxc_pe_abundance.tsv")
    assert (tmp_path / "q" / "SRR000001" / "abundance.tsv").read_bytes() == expected.read_bytes()


def test_sample_reads_only_the_head_and_flags_one_quality(tmp_path):
    fq = tmp_path / "r.fastq"
    fq.write_text("".join(f"@r{i}\nACGT\n+\n{'????' if i < 3 else '?#??'}\n" for i in range(6)))
    head = sample_head([fq], 3, tmp_path / "s")
    assert (head.spots, head.one_quality, head.quality) == (3, True, "?")
    assert gzip.decompress(head.files[0].read_bytes()).count(b"\n") == 12
    assert not sample_head([fq], 6).one_quality


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 17])
def test_a_sample_read_in_blocks_holds_the_files_first_lines(tmp_path, monkeypatch, block):
    """Blocks of any size, chunks of 3 spots: the sample is the head of the files line for line (CRLF
    kept, a last line without its newline given one), short runs end early, and a record broken
    across a block boundary is still found."""
    import pipeline.reads.sample as sample_mod

    monkeypatch.setattr(sample_mod, "BLOCK", block)
    monkeypatch.setattr(sample_mod, "CHUNK", 3)
    recs = [f"@r{i}/1\r\nAC{'G' * i}T\r\n+\r\n{'I' * (i + 3)}\r\n" for i in range(10)]
    r1 = tmp_path / "a_1.fastq.gz"
    r2 = tmp_path / "a_2.fastq"
    r1.write_bytes(gzip.compress("".join(recs).encode()))
    r2.write_text("".join(recs).replace("/1", "/2")[:-2])  # its last line ends without a newline
    for n in (1, 3, 4, 10, 25):
        head = sample_head([r1, r2], n, tmp_path / f"s{n}")
        want = min(n, 10)
        assert head.spots == want and head.one_quality and head.quality == "I"
        for f, src in zip(head.files, (gzip.decompress(r1.read_bytes()), r2.read_bytes())):
            lines = src.split(b"\n")
            expect = b"\n".join(lines[: 4 * want]).rstrip(b"\n") + b"\n"
            assert gzip.decompress(f.read_bytes()) == expect, (n, f)
    bad = tmp_path / "b_1.fastq"
    bad.write_text("".join(recs[:7]) + "@r7\r\nACGT\r\nnot a plus line\r\nIIII\r\n")
    with pytest.raises(FastqError, match="not a FASTQ record at spot 8"):
        sample_head([bad], 10)
    assert sample_head([bad], 7).spots == 7  # the broken record lies past the sample
    short = tmp_path / "c_1.fastq"
    short.write_text("".join(recs[:7]))
    with pytest.raises(FastqError, match="mates differ in read count after 7 spots"):
        sample_head([short, r2], 9)


def test_a_sample_of_a_truncated_head_fails_the_run(sim, tmp_path):
    r1, r2 = sim["runs"][("fr", "PAIRED")]
    cut = tmp_path / "cut_2.fastq.gz"
    cut.write_bytes(r2.read_bytes()[:2000])
    with pytest.raises(FastqError):
        sample_head([r1, cut], 1000, tmp_path / "s")
    res, _ = _quant(sim["index"], [r1, cut], tmp_path / "q", _opts())  # the quantification fails it
    assert res.status == "failed" and "kallisto processed" in res.reason and "truncated" in res.reason, res
    assert not (tmp_path / "q" / "DRR000300").exists()
    log = (tmp_path / "q" / "run.log").read_text()
    assert "strand: the head of the files cannot be sampled" in log and "kallisto log:" in log, log


def _alone_counts(sim_index, sample, work: Path) -> tuple:
    call = strand.detect("R", sample, sim_index, work, threads=1, fragment_length=200, fragment_sd=20,
                         log=RunLog(work / "log"))  # fmt: skip
    return call.hits, call.fr, call.rf, call.strandedness


def test_paired_samples_mapped_together_count_as_each_alone(sim, tmp_path):
    """kallisto pseudo --bus -b over the samples of a batch (one load per orientation) gives each
    run the counts kallisto quant gives it alone: the same hits, shares and call, HOXC included."""
    runs = {f"R{i}": sim["runs"][(s, "PAIRED")] for i, s in enumerate(simulate.STRANDS)}
    samples = {r: sample_head(f, 1000, tmp_path / "s" / r) for r, f in runs.items()}
    logs = {r: RunLog(tmp_path / f"{r}.log") for r in runs}
    together = strand.detect_paired(samples, sim["index"], tmp_path / "t", threads=1, logs=logs)
    assert together is not None
    for i, (r, sample) in enumerate(samples.items()):
        got = together[r]
        assert (got.hits, got.fr, got.rf, got.strandedness) == _alone_counts(sim["index"], sample, tmp_path / r)
        assert got.strandedness == simulate.STRANDS[i] and got.how == "detected"
        assert f"strand: {r}: of {got.hits} reads" in logs[r].path.read_text()


def test_hoxc_sample_mapped_together_counts_as_alone(tmp_path):
    need_tool("kallisto")
    reads = [need_shared("reads", f"HOXC_{m}.fastq.gz") for m in (1, 2)]
    index = tmp_path / "hoxc.idx"
    kq.build_index(need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz"), index, tmp_path / "i.log")
    sample = sample_head(reads, 10_000, tmp_path / "s")
    got = strand.detect_paired({"H": sample}, index, tmp_path / "t", threads=1, logs={"H": RunLog(tmp_path / "l")})
    assert got is not None
    assert (got["H"].hits, got["H"].fr, got["H"].rf, got["H"].strandedness) == _alone_counts(
        index, sample, tmp_path / "alone"
    )
    assert got["H"].strandedness == "unstranded"


def test_a_batch_is_prepared_with_two_kallisto_calls(sim, tmp_path):
    """prepare_many: the paired runs together (2 calls for the batch), a single-end run alone (3
    more), an unreadable run undecided; every call right, and the samples' folder removed."""
    jobs = [
        quantifier.RunFiles(f"DRR00030{i}", sim["runs"][(s, lay)], RunLog(tmp_path / f"{i}.log"), {"x": i})
        for i, (s, lay) in enumerate([("fr", "PAIRED"), ("rf", "PAIRED"), ("unstranded", "PAIRED"), ("rf", "SINGLE")])
    ]
    broken = tmp_path / "broken.fastq.gz"
    broken.write_bytes(gzip.compress(b"not fastq\n" * 10))
    jobs.append(quantifier.RunFiles("DRR000309", [broken], RunLog(tmp_path / "b.log")))
    q = tmp_path / "q"
    calls = tmp_path / "calls"
    wrapper = tmp_path / "kallisto"  # the real kallisto, each call noted
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexec {shutil.which("kallisto")} "$@"\n')
    wrapper.chmod(0o755)
    out = quantifier.prepare_many(jobs, sim["index"], q, _opts(), Tools(kallisto=str(wrapper)))
    assert calls.read_text().split() == ["pseudo"] * 2 + ["quant"] * 3  # the batch's paired runs, then the single
    assert [out[j.run][0].strandedness for j in jobs] == ["fr", "rf", "unstranded", "rf", "unstranded"]
    assert [out[j.run][0].how for j in jobs] == ["detected"] * 4 + ["undecided"]
    assert out["DRR000301"][1]["x"] == 1 and out["DRR000301"][1]["strand_how"] == "detected"
    assert "cannot be sampled" in (tmp_path / "b.log").read_text()
    assert not q.exists() or not list(q.iterdir()), "the samples' folder was left behind"


def test_a_failing_batch_of_samples_falls_back_to_each_alone(sim, tmp_path):
    """kallisto failing on the batch file (here: an index it cannot read for pseudo, a file that is
    no index) gives None, and prepare_many then maps each sample alone, saying so per run."""
    sample = sample_head(sim["runs"][("fr", "PAIRED")], 1000, tmp_path / "s")
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"no index")
    assert (
        strand.detect_paired({"R": sample}, bad, tmp_path / "t", threads=1, logs={"R": RunLog(tmp_path / "l")}) is None
    )
