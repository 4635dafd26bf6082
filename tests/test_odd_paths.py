"""Paths holding a double quote, `$(...)`, `;`, spaces, a backslash or unicode, everywhere a tool
runs: kallisto index, kallisto quant, fasterq-dump, and the whole pipeline. Real tools, no mocks.

kallisto 0.48 copies its command line into run_info.json's "call" without escaping it: a quote or
a backslash in a path it is given makes that file invalid JSON. fasterq-dump 3.0.3 names its
files "RUN_1." under an output folder with non-ASCII in its path, and takes an input whose path
holds "%20" for an accession.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_shared, need_tool
from helpers import ROOT, run_luigi, write_metadata, write_species

from pipeline.fetch import sra
from pipeline.quant import kallisto
from pipeline.quant import quantify as quant
from pipeline.runlog import RunLog
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

ODD = {
    "quote": 'say "hi"',
    "subshell": "$(touch PWNED)",
    "semicolon": "a;touch PWNED;b",
    "spaces": "two  spaces ",
    "backslash": "back\\slash\\",
    "unicode": "é 数据",
}
ALL = 'all "of" $(touch PWNED); them\\ é 数据'
NAMES = {**ODD, "all": ALL}
REWRITTEN = "rewritten as valid JSON with the same fields"


def no_pwned(*trees) -> None:
    """No file named PWNED anywhere below ``trees`` (where the tools ran), nor in the folders a
    shell could have started in: a shell ran none of the names."""
    found = [p for t in map(Path, trees) if t.exists() for p in t.rglob("*") if p.name == "PWNED"]
    found += [d / "PWNED" for d in (Path.cwd(), ROOT, Path(tempfile.gettempdir()), Path.home())]
    found = [p for p in found if os.path.lexists(p)]
    assert not found, f"a shell ran a path: {found}"


# --- the argument lists: pure functions, every path one argument ---------------------------------


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_argument_lists_keep_every_path_one_argument(name):
    d = f"/data/{name}"
    idx, out, r1, r2, fa = f"{d}/tx.idx", f"{d}/out", f"{d}/r_1.fq.gz", f"{d}/r_2.fq.gz", f"{d}/tx.fa.gz"
    assert kallisto.quant_args(Path(idx), Path(out), [Path(r1), r2], threads=2, exe=f"{d}/kallisto") == [
        f"{d}/kallisto",
        "quant",
        "-i",
        idx,
        "-o",
        out,
        "-t",
        "2",
        r1,
        r2,
    ]
    single = kallisto.quant_args(idx, out, [r1], single=True, fragment_length=200, fragment_sd=20)
    assert single == ["kallisto", "quant", "-i", idx, "-o", out, "-t", "1", "--single", "-l", "200", "-s", "20", r1]
    assert kallisto.index_args(Path(fa), idx, kmer=23) == ["kallisto", "index", "-i", idx, "-k", "23", fa]
    fqd = sra.fasterq_dump_args(f"{d}/S.sra", f"{d}/o", f"{d}/t", exe="fasterq-dump")
    assert [fqd[fqd.index("-O") + 1], fqd[fqd.index("-t") + 1], fqd[-1]] == [f"{d}/o", f"{d}/t", f"{d}/S.sra"]
    # relative forms, as quantify_run passes them, are single arguments too
    rel = kallisto.quant_args(f"../{name}/tx.idx", ".", [f"../{name}/r_1.fq.gz", f"{name}/r_2.fq.gz"])
    assert rel == ["kallisto", "quant", "-i", f"../{name}/tx.idx", "-o", ".", "-t", "1"] + [
        f"../{name}/r_1.fq.gz",
        f"{name}/r_2.fq.gz",
    ]
    for args in (single, fqd, rel):
        assert all(isinstance(a, str) for a in args)


def test_a_path_is_never_taken_for_an_option():
    assert kallisto.path_arg("-o") == "./-o" and kallisto.path_arg("--single") == "./--single"
    assert kallisto.path_arg(Path("a -b")) == "a -b" and kallisto.path_arg("/-x") == "/-x"
    args = kallisto.quant_args("-i", "-o", ["-t", "--single"])
    assert args == ["kallisto", "quant", "-i", "./-i", "-o", "./-o", "-t", "1", "./-t", "./--single"]
    assert kallisto.index_args("-k", "-i") == ["kallisto", "index", "-i", "./-i", "./-k"]
    with pytest.raises(ValueError):
        kallisto.path_arg("")


def test_relative_to_follows_links(tmp_path):
    (tmp_path / "real" / "quant" / "run").mkdir(parents=True)
    (tmp_path / "genome").mkdir()
    (tmp_path / "genome" / "tx.idx").write_text("x")
    (tmp_path / "q").symlink_to(tmp_path / "real" / "quant")  # a link below the common folder
    rel = kallisto.relative_to(tmp_path / "genome" / "tx.idx", tmp_path / "q" / "run")
    assert (tmp_path / "real" / "quant" / "run" / rel).read_text() == "x"


# --- run_info.json as kallisto 0.48 writes it --------------------------------------------------

KALLISTO_HEAD = (
    '{\n\t"n_targets": 20,\n\t"n_bootstraps": 0,\n\t"n_processed": 2000,\n\t"n_pseudoaligned": 1990,\n'
    '\t"n_unique": 1900,\n\t"p_pseudoaligned": 99.5,\n\t"p_unique": 95.0,\n\t"kallisto_version": "0.48.0",\n'
    '\t"index_version": 10,\n\t"start_time": "Wed Dec  2 14:04:03 2026",\n'
)


@pytest.mark.parametrize(
    "call",
    ['kallisto quant -o /x/say "hi"/o', "kallisto quant -o /x/back\\slash\\", "a\nb\tc", 'ends with "', ""],
)
def test_parse_run_info_recovers_kallistos_fields_from_an_unescaped_call(call):
    text = KALLISTO_HEAD + f'\t"call": "{call}"\n}}\n'
    info, repaired = kallisto.parse_run_info(text)
    assert info["n_processed"] == 2000 and info["n_pseudoaligned"] == 1990 and info["p_pseudoaligned"] == 99.5
    assert info["call"] == call and list(info)[-1] == "call"
    valid = kallisto.run_info_text(info)
    assert json.loads(valid) == info
    assert kallisto.parse_run_info(valid) == (info, False)  # what the pipeline rewrites reads as it is
    try:
        json.loads(text)
    except ValueError:
        assert repaired


def test_parse_run_info_takes_no_figure_from_the_call():
    """A path can turn kallisto's text into valid JSON with other numbers: they are not believed."""
    call = 'kallisto quant -o /x/a", "n_processed": 9, "z": "b'
    text = KALLISTO_HEAD + f'\t"call": "{call}"\n}}\n'
    assert json.loads(text)["n_processed"] == 9  # what a plain JSON reader would believe
    info, repaired = kallisto.parse_run_info(text)
    assert repaired and info["n_processed"] == 2000 and info["call"] == call and "z" not in info


