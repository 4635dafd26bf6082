"""quant.tool: salmon with real salmon 1.10.1: a run through the pipeline equals a direct
``salmon quant`` on the same files and index, its folder holds salmon's files (read by real
MultiQC) and kallisto's, a truncated input fails, and a whole pipeline run gives merged tables."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, need_tool
from helpers import loopback_species, run_luigi, write_species
from test_multiqc import need_multiqc

from pipeline import finish
from pipeline.inputs.species_config import ConfigError, load_species_config
from pipeline.model import Tools
from pipeline.paths import INDEX, SpeciesPaths
from pipeline.quant import kallisto, merge, multiqc, quantifier, salmon, salmon_quant
from pipeline.runlog import RunLog
from pipeline.tasks import BuildIndex
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

READS = 3000
#: salmon's -l A says U for 20,000 single-end rf reads and SR for 60,000 (measured): it decides on
#: a run's first reads only once it has seen enough of them
READS_SINGLE = 60_000
RUNS = ["DRR000401", "DRR000402"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    need_tool("salmon")
    root = tmp_path_factory.mktemp("salmon")
    pairs = simulate.make_species_dataset(root / "p", "Salmo_pairs", RUNS, "PAIRED", READS, 50, 20, seed=31)
    single = simulate.make_species_dataset(
        root / "s", "Salmo_single", ["DRR000411"], "SINGLE", READS_SINGLE, 50, 20, seed=31, strand="rf"
    )
    index = root / "salmon_index"
    figures = quantifier.build_index("salmon", pairs["transcriptome"], index, root / "index.log", Tools())
    return {"root": root, "index": index, "figures": figures, "pairs": pairs, "single": single}


def _files(d: dict, i: int = 0) -> list[Path]:
    return [Path(f) for f in d["runs"][i]["files"]]


def _quant(ds, files, out: Path, run="DRR000401", **kw):
    kw = {"expected_reads": READS, "verified": True} | kw
    opts = quantifier.QuantOptions(tool="salmon", strand_sample=500)
    return quantifier.quantify(run, files, ds["index"], out, opts, Tools(), log=RunLog(out / "run.log"), **kw)


def test_argument_lists():
    assert salmon.quant_args("idx", ".", ["a_1.fq", "a_2.fq"], threads=2) == [
        "salmon", "quant", "-i", "idx", "-l", "A", "-1", "a_1.fq", "-2", "a_2.fq", "-p", "2", "-o", ".",
    ]  # fmt: skip
    single = salmon.quant_args("idx", "o", ["-r.fq"], libtype="SR", fragment_length=180, fragment_sd=25)
    assert single[single.index("-r") :] == ["-r", "./-r.fq", "--fldMean", "180", "--fldSD", "25", "-p", "1", "-o", "o"]
    assert [salmon.library_type(s, single=False) for s in ("auto", "unstranded", "fr", "rf")] == [
        "A", "IU", "ISF", "ISR",
    ]  # fmt: skip
    assert [salmon.library_type(s, single=True) for s in ("unstranded", "fr", "rf")] == ["U", "SF", "SR"]
    assert [salmon.strandedness_of(t) for t in ("IU", "ISF", "ISR", "U", "SR", "MSF", "", "X")] == [
        "unstranded", "fr", "rf", "unstranded", "rf", "fr", "", "X",
    ]  # fmt: skip
    assert salmon.parse_version("salmon 1.10.1\n") == "1.10.1"


def test_pipeline_run_equals_a_direct_salmon_quant(ds, tmp_path):
    files = _files(ds["pairs"])
    res = _quant(ds, files, tmp_path / "q")
    assert res.ok and res.n_processed == READS, res
    run_dir = tmp_path / "q" / "DRR000401"
    direct = tmp_path / "direct"
    subprocess.run(salmon.quant_args(ds["index"], direct, files), check=True, capture_output=True)
    ours = {r["Name"]: float(r["NumReads"]) for r in csv.DictReader(open(run_dir / "quant.sf"), delimiter="\t")}
    theirs = {r["Name"]: float(r["NumReads"]) for r in csv.DictReader(open(direct / "quant.sf"), delimiter="\t")}
    assert ours.keys() == theirs.keys()
    assert all(abs(ours[t] - theirs[t]) <= 0.01 * max(theirs[t], 1.0) for t in ours), (ours, theirs)
    meta = json.loads((direct / salmon.META_INFO).read_text())
    assert json.loads((run_dir / salmon.META_INFO).read_text())["num_processed"] == meta["num_processed"] == READS
    # salmon's own files where MultiQC looks, and kallisto's two beside them
    for name in ("quant.sf", "cmd_info.json", "lib_format_counts.json", "libParams/flenDist.txt", "aux_info"):
        assert (run_dir / name).exists(), name
    ids, cols = merge.read_abundance(run_dir / "abundance.tsv")
    assert ids == list(ours) and [float(x) for x in cols["est_counts"]] == list(ours.values())
    info = kallisto.read_run_info(run_dir)
    assert info["n_processed"] == READS and info["n_pseudoaligned"] == meta["num_mapped"]
    assert info["quant_backend"] == "salmon"
    rec = json.loads((run_dir / "pipeline_run.json").read_text())
    assert rec["quant_tool"] == "salmon" and rec["library_type"] == "IU" and rec["strandedness"] == "unstranded"
    assert rec["strand_how"] == "salmon -l A" and rec["lite_qualities"] == "yes", rec


def test_salmon_finds_a_stranded_single_end_library(ds, tmp_path):
    res = _quant(ds, _files(ds["single"]), tmp_path / "q", run="DRR000411", expected_reads=READS_SINGLE)
    assert res.ok and res.layout == "SINGLE", res
    rec = json.loads((tmp_path / "q" / "DRR000411" / "pipeline_run.json").read_text())
    assert rec["library_type"] == "SR" and rec["strandedness"] == "rf", rec
    assert rec["salmon_args"][rec["salmon_args"].index("--fldMean") + 1] == "200"


@pytest.mark.parametrize("verified", [True, False], ids=["num_processed", "read-through"])
def test_a_truncated_gzip_fails_although_salmon_exits_0(ds, tmp_path, verified):
    r1, r2 = _files(ds["pairs"])
    cut = tmp_path / "cut_2.fastq.gz"
    cut.write_bytes(r2.read_bytes()[: r2.stat().st_size // 2])
    res = _quant(ds, [r1, cut], tmp_path / "q", verified=verified, expected_reads=READS if verified else None)
    assert res.status == "failed", res
    assert ("salmon processed" if verified else "truncated") in res.reason, res.reason
    assert not (tmp_path / "q" / "DRR000401").exists()
    assert "salmon" in (tmp_path / "q" / "run.log").read_text()


def test_files_without_md5_are_fed_to_salmon_through_fifos_with_the_same_result(ds, tmp_path):
    files = _files(ds["pairs"])
    direct = _quant(ds, files, tmp_path / "direct")
    fed = _quant(ds, files, tmp_path / "fed", verified=False, expected_reads=None)
    assert direct.status == fed.status == "ok", (direct, fed)
    assert fed.n_processed == direct.n_processed == READS
    run = tmp_path / "fed" / "DRR000401"
    assert (run / "quant.sf").read_bytes() == (tmp_path / "direct" / "DRR000401" / "quant.sf").read_bytes()
    rec = json.loads((run / "pipeline_run.json").read_text())
    assert rec["salmon_args"][rec["salmon_args"].index("-1") + 1] == "DRR000401_1.fastq"
    assert not [p for p in run.rglob("*") if p.is_fifo()]
    assert f"read through {READS} spots while salmon ran" in (tmp_path / "fed" / "run.log").read_text()


def test_merge_refuses_runs_of_two_tools_naming_them():
    records = {"R1": {"quant_tool": "salmon"}, "R2": {}, "R3": {"quant_tool": "salmon"}}
    with pytest.raises(finish.SpeciesFailed, match=r"different tools.*salmon: 2 run\(s\) \(R1, R3\); kallisto: 1 run"):
        finish._refuse_mixed_tools("Sp", records)
    finish._refuse_mixed_tools("Sp", {"R1": {"quant_tool": "salmon"}})


def test_the_species_yaml_names_a_wrong_tool_or_strandedness(tmp_path):
    fa = tmp_path / "tx.fa"
    fa.write_text(">t\nACGT\n")
    (tmp_path / "m.tsv").write_text("run_accession\n")
    bad = write_species(tmp_path, "Sp", fa, tmp_path / "m.tsv", quant={"tool": "salmn", "strandedness": "FR"})
    with pytest.raises(ConfigError) as e:
        load_species_config(bad)
    assert "key 'quant.tool' must be one of kallisto, salmon, got 'salmn'" in str(e.value)
    assert "key 'quant.strandedness' must be one of auto, unstranded, fr, rf, got 'FR'" in str(e.value)
    good = load_species_config(write_species(tmp_path, "Sp", fa, tmp_path / "m.tsv"))
    assert (good.quant_tool, good.strandedness, good.strand_sample) == ("kallisto", "auto", 20_000)


@pytest.fixture(scope="module")
def pipeline_out(ds, tmp_path_factory):
    """A whole pipeline run (Luigi, the loopback archive) of the paired species with salmon."""
    base = tmp_path_factory.mktemp("salmon_e2e")
    with FileServer(ds["root"] / "p" / "archive") as server:
        loopback_species(base / "cfg", "Salmo_pairs", ds["pairs"], server, quant={"tool": "salmon"})
        r = run_luigi(base / "cfg", base / "out")
        loopback_species(base / "cfg_kallisto", "Salmo_pairs", ds["pairs"], server)  # the same, kallisto
    assert r.returncode == 0, r.stderr[-3000:]
    return base / "out"


def test_the_index_marker_of_one_tool_is_not_the_others(pipeline_out):
    cfg = pipeline_out.parent
    done = BuildIndex(config_path=str(cfg / "cfg" / "Salmo_pairs.yaml"), output_dir=str(pipeline_out))
    other = BuildIndex(config_path=str(cfg / "cfg_kallisto" / "Salmo_pairs.yaml"), output_dir=str(pipeline_out))
    assert done.complete() and not other.complete()  # quant.tool changed: kallisto's index is built


def test_a_pipeline_run_with_salmon_gives_merged_tables(pipeline_out):
    paths = SpeciesPaths(pipeline_out, "Salmo_pairs")
    marker = json.loads(paths.marker(INDEX).read_text())
    assert marker["quant_tool"] == "salmon" and marker["salmon_version"] == "1.10.1", marker
    assert (paths.salmon_index / "versionInfo.json").is_file() and not paths.index.exists()
    counts = list(csv.reader(open(paths.merged / "Salmo_pairs_est_counts.tsv"), delimiter="\t"))
    assert counts[0] == ["target_id", *RUNS] and len(counts) == 21
    qc = {r["run"]: r for r in csv.DictReader(open(paths.merged / "Salmo_pairs_qc.tsv"), delimiter="\t")}
    assert set(qc) == set(RUNS)
    for row in qc.values():
        assert row["n_processed"] == str(READS) and row["quant_tool"] == "salmon", row
        assert row["library_type"] == "IU" and row["strandedness"] == "unstranded" and row["lite_qualities"] == "yes"
    summary = json.loads(paths.summary.read_text())
    assert summary["tool_versions"]["salmon"] == "1.10.1", summary
    assert (paths.quant / RUNS[0] / f"{RUNS[0]}_run_info.json").is_file()  # amalgkit's names, linked
    rec = json.loads((paths.quant / RUNS[0] / "pipeline_run.json").read_text())
    assert rec["index_md5"] == marker["index_md5"] == salmon_quant.index_md5(paths.salmon_index)
    assert rec["salmon_version"] == "1.10.1" and rec["salmon_args"][:2] == ["salmon", "quant"], rec
    report = (pipeline_out / "report.html").read_text()
    assert 'data-col="strand"' in report and "unstranded (salmon -l A: IU)" in report
    # amalgkit's quant_model.tsv names the backend of each run; salmon's lengths are effective too
    (model,) = (pipeline_out / "merge").glob("*/*_quant_model.tsv")
    rows = list(csv.DictReader(open(model), delimiter="\t"))
    assert [(r["run"], r["backend"], r["length_model"]) for r in rows] == [(run, "salmon", "effective") for run in RUNS]


def test_multiqc_finds_salmon_outputs(pipeline_out, tmp_path):
    cmd = need_multiqc()
    config = multiqc.write_config(pipeline_out)
    report = tmp_path / "mqc"
    r = subprocess.run(
        [*cmd, str(pipeline_out), "-c", str(config), "-o", str(report), "--no-ansi", "-f"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    data = report / "multiqc_data"
    sources = (data / "multiqc_sources.txt").read_text()
    assert "salmon" in sources, sources
    general = list(csv.DictReader(open(data / "multiqc_general_stats.txt"), delimiter="\t"))
    assert sorted(row["Sample"] for row in general) == RUNS, general
