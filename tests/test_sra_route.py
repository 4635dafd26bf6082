"""The .sra route end to end: FASTQ missing (404) falls through to the run's .sra file, converted
offline by real fasterq-dump and quantified by real kallisto; bad .sra files are named failures."""
from __future__ import annotations

import shutil

import pandas as pd

from pipeline.fileserver import FileServer

from conftest import need_shared, need_tool
from helpers import run_luigi, write_metadata, write_species

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
        {"run_accession": "SRR0000009", "library_layout": "PAIRED", "read_count": "10000",
         "fastq_ftp": "ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000009/SRR0000009_1.fastq.gz;"
                      "ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000009/SRR0000009_2.fastq.gz",
         "fastq_md5": "0" * 32 + ";" + "1" * 32, "fastq_bytes": "100;100"},
        # no FASTQ at all; the .sra needs remote references and fasterq-dump fails offline
        {"run_accession": "SRR2096940", "library_layout": "PAIRED", "read_count": ""},
        # no FASTQ; the archive answers with an XML error document instead of a .sra
        {"run_accession": "SRR0000010", "library_layout": "SINGLE", "read_count": ""},
    ]
    meta = write_metadata(tmp_path / "cfg" / "meta.tsv", rows)
    with FileServer(archive) as server:
        server.set_fault("/odp/sra/SRR0000010/SRR0000010",
                         body=b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>')
        write_species(tmp_path / "cfg", "Homo_sapiens", transcripts, meta, batch={"size": 3},
                      download={"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/",
                                            ODP: server.url + "/odp/"}})
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