@pytest.mark.parametrize(
    "text",
    [KALLISTO_HEAD + '\t"call": "kallisto quant -o /x/say "hi', KALLISTO_HEAD[:-40], "", "[1, 2]", '{"a": 1,'],
    ids=["truncated-call", "truncated-head", "empty", "list", "broken"],
)
def test_parse_run_info_refuses_anything_else(text):
    with pytest.raises(kallisto.RunInfoError):
        kallisto.parse_run_info(text)


# --- real kallisto on odd paths ------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A simulated run quantified under plain paths: what every odd path must give, byte for byte."""
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("plain")
    ds = simulate.make_species_dataset(
        str(root),
        "Oddus_pathus",
        ["DRR000201"],
        "PAIRED",
        reads_per_run=2000,
        read_len=50,
        n_transcripts=20,
        seed=13,
    )
    index = root / "genome" / "tx.idx"
    quant.build_index(ds["transcriptome"], index, root / "index.log")
    files = [Path(f) for f in ds["runs"][0]["files"]]
    res = quant.quantify_run(
        "DRR000201",
        files,
        index,
        root / "quant",
        threads=1,
        fragment_length=200,
        fragment_sd=20,
        expected_reads=2000,
        verified=True,
        log=RunLog(root / "run.log"),
    )
    assert res.status == "ok", res
    out = root / "quant" / "DRR000201"
    return {
        "root": root,
        "transcriptome": Path(ds["transcriptome"]),
        "files": files,
        "index": index.read_bytes(),
        "abundance": (out / "abundance.tsv").read_bytes(),
        "info": json.loads((out / "run_info.json").read_text()),
    }


