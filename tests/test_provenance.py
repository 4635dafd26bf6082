"""Provenance in every result: the reference each run was quantified against, kallisto's version and
arguments; and a merge that refuses runs quantified against different references."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import run_luigi, write_species

from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

SPECIES = "Provia_testis"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """One species' reads, and two transcriptomes: the one they came from and a different one."""
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("sim")
    a = simulate.make_species_dataset(root / "a", SPECIES, ["DRR000401", "DRR000402"], "PAIRED", reads_per_run=2000,
                                      read_len=50, n_transcripts=20, seed=31)  # fmt: skip
    # the same transcripts and one more: a new reference the reads still map to
    rng = random.Random(5)
    extra = "".join(rng.choice("ACGT") for _ in range(1500))
    other = root / "b" / "transcripts.fa.gz"
    other.parent.mkdir()
    other.write_bytes(
        gzip.compress(gzip.decompress(Path(a["transcriptome"]).read_bytes()) + f">extra_tx\n{extra}\n".encode())
    )
    return {"a": a, "b": {"transcriptome": other}, "archive": root / "a" / "archive"}


def test_every_run_records_its_reference_and_kallisto(tmp_path, sims):
    with FileServer(sims["archive"]) as server:
        mirrors = {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}
        write_species(tmp_path / "cfg", SPECIES, sims["a"]["transcriptome"], sims["a"]["metadata"],
                      download={"mirrors": mirrors, "sources": ["ena"]})  # fmt: skip
        r = run_luigi(tmp_path / "cfg", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    sp = tmp_path / "out" / SPECIES
    version = subprocess.run(["kallisto", "version"], capture_output=True, text=True).stdout.split()[-1]
    for run in ("DRR000401", "DRR000402"):
        rec = json.loads((sp / "quant" / run / "pipeline_run.json").read_text())
        assert rec["transcriptome_md5"] == _md5(Path(sims["a"]["transcriptome"]))
        assert rec["index_md5"] == _md5(sp / "genome" / "transcriptome.idx")
        assert rec["kallisto_version"] == version
        # two paired runs, quant.batch_mode auto: one kallisto pseudo for both, quant-tcc for each
        assert rec["quant_mode"] == "batch"
        assert rec["kallisto_batch_args"][1:3] == ["pseudo", "--bus"] and rec["kallisto_args"][1] == "quant-tcc"
        assert rec["fastqs"] == [f"{run}_1.fastq.gz", f"{run}_2.fastq.gz"]
    summary = json.loads((sp / "work" / "metadata" / "summary.json").read_text())
    assert summary["tool_versions"]["kallisto"] == version


def test_merge_refuses_runs_quantified_against_different_references(tmp_path, sims):
    """A species re-run with a new transcriptome while the old runs' results stay: no mixed table."""
    out = tmp_path / "out"
    with FileServer(sims["archive"]) as server:
        mirrors = {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}
        meta = Path(sims["a"]["metadata"])
        lines = meta.read_text().splitlines()
        first = tmp_path / "first.tsv"
        first.write_text("\n".join(lines[:2]) + "\n")  # DRR000401 only
        cfg = write_species(tmp_path / "cfg", SPECIES, sims["a"]["transcriptome"], first,
                            download={"mirrors": mirrors, "sources": ["ena"]})  # fmt: skip
        assert run_luigi(tmp_path / "cfg", out).returncode == 0
        # the user swaps the reference and adds a run; the old run's results stay in quant/
        sp = out / SPECIES
        for p in (sp / "work" / "markers").glob("*.json"):
            p.unlink()
        for p in (sp / "genome").iterdir():
            p.unlink()
        write_species(tmp_path / "cfg", SPECIES, sims["b"]["transcriptome"], meta,
                      download={"mirrors": mirrors, "sources": ["ena"]})  # fmt: skip
        r = run_luigi(cfg.parent, out)
    assert r.returncode == 30, r.stderr[-3000:]
    assert "different references" in r.stderr, r.stderr[-3000:]
    line = next(x for x in r.stderr.splitlines() if "different references" in x)
    assert "DRR000401" in line and "DRR000402" in line and line.count("index md5 ") == 2
    assert not (sp / "work" / "markers" / "species.json").exists()
