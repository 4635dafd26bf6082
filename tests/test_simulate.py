"""Tests of the synthetic transcriptome / read simulator (pipeline.testing.simulate)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

# Make ``import pipeline`` work without an installed package or a conftest.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.testing import simulate  # noqa: E402
from pipeline.testing.simulate import (  # noqa: E402
    ena_fastq_dir,
    make_species_dataset,
    make_transcriptome,
    reverse_complement,
    simulate_run,
    write_fasta_gz,
)

KALLISTO = shutil.which("kallisto")


def md5(path):
    with open(path, "rb") as fh:
        return hashlib.md5(fh.read()).hexdigest()


def fastq_records(path):
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    assert len(lines) % 4 == 0
    return [lines[i : i + 4] for i in range(0, len(lines), 4)]


@pytest.fixture(scope="module")
def transcripts():
    return make_transcriptome(20, 400, 1500, seed=11)


def test_make_transcriptome_is_deterministic():
    a = make_transcriptome(12, 300, 900, seed=5)
    assert a == make_transcriptome(12, 300, 900, seed=5)
    assert a != make_transcriptome(12, 300, 900, seed=6)
    assert [name for name, _ in a] == [f"tx{i:04d}" for i in range(1, 13)]
    for _, seq in a:
        assert 300 <= len(seq) <= 900
        assert set(seq) <= set("ACGT")


def test_write_fasta_gz_roundtrip_and_deterministic(tmp_path, transcripts):
    a, b = tmp_path / "a.fa.gz", tmp_path / "b.fa.gz"
    write_fasta_gz(transcripts, str(a))
    write_fasta_gz(transcripts, str(b))
    assert a.read_bytes() == b.read_bytes()
    parsed, name = {}, None
    with gzip.open(a, "rt") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith(">"):
                name = line[1:]
                parsed[name] = ""
            else:
                parsed[name] += line
    assert parsed == dict(transcripts)


@pytest.mark.parametrize("layout", ["PAIRED", "SINGLE"])
def test_simulate_run_is_deterministic(tmp_path, transcripts, layout):
    r1 = simulate_run(transcripts, str(tmp_path / "a" / "SRR1"), 3000, 50, layout, seed=3)
    r2 = simulate_run(transcripts, str(tmp_path / "b" / "SRR1"), 3000, 50, layout, seed=3)
    assert r1["md5"] == r2["md5"]
    for fa, fb in zip(r1["files"], r2["files"]):
        assert open(fa, "rb").read() == open(fb, "rb").read()
    r3 = simulate_run(transcripts, str(tmp_path / "c" / "SRR1"), 3000, 50, layout, seed=4)
    assert r3["md5"] != r1["md5"]


@pytest.mark.parametrize("layout,names", [("PAIRED", ["R_1.fastq.gz", "R_2.fastq.gz"]), ("SINGLE", ["R.fastq.gz"])])
def test_simulate_run_reports_match_files(tmp_path, transcripts, layout, names):
    info = simulate_run(transcripts, str(tmp_path / "R"), 2500, 60, layout, seed=9)
    assert info["files"] == [str(tmp_path / n) for n in names]
    assert info["md5"] == [md5(f) for f in info["files"]]
    assert info["bytes"] == [os.path.getsize(f) for f in info["files"]]
    assert info["read_count"] == 2500
    recs = [fastq_records(f) for f in info["files"]]
    assert all(len(r) == 2500 for r in recs)  # paired files have equal record counts
    assert info["base_count"] == sum(len(rec[1]) for r in recs for rec in r)
    for r in recs:
        for i, (head, seq, plus, qual) in enumerate(r, start=1):
            assert head == f"@R.{i}"
            assert plus == "+"
            assert qual == "I" * len(seq) and len(seq) == 60
    if layout == "PAIRED":
        assert [rec[0] for rec in recs[0]] == [rec[0] for rec in recs[1]]


def test_pairs_come_from_one_fragment_in_fr_orientation(tmp_path, transcripts):
    info = simulate_run(transcripts, str(tmp_path / "P"), 500, 50, "PAIRED", seed=1, fragment_mean=200, fragment_sd=20)
    seqs = [s for _, s in transcripts]
    m1, m2 = (fastq_records(f) for f in info["files"])
    for a, b in zip(m1, m2):
        r1, r2 = a[1], b[1]
        # Mate 1 on one strand, mate 2's reverse complement downstream on the same strand.
        frags = []
        for s in seqs:
            for strand in (s, reverse_complement(s)):
                i = strand.find(r1)
                j = strand.find(reverse_complement(r2))
                if i >= 0 and j >= i:
                    frags.append(j + len(r2) - i)
        assert frags, "pair does not map as a forward-reverse fragment"
        assert any(100 <= f <= 300 for f in frags)


def test_abundances_shape_counts(tmp_path, transcripts):
    weights = [0.0] * len(transcripts)
    weights[2] = 1.0
    info = simulate_run(transcripts, str(tmp_path / "A"), 200, 40, "SINGLE", seed=2, abundances=weights)
    target = transcripts[2][1]
    rc = reverse_complement(target)
    for rec in fastq_records(info["files"][0]):
        assert rec[1] in target or rec[1] in rc


def test_short_transcripts_give_short_reads(tmp_path):
    tx = [("tx0001", "ACGTACGTAC" * 3)]  # 30 bp < read length
    info = simulate_run(tx, str(tmp_path / "S"), 10, 50, "PAIRED", seed=1)
    for f in info["files"]:
        for _, seq, _, qual in fastq_records(f):
            assert len(seq) == len(qual) == 30
    assert info["base_count"] == 10 * 2 * 30


def test_ena_fastq_dir():
    assert ena_fastq_dir("DRR900001") == "vol1/fastq/DRR900/DRR900001"
    assert ena_fastq_dir("SRR1234567") == "vol1/fastq/SRR123/007/SRR1234567"
    assert ena_fastq_dir("ERR12345678") == "vol1/fastq/ERR123/078/ERR12345678"
    assert ena_fastq_dir("SRR123456789") == "vol1/fastq/SRR123/789/SRR123456789"


def test_make_species_dataset_layout_metadata_and_skip(tmp_path):
    root = str(tmp_path / "data")
    args = dict(
        root=root,
        species="Demo_testus",
        accessions=["DRR900001", "DRR900002"],
        layout="PAIRED",
        reads_per_run=1000,
        read_len=50,
        n_transcripts=10,
        seed=42,
    )
    result = make_species_dataset(**args)
    assert not result["skipped"]
    assert os.path.exists(os.path.join(root, "Demo_testus", "transcripts.fa.gz"))
    meta = os.path.join(root, "Demo_testus", "metadata.tsv")
    with open(meta, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    with open(meta) as fh:
        assert fh.readline().rstrip("\n").split("\t") == list(simulate.METADATA_COLUMNS)
    assert [r["run_accession"] for r in rows] == ["DRR900001", "DRR900002"]
    for row in rows:
        acc = row["run_accession"]
        assert row["library_layout"] == "PAIRED"
        assert row["library_strategy"] == "RNA-Seq"
        assert row["library_source"] == "TRANSCRIPTOMIC"
        assert row["read_count"] == "1000"
        assert row["base_count"] == str(1000 * 2 * 50)
        urls = row["fastq_ftp"].split(";")
        assert urls == [f"ftp.sra.ebi.ac.uk/vol1/fastq/DRR900/{acc}/{acc}_{m}.fastq.gz" for m in (1, 2)]
        paths = [os.path.join(root, "archive", u.split("/", 1)[1]) for u in urls]
        assert row["fastq_md5"].split(";") == [md5(p) for p in paths]
        assert row["fastq_bytes"].split(";") == [str(os.path.getsize(p)) for p in paths]
    # Runs differ from each other.
    assert rows[0]["fastq_md5"] != rows[1]["fastq_md5"]

    # Same parameters: nothing rewritten.
    mtimes = {p: os.stat(p).st_mtime_ns for p in _all_files(root)}
    again = make_species_dataset(**args)
    assert again["skipped"]
    assert {p: os.stat(p).st_mtime_ns for p in _all_files(root)} == mtimes

    # A missing file or changed parameters: regenerated (deterministically).
    first_mate_run2 = os.path.join(root, "archive/vol1/fastq/DRR900/DRR900002/DRR900002_1.fastq.gz")
    os.remove(first_mate_run2)
    assert not make_species_dataset(**args)["skipped"]
    assert md5(first_mate_run2) == rows[1]["fastq_md5"].split(";")[0]
    changed = make_species_dataset(**{**args, "reads_per_run": 1200})
    assert not changed["skipped"]
    assert changed["runs"][0]["read_count"] == 1200


def test_make_species_dataset_single(tmp_path):
    root = str(tmp_path)
    make_species_dataset(root, "Demo_s", ["DRR900101"], "SINGLE", 500, 40, 5, seed=1)
    with open(os.path.join(root, "Demo_s", "metadata.tsv"), newline="") as fh:
        (row,) = csv.DictReader(fh, delimiter="\t")
    assert row["library_layout"] == "SINGLE"
    assert row["fastq_ftp"] == "ftp.sra.ebi.ac.uk/vol1/fastq/DRR900/DRR900101/DRR900101.fastq.gz"
    assert os.path.exists(os.path.join(root, "archive/vol1/fastq/DRR900/DRR900101/DRR900101.fastq.gz"))
    assert row["base_count"] == str(500 * 40)


def test_make_demo_data_script(tmp_path):
    import io

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    import make_demo_data

    out = io.StringIO()
    results = make_demo_data.build(str(tmp_path), out=out)
    assert [r["species"] for r in results] == ["Demo_pairedii", "Demo_singularis"]
    text = out.getvalue()
    assert "DRR900004_2.fastq.gz" in text and "DRR900103.fastq.gz" in text
    for species, n in (("Demo_pairedii", 4), ("Demo_singularis", 3)):
        with open(tmp_path / species / "metadata.tsv", newline="") as fh:
            assert len(list(csv.DictReader(fh, delimiter="\t"))) == n
    out = io.StringIO()
    assert all(r["skipped"] for r in make_demo_data.build(str(tmp_path), out=out))
    assert "up to date" in out.getvalue()


def _all_files(root):
    for dirpath, _, names in os.walk(root):
        for n in names:
            yield os.path.join(dirpath, n)


@pytest.mark.skipif(KALLISTO is None, reason="kallisto not installed")
def test_kallisto_pseudoaligns_simulated_reads(tmp_path):
    tx = make_transcriptome(30, 500, 2000, seed=77)
    fasta = str(tmp_path / "tx.fa.gz")
    write_fasta_gz(tx, fasta)
    idx = str(tmp_path / "idx")
    subprocess.run([KALLISTO, "index", "-i", idx, fasta], check=True, capture_output=True)

    paired = simulate_run(tx, str(tmp_path / "DRR1"), 20000, 75, "PAIRED", seed=1)
    single = simulate_run(tx, str(tmp_path / "DRR2"), 20000, 75, "SINGLE", seed=2)
    out_p, out_s = str(tmp_path / "qp"), str(tmp_path / "qs")
    subprocess.run([KALLISTO, "quant", "-i", idx, "-o", out_p, *paired["files"]], check=True, capture_output=True)
    subprocess.run(
        [KALLISTO, "quant", "-i", idx, "-o", out_s, "--single", "-l", "200", "-s", "20", *single["files"]],
        check=True,
        capture_output=True,
    )
    for out, info in ((out_p, paired), (out_s, single)):
        with open(os.path.join(out, "run_info.json")) as fh:
            run_info = json.load(fh)
        assert run_info["n_processed"] == info["read_count"]
        assert run_info["p_pseudoaligned"] > 90
    # Counts follow the (uneven) default abundances: not all transcripts alike.
    with open(os.path.join(out_p, "abundance.tsv")) as fh:
        counts = [float(r["est_counts"]) for r in csv.DictReader(fh, delimiter="\t")]
    assert abs(sum(counts) - 20000) < 1
    assert max(counts) > 5 * min(c for c in counts if c > 0)
