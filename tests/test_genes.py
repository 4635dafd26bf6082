"""Gene-level tables (pipeline.quant.genes) and the transcript-to-gene map (pipeline.inputs.tx2gene).

The oracle for the tables is pytximport, run on the very ``abundance.tsv`` files kallisto wrote
and that pipeline.quant.merge merged, with R tximport's kallisto settings: the ``tpm`` column is
the abundance (pytximport's own default recomputes TPM from counts for a kallisto TSV), transcript
versions and ``|`` suffixes are kept. The maps are read from real headers (../shared/data) and
from GTF, GFF3 and TSV files written here.
"""

from __future__ import annotations

import gzip
import math
import random
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import need_shared, need_tool

from pipeline.inputs.tx2gene import (
    Tx2Gene,
    load_tx2gene,
    read_tx2gene,
    resolve_tx2gene,
    tx2gene_from_fasta,
    tx2gene_text,
)
from pipeline.model import InputError
from pipeline.quant import genes
from pipeline.quant.merge import merge_species
from pipeline.testing import simulate

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def tximport():
    """pytximport's tximport, or a skip saying why it cannot be had."""
    try:
        from pytximport import tximport
    except ImportError as e:
        pytest.skip(f"pytximport, the oracle, cannot be imported ({e}): pip install 'pytximport>=0.13'")
    return tximport