def _odd_setup(plain, tmp_path, name, apart):
    """Inputs under ``in/name/``, outputs under ``out/name/``; both under ``name/`` when not
    ``apart``. The input files' names hold ``name`` too when ``apart``."""
    inputs = tmp_path / "in" / name if apart else tmp_path / name / "in"
    outputs = tmp_path / "out" / name if apart else tmp_path / name / "out"
    inputs.mkdir(parents=True)
    prefix = name if apart else ""
    fasta = inputs / f"tx {prefix}.fa.gz"
    shutil.copyfile(plain["transcriptome"], fasta)
    files = []
    for f in plain["files"]:
        files.append(inputs / f"{prefix}{f.name}")
        shutil.copyfile(f, files[-1])
    return fasta, files, outputs


def _quant_odd(run_dir_parent, files, index, log, **kw):
    kw.setdefault("expected_reads", 2000)
    kw.setdefault("verified", True)
    return quant.quantify_run(
        "DRR000201",
        files,
        index,
        run_dir_parent,
        threads=1,
        fragment_length=200,
        fragment_sd=20,
        log=log,
        **kw,
    )


@pytest.mark.parametrize("apart", [False, True], ids=["one-folder", "inputs-apart"])
@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_index_and_quant_on_odd_paths_equal_the_plain_result(plain, tmp_path, name, apart):
    fasta, files, outputs = _odd_setup(plain, tmp_path, name, apart)
    index = outputs / "genome" / f"{name if apart else 'tx'}.idx"
    info = quant.build_index(fasta, index, outputs / "logs" / "index.log")
    assert info["index"] == str(index) and index.read_bytes() == plain["index"]
    assert [p.name for p in index.parent.iterdir()] == [index.name]  # the temp name was renamed
    log = RunLog(outputs / "logs" / "DRR000201.log")
    res = _quant_odd(outputs / "quant", files, index, log)
    assert res.status == "ok", res
    assert (res.n_processed, res.n_pseudoaligned) == (2000, plain["info"]["n_pseudoaligned"])
    assert res.p_pseudoaligned == plain["info"]["p_pseudoaligned"]
    run_dir = outputs / "quant" / "DRR000201"
    assert (run_dir / "abundance.tsv").read_bytes() == plain["abundance"]
    kept = json.loads((run_dir / "run_info.json").read_text(encoding="utf-8"))  # valid JSON for downstream readers
    assert kallisto.read_run_info(run_dir) == kept
    for key in ("n_targets", "n_processed", "n_pseudoaligned", "n_unique", "p_pseudoaligned", "kallisto_version"):
        assert kept[key] == plain["info"][key], key
    assert kept["call"].split(" -o ")[1].startswith(". "), kept["call"]  # run in its own folder
    text = log.path.read_text(encoding="utf-8")
    # kallisto only sees the odd name when the inputs lie outside the output tree; then a quote or
    # a backslash in it leaves run_info.json invalid, and the pipeline rewrites it, saying so
    breaks_json = apart and ('"' in name or "\\" in name)
    assert (REWRITTEN in text) == breaks_json, text
    assert (name in kept["call"]) == apart
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "abundance.tsv",
        "kallisto.log",
        "pipeline_run.json",
        "run_info.json",
    ]
    no_pwned(tmp_path)