def _kallisto(*args) -> None:
    r = subprocess.run([need_tool("kallisto"), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def _quant(index: Path, out: Path, files: list, single: bool = False, nothing_aligns: bool = False) -> None:
    """kallisto quant into ``out``. With ``nothing_aligns`` it exits 1 ("zero reads pseudoaligned")
    yet writes abundance.tsv, TPMs ``-nan``: the pipeline fails such a run, but a table holding one
    must still be summarized as tximport would."""
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--single", "-l", "180", "-s", "20"] if single else []
    args = [need_tool("kallisto"), "quant", "-i", index, "-o", out, *extra, *files]
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == (1 if nothing_aligns else 0), r.stderr[-2000:]
    assert (out / "abundance.tsv").is_file()


def _oracle(tximport, files: list[Path], tx2gene_tsv: Path, mode, runs: list[str]) -> dict[str, pd.DataFrame]:
    res = tximport(
        [str(f) for f in files],
        data_type="kallisto",
        transcript_gene_map=str(tx2gene_tsv),
        counts_from_abundance=mode,
        abundance_column="tpm",
        ignore_transcript_version=False,
        ignore_after_bar=False,
        output_type="xarray",
    )
    out = {}
    for key in ("counts", "abundance", "length"):
        df = res[key].to_pandas()
        df.columns = runs
        out[key] = df
    return out


def _ours(merged: Path, species: str, table: str) -> pd.DataFrame:
    return pd.read_csv(merged / f"{species}_{table}.tsv", sep="\t", index_col=0, dtype={"gene_id": str})


def _max_rel(ours: pd.DataFrame, theirs: pd.DataFrame) -> float:
    """The largest relative difference, after checking genes, runs and NaN cells agree."""
    assert sorted(ours.index) == sorted(theirs.index)
    assert list(ours.columns) == list(theirs.columns)
    a, b = ours.to_numpy(float), theirs.loc[ours.index].to_numpy(float)
    assert (np.isnan(a) == np.isnan(b)).all()
    ok = ~np.isnan(a)
    a, b = a[ok], b[ok]
    scale = np.maximum(np.abs(a), np.abs(b))
    rel = np.where(scale > 0, np.abs(a - b) / np.where(scale > 0, scale, 1), 0.0)
    return float(rel.max(initial=0.0))


def _compare(tximport, merged, species, quant_dir, runs, tx2gene_tsv, report) -> None:
    files = [quant_dir / r / "abundance.tsv" for r in runs]
    no = _oracle(tximport, files, tx2gene_tsv, None, runs)
    scaled = _oracle(tximport, files, tx2gene_tsv, "length_scaled_tpm", runs)
    theirs_scaled = scaled["counts"].copy()
    ours_scaled = _ours(merged, species, "gene_counts_length_scaled")
    for run in runs:  # a run without a count: tximport divides 0 by 0, we write 0
        if theirs_scaled[run].isna().all() and (no["counts"][run] == 0).all():
            assert (ours_scaled[run] == 0).all()
            theirs_scaled[run] = 0.0
    diffs = {
        "gene_counts": _max_rel(_ours(merged, species, "gene_counts"), no["counts"]),
        "gene_tpm": _max_rel(_ours(merged, species, "gene_tpm"), no["abundance"]),
        "gene_length": _max_rel(_ours(merged, species, "gene_length"), no["length"]),
        "gene_counts_length_scaled": _max_rel(ours_scaled, theirs_scaled),
    }
    assert _max_rel(_ours(merged, species, "gene_length"), scaled["length"]) <= TOLERANCE
    print(f"\n{report}: max relative difference from pytximport: {diffs}")
    assert all(d <= TOLERANCE for d in diffs.values()), diffs


# -- simulated runs through real kallisto ------------------------------------------------------

# gene -> transcripts (0-based), interleaved so that a gene's rows are apart in the tables
GENES = {
    "gA": [0, 7, 13],
    "gB": [3, 4],
    "gC": [5, 6, 8, 21],
    "gPartial": [15, 16],  # no read in run 2
    "gZero": [17, 18],  # no read in any run
    "gMixed": [19, 20],  # 19 never has a read
    **{f"gS{i}": [i] for i in (1, 2, 9, 10, 11, 12, 14, 22, 23)},
}
NO_GENE = [24, 25]  # 24 has reads, 25 none
RUNS = ["DRR100001", "DRR100002", "DRR100003", "DRR100004", "DRR100005"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Five runs quantified by kallisto and merged: paired, paired without gPartial's reads,
    single-end, paired, and one whose reads come from another transcriptome (none pseudoaligns:
    kallisto writes its TPMs as -nan)."""
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("genes_sim")
    tx = simulate.make_transcriptome(26, 400, 1600, seed=21)
    fasta = root / "transcripts.fa.gz"
    simulate.write_fasta_gz(tx, str(fasta))
    _kallisto("index", "-i", root / "tx.idx", fasta)
    base = simulate.default_abundances(len(tx), seed=21)
    silent = {17, 18, 19, 25}
    quant = root / "quant"
    for k, run in enumerate(RUNS):
        weights = [0.0 if i in silent or (k == 1 and i in (15, 16)) else w for i, w in enumerate(base)]
        rng = random.Random(k)
        weights = [w * rng.lognormvariate(0, 0.4) for w in weights]
        source = tx if k != 4 else simulate.make_transcriptome(5, 400, 900, seed=99)
        if k == 4:
            weights = [1.0] * len(source)
        layout = "SINGLE" if k == 2 else "PAIRED"
        info = simulate.simulate_run(source, str(root / "reads" / run), 3000, 50, layout, 100 + k, abundances=weights)
        _quant(root / "tx.idx", quant / run, info["files"], single=layout == "SINGLE", nothing_aligns=k == 4)
    merged = root / "merged"
    merge_species("Sim", quant, RUNS, merged)
    ids = [name for name, _ in tx]
    tsv = root / "tx2gene.tsv"
    pairs = sorted((ids[i], g) for g, rows in GENES.items() for i in rows)
    tsv.write_text("transcript_id\tgene_id\n" + "".join(f"{t}\t{g}\n" for t, g in pairs))
    figures = genes.write_gene_tables("Sim", merged, read_tx2gene(tsv))
    return {"root": root, "quant": quant, "merged": merged, "ids": ids, "tsv": tsv, "figures": figures}


def test_simulated_gene_tables_match_pytximport(sim, tximport):
    tpm = pd.read_csv(sim["merged"] / "Sim_tpm.tsv", sep="\t", index_col=0)
    assert tpm["DRR100005"].isna().all()  # the run with nothing pseudoaligned
    _compare(tximport, sim["merged"], "Sim", sim["quant"], RUNS, sim["tsv"], "simulated, 5 runs")


def test_simulated_gene_tables_cover_the_length_rules(sim):
    length = _ours(sim["merged"], "Sim", "gene_length")
    tpm = _ours(sim["merged"], "Sim", "gene_tpm")
    counts = _ours(sim["merged"], "Sim", "gene_counts")
    eff = pd.read_csv(sim["merged"] / "Sim_eff_length.tsv", sep="\t", index_col=0)
    ids = sim["ids"]
    # a gene with no TPM in any run: the plain mean of its transcripts' mean effective lengths
    zero = [ids[i] for i in GENES["gZero"]]
    assert (tpm.loc["gZero"] == 0).all()
    assert length.loc["gZero"].tolist() == pytest.approx([eff.loc[zero].mean(axis=1).mean()] * len(RUNS), rel=1e-12)
    # no TPM in run 2 only: the geometric mean of the other runs' lengths
    assert tpm.loc["gPartial", "DRR100002"] == 0 and tpm.loc["gPartial", "DRR100001"] > 0
    others = length.loc["gPartial"].drop(["DRR100002", "DRR100005"])
    assert length.loc["gPartial", "DRR100002"] == pytest.approx(math.exp(np.log(others).mean()), rel=1e-12)
    # the length-scaled counts of a run sum to its gene counts
    scaled = _ours(sim["merged"], "Sim", "gene_counts_length_scaled")
    for run in RUNS:
        assert scaled[run].sum() == pytest.approx(counts[run].sum(), rel=1e-12)
    assert (scaled["DRR100005"] == 0).all()
    # genes in the order of their first transcript
    first = {g: min(rows) for g, rows in GENES.items()}
    assert list(counts.index) == sorted(GENES, key=first.__getitem__)


def test_transcripts_without_gene_are_listed_and_counted(sim):
    f = sim["figures"]
    without = pd.read_csv(sim["merged"] / "Sim_transcripts_without_gene.tsv", sep="\t")
    ids = sim["ids"]
    assert without["target_id"].tolist() == [ids[i] for i in NO_GENE]
    assert set(without["reason"]) == {"not in the map"}
    est = pd.read_csv(sim["merged"] / "Sim_est_counts.tsv", sep="\t", index_col=0)
    assert without["est_counts"].tolist() == pytest.approx(est.loc[[ids[i] for i in NO_GENE]].sum(axis=1).tolist())
    assert without["est_counts"].iloc[0] > 0 and without["est_counts"].iloc[1] == 0
    assert f["transcripts"] == 26 and f["genes"] == len(GENES) and f["transcripts_without_gene"] == 2
    assert f["counts_without_gene"] == pytest.approx(without["est_counts"].sum())
    assert 0 < f["counts_without_gene_fraction"] <= f["counts_without_gene_max_run_fraction"] < 1
    note = genes.without_gene_note(f)
    assert note and "2 of 26 transcripts" in note and "Sim_transcripts_without_gene.tsv" in note
    assert not [p.name for p in sim["merged"].iterdir() if p.name.startswith(".")]


# -- real reads and real RefSeq accessions ----------------------------------------------------

# RefSeq-format descriptions written for the shared HOXC accessions; which accessions share a
# "gene" is this test's choice, not RefSeq's annotation.
HOXC_GENES = {
    "NM_014620": "HXA",
    "NM_153633": "HXA",
    "NM_004503": "HXB",
    "NM_153693": "HXB",
    "NM_001168316": "HXB",
    "NM_006897": "HXC",
    "NM_014212": "HXD",
    "NM_017409": "HXE",
    "NM_017410": "HXE",
    "NM_018953": "HXF",
    "NM_022658": "HXG",
    "NM_173860": "HXG",
    "NM_174914": "HXH",
    "NR_003084": "HXH",
    "NR_031764": "MIRX",
}


def _refseq_header(acc: str, k: int) -> str:
    gene = HOXC_GENES[acc]
    kind = "mRNA" if acc.startswith("NM_") else "long non-coding RNA"
    return f">{acc}.{k % 3 + 1} Homo sapiens homeobox test gene {gene[-1]} ({gene}), transcript variant {k}, {kind}"


def test_hoxc_reads_with_refseq_headers_match_pytximport(tmp_path, tximport):
    reads = need_shared("reads")
    source = need_shared("reference", "hoxc_refseq_transcripts.fasta.gz")
    need_tool("kallisto")
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()
    k = 0
    out = []
    for line in lines:
        if line.startswith(">"):
            k += 1
            out.append(_refseq_header(line[1:].split()[0], k))
        else:
            out.append(line)
    fasta = tmp_path / "hoxc_rna.fna.gz"
    fasta.write_bytes(gzip.compress(("\n".join(out) + "\n").encode()))
    _kallisto("index", "-i", tmp_path / "hoxc.idx", fasta)
    runs = ["SRR900001", "SRR900002", "SRR900003"]
    r1, r2 = reads / "HOXC_1.fastq.gz", reads / "HOXC_2.fastq.gz"
    _quant(tmp_path / "hoxc.idx", tmp_path / "quant" / runs[0], [r1, r2])
    _quant(tmp_path / "hoxc.idx", tmp_path / "quant" / runs[1], [r1], single=True)
    _quant(tmp_path / "hoxc.idx", tmp_path / "quant" / runs[2], [r2], single=True)
    merged = tmp_path / "merged"
    merge_species("HOXC", tmp_path / "quant", runs, merged)

    t2g, _ = resolve_tx2gene(None, fasta)
    assert t2g is not None and t2g.kind == "refseq-fasta" and t2g.without_gene == []
    targets = pd.read_csv(merged / "HOXC_est_counts.tsv", sep="\t")["target_id"].tolist()
    assert sorted(t2g.genes) == sorted(targets)  # kallisto's names: the headers' first words
    assert {t: g for t, g in t2g.genes.items()} == {t: HOXC_GENES[t.split(".")[0]] for t in targets}
    figures = genes.write_gene_tables("HOXC", merged, t2g)
    assert figures["genes"] == len(set(HOXC_GENES.values())) and figures["transcripts_without_gene"] == 0
    tsv = tmp_path / "tx2gene.tsv"
    tsv.write_text(tx2gene_text(t2g))
    assert read_tx2gene(tsv).genes == t2g.genes
    _compare(tximport, merged, "HOXC", tmp_path / "quant", runs, tsv, "HOXC reads, 3 runs")


# -- the map from FASTA headers ----------------------------------------------------------------


def test_yeast_ensembl_cdna_headers():
    path = need_shared("reference", "Saccharomyces_cerevisiae_cdna_amalgkit.fa.gz")
    t2g = tx2gene_from_fasta(path)
    expected = {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                words = line[1:].split()
                expected[words[0]] = next(w[5:] for w in words if w.startswith("gene:"))
    assert t2g.kind == "ensembl-fasta" and t2g.without_gene == []
    assert t2g.genes == expected and len(expected) == 1770
    assert t2g.genes["YLL050C_mRNA"] == "YLL050C"  # the gene id, not gene_symbol:COF1
    assert load_tx2gene(None, path) is not None


@pytest.mark.parametrize("name", ["hoxc_ensembl_transcripts.fasta.gz", "hoxc_refseq_transcripts.fasta.gz"])
def test_hoxc_headers_carry_no_gene(name):
    path = need_shared("reference", name)
    t2g = tx2gene_from_fasta(path)
    ids = [line[1:].split()[0] for line in gzip.decompress(path.read_bytes()).decode().splitlines() if line[:1] == ">"]
    assert t2g.kind == "none" and t2g.genes == {} and t2g.without_gene == ids
    assert load_tx2gene(None, path) is None  # no gene tables, and no error


def _write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_refseq_headers(tmp_path):
    fasta = _write(
        tmp_path / "rna.fna",
        ">NM_006516.4 Homo sapiens solute carrier family 2 (facilitated glucose transporter), member 1 (SLC2A1), mRNA\n"
        "ACGT\n"
        ">XR_001737578.2 PREDICTED: Homo sapiens uncharacterized LOC105378947 (LOC105378947), ncRNA\nACGT\n"
        ">NM_014620.6 Homo sapiens homeobox C4 (HOXC4), transcript variant 1, mRNA\nACGT\n"
        ">NM_153633.3 Homo sapiens homeobox C4 (HOXC4), transcript variant 2, mRNA\nACGT\n"
        ">NR_003084.1 Homo sapiens an RNA without a symbol, long non-coding RNA\nACGT\n"
        ">custom1 a transcript of mine (NOTAGENE), mRNA\nACGT\n",
    )
    t2g = tx2gene_from_fasta(fasta)
    assert t2g.kind == "refseq-fasta"
    assert t2g.genes == {
        "NM_006516.4": "SLC2A1",
        "XR_001737578.2": "LOC105378947",
        "NM_014620.6": "HOXC4",
        "NM_153633.3": "HOXC4",
    }
    assert t2g.without_gene == ["NR_003084.1", "custom1"]


def test_ensembl_and_gencode_headers_gzipped(tmp_path):
    ens = _write(
        tmp_path / "cdna.fa.gz",
        ">ENST00000456328.2 cdna chromosome:GRCh38:1:11869:14409:1 gene:ENSG00000290825.1 "
        "gene_biotype:lncRNA transcript_biotype:lncRNA gene_symbol:DDX11L2\nACGT\n"
        ">ENST00000450305.2 cdna chromosome:GRCh38:1:12010:13670:1 gene:ENSG00000223972.6\nACGT\n"
        ">ENST00000999999.1 cdna scaffold:x:1:2:1\nACGT\n",
        gz=True,
    )
    t2g = tx2gene_from_fasta(ens)
    assert t2g.kind == "ensembl-fasta"
    assert t2g.genes == {"ENST00000456328.2": "ENSG00000290825.1", "ENST00000450305.2": "ENSG00000223972.6"}
    assert t2g.without_gene == ["ENST00000999999.1"]
    gencode = _write(
        tmp_path / "gencode.fa",
        ">ENST00000456328.2|ENSG00000290825.1|-|-|DDX11L2-202|DDX11L2|1657|lncRNA|\nACGT\n"
        ">ENST00000450305.2|ENSG00000223972.6|OTTHUMG00000000961.2|OTTHUMT00000002844.2|DDX11L1-201|DDX11L1|632|"
        "transcribed_unprocessed_pseudogene|\nACGT\n",
    )
    t2g = tx2gene_from_fasta(gencode)
    assert t2g.kind == "gencode-fasta"
    assert list(t2g.genes.values()) == ["ENSG00000290825.1", "ENSG00000223972.6"]
    assert next(iter(t2g.genes)).startswith("ENST00000456328.2|ENSG")  # kallisto's name: the whole first word
    targets = ["ENST00000456328.2|ENSG00000290825.1|-|-|DDX11L2-202|DDX11L2|1657|lncRNA|", "ENST00000450305.2"]
    assert t2g.match(targets) == (["ENSG00000290825.1", "ENSG00000223972.6"], 1)


# -- the map from a user's file ----------------------------------------------------------------

GTF = (
    "#!genome-build GRCh38\n"
    '1\thavana\tgene\t11869\t14409\t.\t+\t.\tgene_id "ENSG00000290825"; gene_version "1"; gene_name "DDX11L2";\n'
    '1\thavana\ttranscript\t11869\t14409\t.\t+\t.\tgene_id "ENSG00000290825"; transcript_id "ENST00000456328"; '
    'gene_name "DDX11L2";\n'
    '1\thavana\texon\t11869\t12227\t.\t+\t.\tgene_id "ENSG00000290825"; transcript_id "ENST00000456328"; '
    "exon_number 1;\n"
    '1\thavana\ttranscript\t12010\t13670\t.\t+\t.\tgene_id "ENSG00000223972"; transcript_id "ENST00000450305";\n'
    '1\tx\tgene\t1\t2\t.\t+\t.\tgene_id "G3"; transcript_id "";\n'
    "1\tx\ttranscript\t1\t2\t.\t+\t.\tgene_id G3; transcript_id T3;\n"
)

GFF3 = (
    "##gff-version 3\n"
    "#!genome-build GRCh38\n"
    "1\tensembl\tlnc_RNA\t11869\t14409\t.\t+\t.\tID=transcript:ENST00000456328;Parent=gene:ENSG00000290825;"
    "Name=DDX11L2-202;transcript_id=ENST00000456328;version=2\n"
    "1\tensembl\tncRNA_gene\t11869\t14409\t.\t+\t.\tID=gene:ENSG00000290825;Name=DDX11L2;gene_id=ENSG00000290825\n"
    "1\tensembl\texon\t11869\t12227\t.\t+\t.\tParent=transcript:ENST00000456328;Name=ENSE00002234944\n"
    "NC_000017.11\tBestRefSeq\tgene\t48546\t48549\t.\t+\t.\tID=gene-HOXC4;Dbxref=GeneID:3221;Name=HOXC4;"
    "gbkey=Gene;gene=HOXC4\n"
    "NC_000017.11\tBestRefSeq\tmRNA\t48546\t48549\t.\t+\t.\tID=rna-NM_014620.6;Parent=gene-HOXC4;"
    "Name=NM_014620.6;gene=HOXC4;product=homeobox C4%2C transcript variant 1;transcript_id=NM_014620.6\n"
    "NC_000017.11\tBestRefSeq\texon\t48546\t48549\t.\t+\t.\tID=exon-NM_014620.6-1;Parent=rna-NM_014620.6;"
    "transcript_id=NM_014620.6\n"
    "NC_000017.11\tGnomon\tmRNA\t1\t9\t.\t+\t.\tID=rna-XM_1.1;Parent=gene-HOXC4\n"
    "NC_000017.11\tx\tpseudogene\t1\t9\t.\t+\t.\tID=gene-P%3B1;Name=P%3B1\n"
    "NC_000017.11\tx\ttranscript\t1\t9\t.\t+\t.\tID=rna-PT1;Parent=gene-P%3B1\n"
    "NC_000017.11\tx\tprimary_transcript\t1\t9\t.\t+\t.\tID=rna-ORPHAN;Parent=gene-UNKNOWN;transcript_id=ORPHAN\n"
    "##FASTA\n>NC_000017.11\nACGT\n"
)


@pytest.mark.parametrize("gz", [False, True])
def test_gtf(tmp_path, gz):
    t2g = read_tx2gene(_write(tmp_path / ("a.gtf.gz" if gz else "a.gtf"), GTF, gz))
    assert t2g.kind == "gtf"
    assert t2g.genes == {"ENST00000456328": "ENSG00000290825", "ENST00000450305": "ENSG00000223972", "T3": "G3"}
    # versioned targets (an Ensembl cDNA's names) match the GTF's unversioned ids
    assert t2g.match(["ENST00000456328.2", "ENST00000450305.2", "ENST0000000001.1"]) == (
        ["ENSG00000290825", "ENSG00000223972", None],
        2,
    )


def test_resolving_a_gtf_against_the_transcriptome(tmp_path):
    gtf = _write(tmp_path / "a.gtf", GTF)
    fasta = _write(tmp_path / "cdna.fa", ">ENST00000456328.2 cdna\nACGT\n>ENST00000450305.2\nACGT\n>NEW1.1\nACGT\n")
    t2g, figures = resolve_tx2gene(gtf, fasta)
    assert t2g is not None
    assert t2g.genes == {"ENST00000456328.2": "ENSG00000290825", "ENST00000450305.2": "ENSG00000223972"}
    assert t2g.without_gene == ["NEW1.1"]
    assert figures == {
        "tx2gene": str(gtf),
        "tx2gene_kind": "gtf",
        "transcripts": 3,
        "transcripts_with_gene": 2,
        "genes": 2,
        "matched_without_version": 2,
    }
    saved = read_tx2gene(_write(tmp_path / "tx2gene.tsv", tx2gene_text(t2g)))
    assert (saved.genes, saved.without_gene, saved.match(["NEW1.1"] + list(t2g.genes))[1]) == (
        t2g.genes,
        ["NEW1.1"],
        0,
    )
    other = _write(tmp_path / "other.fa", ">X1\nACGT\n>X2\nACGT\n")
    with pytest.raises(InputError, match=r"a\.gtf: none of the 2 quantified transcripts has a gene in it"):
        resolve_tx2gene(gtf, other)
    assert resolve_tx2gene(None, other) == (None, {"tx2gene": None, "tx2gene_kind": "none"})


def test_gff3(tmp_path):
    t2g = read_tx2gene(_write(tmp_path / "a.gff3", GFF3))
    assert t2g.kind == "gff3"
    assert t2g.genes == {
        "ENST00000456328": "ENSG00000290825",  # gene_id of the parent, defined after the transcript
        "NM_014620.6": "HOXC4",
        "XM_1.1": "HOXC4",  # no transcript_id: its ID less "rna-"
        "PT1": "P;1",  # percent-decoded
    }
    assert t2g.without_gene == []  # ORPHAN's parent is no gene of the file: not a transcript of a gene


def test_tables_with_and_without_header(tmp_path):
    with_header = _write(tmp_path / "a.tsv", "TXNAME\tGENEID\ntx1\tg1\r\ntx2\tg1\n\n# a comment\ntx3\tNA\n")
    t2g = read_tx2gene(with_header)
    assert (t2g.kind, t2g.genes, t2g.without_gene) == ("tsv", {"tx1": "g1", "tx2": "g1"}, ["tx3"])
    no_header = _write(tmp_path / "b.txt.gz", "tx1\tg1\tGENE_ONE\ntx2\tg2\tGENE_TWO\n", gz=True)
    assert read_tx2gene(no_header).genes == {"tx1": "g1", "tx2": "g2"}
    csv = _write(tmp_path / "c.csv", "transcript_id,gene_id\ntx1,g1\n")
    assert read_tx2gene(csv).genes == {"tx1": "g1"}
    same_twice = _write(tmp_path / "d.tsv", "tx1\tg1\ntx1\tg1\n")
    assert read_tx2gene(same_twice).genes == {"tx1": "g1"}
    roundtrip = _write(tmp_path / "e.tsv", tx2gene_text(t2g))
    again = read_tx2gene(roundtrip)
    assert (again.genes, again.without_gene) == (t2g.genes, t2g.without_gene)
    from_file = load_tx2gene(with_header, tmp_path / "unused.fa")  # the file wins over the headers
    assert from_file is not None and from_file.genes == t2g.genes


def test_match_by_version_needs_one_gene():
    t2g = Tx2Gene({"A.1": "g1", "A.2": "g2", "B.1": "g3", "B.2": "g3"}, "m.tsv", "tsv")
    assert t2g.match(["A.3", "B.3", "A.1"]) == ([None, "g3", "g1"], 1)
    with pytest.raises(InputError, match=r"m\.tsv: none of the 2 quantified transcripts .*'C\.1'"):
        t2g.match(["C.1", "D"])


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, pattern",
    [
        (
            "one.tsv",
            "tx1\tg1\ntx2\ntx3\tg3\n",
            r"one\.tsv, line 2: expected a transcript and a gene, tab-separated: 'tx2'",
        ),
        (
            "two.tsv",
            "tx1\tg1\ntx2\tg2\ntx1\tg9\n",
            r"line 3: transcript 'tx1' is given gene 'g9', but line 1 gave it 'g1'",
        ),
        ("ctl.tsv", "tx1\tg\x01\n", r"ctl\.tsv, line 1: an id holds a control character: 'tx1\\tg\\x01'"),
        ("empty.tsv", "", r"empty\.tsv: the transcript-to-gene file is empty"),
        ("none.tsv", "transcript_id\tgene_id\n", r"none\.tsv: no transcript-to-gene pair in it \(read as tsv\)"),
        ("nogene.tsv", "tx1\t\n", r"nogene\.tsv: no transcript-to-gene pair"),
        ("notx.tsv", "\tg1\n", r"notx\.tsv, line 1: no transcript id"),
        ("bad.gtf", GTF + '1\tx\ttranscript\t1\t2\t.\t+\ttranscript_id "T9";\n', r"bad\.gtf, line 8: expected 9"),
        (
            "bad.gff3",
            "##gff-version 3\n1\tx\tmRNA\t1\t2\t.\t+\t.\tID=a;Parent\n",
            r"line 2: a GFF3 attribute without '='",
        ),
        (
            "twoparents.gff3",
            "##gff-version 3\n1\tx\tgene\t1\t2\t.\t+\t.\tID=g1\n1\tx\tgene\t1\t2\t.\t+\t.\tID=g2\n"
            "1\tx\tmRNA\t1\t2\t.\t+\t.\tID=t1;Parent=g1,g2\n",
            r"line 4: transcript 't1' has parents of two genes",
        ),
        ("noname.fa", ">\nACGT\n", r"noname\.fa, line 1: a FASTA header with no name"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, text, pattern):
    path = _write(tmp_path / name, text)
    reader = tx2gene_from_fasta if name.endswith(".fa") else read_tx2gene
    with pytest.raises(InputError, match=pattern):
        reader(path)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(InputError, match=r"missing\.tsv: cannot read the transcript-to-gene source"):
        read_tx2gene(tmp_path / "missing.tsv")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(b"tx1\tg1\ntx2\tg\xe9ne\n")
    with pytest.raises(InputError, match=r"latin\.tsv, line 2: not UTF-8 text"):
        read_tx2gene(latin)
    corrupt = tmp_path / "corrupt.tsv.gz"
    data = gzip.compress("".join(f"tx{i}\tg{i % 977}\n" for i in range(20000)).encode())
    corrupt.write_bytes(data[: len(data) // 2] + b"garbage")
    with pytest.raises(InputError, match=r"corrupt\.tsv\.gz: cannot be read after line \d+"):
        read_tx2gene(corrupt)
    with pytest.raises(InputError, match=r"no FASTA header"):
        tx2gene_from_fasta(_write(tmp_path / "seq.fa", "ACGT\n"))


def test_a_huge_bad_line_is_quoted_in_bounded_size(tmp_path):
    path = _write(tmp_path / "huge.tsv", "tx1\tg1\n" + "x" * 1_000_000 + "\n")
    with pytest.raises(InputError) as e:
        read_tx2gene(path)
    assert "huge.tsv, line 2" in str(e.value) and len(str(e.value)) < 400


# -- the tables: streaming, atomic, strict -----------------------------------------------------


def _synthetic(merged: Path, n_tx: int, n_runs: int, seed: int = 3) -> Tx2Gene:
    """Merged tables of ``n_tx`` transcripts x ``n_runs`` runs written directly, and a map with
    genes of 1-4 transcripts scattered through the rows."""
    rng = random.Random(seed)
    merged.mkdir(parents=True, exist_ok=True)
    runs = [f"SRR{7000000 + j}" for j in range(n_runs)]
    ids = [f"t{i:05d}" for i in range(n_tx)]
    heads = "target_id\t" + "\t".join(runs) + "\n"
    tables = {m: [heads] for m in ("est_counts", "tpm", "eff_length")}
    for t in ids:
        n = [0.0 if rng.random() < 0.3 else rng.lognormvariate(2, 1.5) for _ in runs]
        length = rng.randint(200, 4000)
        tables["est_counts"].append(t + "\t" + "\t".join(f"{x:.6g}" for x in n) + "\n")
        tables["tpm"].append(t + "\t" + "\t".join(f"{x * 1000 / length:.6g}" for x in n) + "\n")
        tables["eff_length"].append(t + "\t" + "\t".join(f"{length - rng.random() * 150:.6g}" for _ in runs) + "\n")
    for m, lines in tables.items():
        (merged / f"S_{m}.tsv").write_text("".join(lines))
    gene_ids = [f"G{rng.randrange(n_tx // 2):05d}" for _ in ids]
    return Tx2Gene(dict(zip(ids, gene_ids)), "synthetic", "tsv")


def test_memory_is_bounded_by_a_gene_not_by_the_tables(tmp_path):
    t2g = _synthetic(tmp_path, 2000, 300)
    size = (tmp_path / "S_est_counts.tsv").stat().st_size
    tracemalloc.start()
    try:
        figures = genes.write_gene_tables("S", tmp_path, t2g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\npeak traced memory {peak / 1e6:.2f} MB for tables of {size / 1e6:.1f} MB each")
    assert peak < size / 4
    counts = pd.read_csv(tmp_path / "S_gene_counts.tsv", sep="\t", index_col=0)
    est = pd.read_csv(tmp_path / "S_est_counts.tsv", sep="\t", index_col=0)
    expected = est.groupby(pd.Series(t2g.genes)).sum()
    assert figures["genes"] == len(expected) == len(counts)
    assert np.allclose(counts.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-12, atol=0)


def test_values_are_the_sums_to_15_digits(tmp_path):
    merged = tmp_path / "m"
    t2g = _synthetic(merged, 50, 4)
    genes.write_gene_tables("S", merged, t2g)
    text = (merged / "S_gene_tpm.tsv").read_text()
    assert "\t0\t" in text or "\t0\n" in text  # integral values bare, as kallisto writes them

    def table(name: str) -> dict[str, list[float]]:
        lines = (merged / name).read_text().splitlines()[1:]
        return {f[0]: [float(x) for x in f[1:]] for f in (line.split("\t") for line in lines)}

    tpm, ours = table("S_tpm.tsv"), table("S_gene_tpm.tsv")
    expected: dict[str, list[float]] = {}
    for t, g in t2g.genes.items():
        expected[g] = [a + b for a, b in zip(expected[g], tpm[t])] if g in expected else tpm[t]
    assert ours == {g: [float(f"{x:.15g}") for x in xs] for g, xs in expected.items()}


def test_bad_tables_fail_and_leave_the_old_tables(tmp_path):
    t2g = _synthetic(tmp_path, 30, 3)
    genes.write_gene_tables("S", tmp_path, t2g)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("S_gene_*.tsv")}
    tpm = tmp_path / "S_tpm.tsv"
    good = tpm.read_text()
    lines = good.splitlines(keepends=True)
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\tabc\n"
    tpm.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"S_tpm\.tsv, line 6: could not convert string to float"):
        genes.write_gene_tables("S", tmp_path, t2g)
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\n"
    tpm.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"S_tpm\.tsv, line 6: 3 fields, its header has 4"):
        genes.write_gene_tables("S", tmp_path, t2g)
    lines = good.splitlines(keepends=True)
    lines[2] = "other" + lines[2][lines[2].index("\t") :]
    tpm.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"S_tpm\.tsv, line 3: target_id differs"):
        genes.write_gene_tables("S", tmp_path, t2g)
    tpm.write_text("".join(good.splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"differ in rows from line 31"):
        genes.write_gene_tables("S", tmp_path, t2g)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("S_gene_*.tsv")} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_no_runs_gives_tables_of_gene_ids_only(tmp_path):
    for m in ("est_counts", "tpm", "eff_length"):
        (tmp_path / f"E_{m}.tsv").write_text("target_id\ntx1\ntx2\n")
    figures = genes.write_gene_tables("E", tmp_path, Tx2Gene({"tx1": "g1", "tx2": "g1"}, "m", "tsv"))
    assert (tmp_path / "E_gene_counts_length_scaled.tsv").read_text() == "gene_id\ng1\n"
    assert figures["genes"] == 1 and figures["runs"] == 0


def test_empty_tables_and_versionless_map(tmp_path):
    for m in ("est_counts", "tpm", "eff_length"):
        (tmp_path / f"N_{m}.tsv").write_text("target_id\n")  # what merge writes when no run was quantified
    figures = genes.write_gene_tables("N", tmp_path, Tx2Gene({"tx1": "g1"}, "m", "tsv"))
    assert (tmp_path / "N_gene_counts.tsv").read_text() == "gene_id\n" and figures["genes"] == 0
    for m, value in (("est_counts", "5"), ("tpm", "1e+06"), ("eff_length", "150.5")):
        (tmp_path / f"V_{m}.tsv").write_text(f"target_id\tSRR1\ntx1.3\t{value}\n")
    figures = genes.write_gene_tables("V", tmp_path, Tx2Gene({"tx1": "g1"}, "m", "tsv"))
    assert figures["matched_without_version"] == 1 and figures["transcripts_without_gene"] == 0
    assert (tmp_path / "V_gene_counts_length_scaled.tsv").read_text() == "gene_id\tSRR1\ng1\t5\n"
    assert (tmp_path / "V_gene_length.tsv").read_text() == "gene_id\tSRR1\ng1\t150.5\n"