def test_kallisto_itself_writes_invalid_json_for_such_paths(plain, tmp_path):
    """What the pipeline works around: kallisto 0.48 given absolute paths holding a quote."""
    d = tmp_path / 'say "hi"'
    d.mkdir()
    index = d / "tx.idx"
    index.write_bytes(plain["index"])
    out = d / "out"
    subprocess.run(
        ["kallisto", "quant", "-i", str(index), "-o", str(out), *map(str, plain["files"])],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    text = (out / "run_info.json").read_text()
    with pytest.raises(ValueError):
        json.loads(text)
    info, repaired = kallisto.parse_run_info(text)
    assert repaired and info["n_processed"] == 2000 and str(out) in info["call"]
    assert kallisto.read_run_info(out)["n_processed"] == 2000  # the merge's reader copes too


@pytest.mark.parametrize("name", [ALL, 'say "hi"'], ids=["all", "quote"])
def test_verification_stays_strict_on_odd_paths(plain, tmp_path, name):
    fasta, files, outputs = _odd_setup(plain, tmp_path, name, apart=True)
    index = outputs / "tx.idx"
    index.parent.mkdir(parents=True)
    index.write_bytes(plain["index"])
    log = RunLog(outputs / "run.log")
    # n_processed (read from the repaired run_info.json) must equal the reads expected
    res = _quant_odd(outputs / "quant", files, index, log, expected_reads=2500)
    assert res.status == "failed" and "kallisto processed 2000 reads but the metadata says 2500" in res.reason
    assert REWRITTEN in log.path.read_text(encoding="utf-8")
    # a truncated gzip, which kallisto quantifies with exit 0, still fails the run
    cut = files[1].with_name(files[1].name + " cut.gz")
    data = files[1].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    res = _quant_odd(outputs / "quant", [files[0], cut], index, log, expected_reads=None, verified=False)
    assert res.status == "failed" and "truncated" in res.reason and cut.name in res.reason
    assert not (outputs / "quant" / "DRR000201").exists()
    assert not list((outputs / "quant").glob(".*.tmp"))
    no_pwned(tmp_path)


def test_single_end_and_a_relative_executable_on_odd_paths(plain, tmp_path, monkeypatch):
    fasta, files, outputs = _odd_setup(plain, tmp_path, ALL, apart=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kallisto").symlink_to(shutil.which("kallisto"))
    monkeypatch.chdir(tmp_path)  # "bin/kallisto" names a file from here, not from kallisto's folder
    index = outputs / "tx.idx"
    quant.build_index(fasta, index, outputs / "index.log", exe="bin/kallisto")
    log = RunLog(outputs / "run.log")
    res = _quant_odd(outputs / "quant", files[:1], index, log, exe="bin/kallisto")
    assert res.status == "ok" and res.layout == "SINGLE" and res.n_processed == 2000, res
    json.loads((outputs / "quant" / "DRR000201" / "run_info.json").read_text(encoding="utf-8"))
    no_pwned(tmp_path)


# --- real fasterq-dump on odd paths --------------------------------------------------------------

FQD_NAMES = {**NAMES, "percent": "100%20done", "percent-b": "a%b"}


@pytest.fixture(scope="module")
def plain_fastq(tmp_path_factory):
    need_tool("fasterq-dump")
    src = need_shared("sra", "SRR600096.sra")
    out = tmp_path_factory.mktemp("fqd-plain")
    paths = sra.sra_to_fastq(src, out / "SRR600096", "SRR600096", compress=False)
    return {"src": src, "files": {p.name: p.read_bytes() for p in paths}}


def _views() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("rnaseq-batch-fqd-*")}


@pytest.mark.parametrize("name", FQD_NAMES.values(), ids=FQD_NAMES.keys())
def test_fasterq_dump_on_odd_paths_gives_the_plain_files(plain_fastq, tmp_path, name):
    src = tmp_path / "in" / name / "SRR600096.sra"
    src.parent.mkdir(parents=True)
    shutil.copyfile(plain_fastq["src"], src)
    dest = tmp_path / "out" / name / "SRR600096"
    log = RunLog(tmp_path / "out" / name / "SRR600096.log")
    before = _views()
    paths = sra.sra_to_fastq(src, dest, "SRR600096", compress=False, log=log)
    assert {p.name: p.read_bytes() for p in paths} == plain_fastq["files"]
    assert sorted(os.listdir(dest)) == sorted(plain_fastq["files"])  # nothing else left beside them
    assert _views() == before  # the links, when used, are gone
    text = log.path.read_text(encoding="utf-8")
    assert ("which fasterq-dump misreads" in text) == (not sra.vdb_safe(src) or not sra.vdb_safe(dest))
    no_pwned(tmp_path)


def test_vdb_safe():
    assert sra.vdb_safe('/a/say "hi"/$(x);y\\z #?:')
    assert not sra.vdb_safe("/a/é") and not sra.vdb_safe("/a/100%20") and not sra.vdb_safe("/a/\n")


# --- the whole pipeline under an odd path ----------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("oddsim")
    ds = simulate.make_species_dataset(
        str(root),
        "Oddus_servus",
        ["DRR000301", "DRR000302"],
        "PAIRED",
        reads_per_run=2000,
        read_len=50,
        n_transcripts=20,
        seed=17,
    )
    return {"root": root, "archive": root / "archive", "ds": ds}


def _pipeline(base: Path, sim, server) -> tuple[Path, Path, list[str]]:
    """Two species under ``base``: one served over HTTP, one of private files beside its YAML,
    and kallisto's executable as a link under ``base`` (``--kallisto-binary``)."""
    cfg, out = base / "config dir", base / "output dir"
    ds = sim["ds"]
    (cfg / "ref").mkdir(parents=True)
    shutil.copyfile(ds["transcriptome"], cfg / "ref" / "tx.fa.gz")
    shutil.copyfile(ds["metadata"], cfg / "served.tsv")
    write_species(
        cfg,
        "Oddus_servus",
        "ref/tx.fa.gz",
        "served.tsv",
        download={"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
    )
    private = cfg / f"own {base.name}"
    private.mkdir()
    rows = []
    for r in ds["runs"]:
        names = []
        for f in r["files"]:
            names.append(f"own {base.name}/{Path(f).name}")
            shutil.copyfile(f, cfg / names[-1])
        rows.append(f"{r['run']}\t{names[0]}\t{names[1]}\n")
    (cfg / "private.tsv").write_text("run\tread1_path\tread2_path\n" + "".join(rows), encoding="utf-8")
    # one kallisto quant per run, whose run_info.json carries its unescaped "call" (checked below);
    # batch quantification writes run_info.json itself
    write_species(cfg, "Oddus_privatus", "ref/tx.fa.gz", "private.tsv", quant={"batch_mode": "per_run"})
    exe = base / "bin dir" / "kallisto"
    exe.parent.mkdir()
    exe.symlink_to(shutil.which("kallisto") or "kallisto")
    return cfg, out, ["--kallisto-binary", str(exe)]


def _tables(out: Path, species: str) -> dict[str, bytes]:
    merged = out / species / "merged"
    return {p.name: p.read_bytes() for p in sorted(merged.glob("*.tsv"))}


def test_whole_pipeline_under_an_odd_path_matches_a_plain_one(tmp_path, sim):
    with FileServer(sim["archive"]) as server:
        results = {}
        for label, base in (("plain", tmp_path / "plain"), ("odd", tmp_path / ALL)):
            cfg, out, extra = _pipeline(base, sim, server)
            r = run_luigi(cfg, out, *extra)
            assert r.returncode == 0, r.stderr[-3000:]
            results[label] = out
    plain, odd = results["plain"], results["odd"]
    for species in ("Oddus_servus", "Oddus_privatus"):
        tables = _tables(odd, species)
        assert sorted(tables) == sorted(f"{species}_{m}.tsv" for m in ("est_counts", "tpm", "eff_length", "qc"))
        assert (odd / species / "merged" / f"{species}.h5ad").is_file()
        assert tables == _tables(plain, species)
        counts = pd.read_csv(odd / species / "merged" / f"{species}_est_counts.tsv", sep="\t")
        assert list(counts.columns) == ["target_id", "DRR000301", "DRR000302"] and len(counts) == 20
        qc = pd.read_csv(odd / species / "merged" / f"{species}_qc.tsv", sep="\t")
        assert qc["n_processed"].tolist() == [2000, 2000]
        for run in ("DRR000301", "DRR000302"):
            q = odd / species / "quant" / run
            assert (q / "abundance.tsv").read_bytes() == (
                plain / species / "quant" / run / "abundance.tsv"
            ).read_bytes()
            info = json.loads((q / "run_info.json").read_text(encoding="utf-8"))
            log = (odd / species / "work" / "logs" / f"{run}.log").read_text(encoding="utf-8")
            exe = str(tmp_path / ALL / "bin dir" / "kallisto")
            # kallisto ran in the batch's or the run's folder: of the odd name it saw only its own
            # executable's path
            if species == "Oddus_servus":  # quant.batch_mode auto: batched, run_info.json written here
                assert info["call"].startswith(shlex.quote(exe) + " pseudo --bus -i ../../genome/"), info["call"]
                assert REWRITTEN not in log
                continue
            # per_run: in "call", unescaped: kallisto's file was rewritten, as the run's log says
            assert info["call"].startswith(exe + " quant -i ../../genome/")
            assert REWRITTEN in log
            assert REWRITTEN not in (plain / species / "work" / "logs" / f"{run}.log").read_text(encoding="utf-8")
    no_pwned(tmp_path, sim["root"])


def test_sra_route_under_an_odd_path(tmp_path):
    """A FASTQ that 404s falls through to the run's .sra, converted by fasterq-dump under an
    output folder whose path holds unicode and '%': kallisto's reference result, byte for byte."""
    need_tool("kallisto")
    need_tool("fasterq-dump")
    src = need_shared("sra", "SRRHOXC.sra")
    transcripts = need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz")
    expected = need_shared("expected", "kallisto048_hoxc_pe_abundance.tsv")
    archive = tmp_path / "archive"
    (archive / "odp" / "sra" / "SRR0000009").mkdir(parents=True)
    shutil.copyfile(src, archive / "odp" / "sra" / "SRR0000009" / "SRR0000009")
    base = tmp_path / (ALL + " 100%20")
    row = {
        "run_accession": "SRR0000009",
        "library_layout": "PAIRED",
        "read_count": "10000",
        "fastq_ftp": "ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000009/SRR0000009_1.fastq.gz;"
        "ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/SRR0000009/SRR0000009_2.fastq.gz",
        "fastq_md5": "0" * 32 + ";" + "1" * 32,
        "fastq_bytes": "100;100",
    }
    meta = write_metadata(base / "cfg" / "meta.tsv", [row])
    odp = "https://sra-pub-run-odp.s3.amazonaws.com/"
    with FileServer(archive) as server:
        write_species(
            base / "cfg",
            "Homo_sapiens",
            transcripts,
            meta,
            download={"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/", odp: server.url + "/odp/"}},
        )
        before = _views()
        r = run_luigi(base / "cfg", base / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    sp = base / "out" / "Homo_sapiens"
    assert (sp / "quant" / "SRR0000009" / "abundance.tsv").read_bytes() == expected.read_bytes()
    log = (sp / "work" / "logs" / "SRR0000009.log").read_text(encoding="utf-8")
    assert "obtained from sra" in log and "which fasterq-dump misreads" in log
    assert _views() == before
    qc = pd.read_csv(sp / "merged" / "Homo_sapiens_qc.tsv", sep="\t")
    assert qc[["run", "source", "n_processed"]].values.tolist() == [["SRR0000009", "sra", 10000]]
    no_pwned(tmp_path)
