"""Our output tree read by amalgkit itself (0.16.71, ../shared/clients): merge, cstmm and sanity.

The real pipeline runs on a small simulated species served over loopback HTTP (ENA route only);
:mod:`pipeline.quant.amalgkit_layout` then links the runs' files and writes ``{output}/merge/``, and
amalgkit, from a venv of its own (``scripts/amalgkit_venv.sh``, built once and cached), reads it.
The first tests need neither amalgkit nor kallisto.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_shared, need_tool
from helpers import ROOT, run_luigi, write_species

from pipeline.model import tsv_cell
from pipeline.paths import SpeciesPaths
from pipeline.quant import amalgkit_layout as al
from pipeline.quant import merge
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

CLIENTS = ROOT.parent / "shared" / "clients"
TARBALL = CLIENTS / "amalgkit-8c1a759.tar.gz"
SCRIPT = ROOT / "scripts" / "amalgkit_venv.sh"


# -- without amalgkit ----------------------------------------------------------------------------


TOKENS = {
    "Homo sapiens": "Homo_sapiens",
    "  Oryza sativa Japonica Group ": "Oryza_sativa_Japonica_Group",
    "Simulata amalgkit (strain x)": "Simulata_amalgkit_strain_x",
    "Arabidopsis thaliana x A. lyrata": "Arabidopsis_thaliana_x_A._lyrata",
    "_.Weird__  name._": "Weird_name",
    "Café ünïcode": "Caf_n_code",
}
#: names amalgkit refuses (checked against amalgkit's own function in the test that has it)
REFUSED = ["", "   ", "Influenza A virus (A/Puerto Rico/8/1934)", "a\\b", "tab\there", "...", "__"]


@pytest.mark.parametrize("name, token", TOKENS.items())
def test_species_token_is_amalgkits(name, token):
    assert al.species_token(name) == token


@pytest.mark.parametrize("name", REFUSED)
def test_species_token_refuses_what_amalgkit_refuses(name):
    with pytest.raises(ValueError):
        al.species_token(name)


def _fake_run(quant: Path, run: str, counts: list[float]) -> Path:
    d = quant / run
    d.mkdir(parents=True)
    lines = ["target_id\tlength\teff_length\test_counts\ttpm"]
    lines += [f"tx{i}\t1000\t851\t{c:g}\t{c * 10:g}" for i, c in enumerate(counts, 1)]
    (d / "abundance.tsv").write_text("\n".join(lines) + "\n")
    (d / "run_info.json").write_text(json.dumps({"n_processed": 100, "p_pseudoaligned": 87.5}))
    return d


def test_link_run_files_hard_links_idempotent_and_replaces_a_stale_link(tmp_path):
    d = _fake_run(tmp_path / "quant", "SRR1", [1, 2])
    links = al.link_run_files(d, "SRR1")
    assert [p.name for p in links] == ["SRR1_abundance.tsv", "SRR1_run_info.json"]
    assert os.path.samefile(d / "abundance.tsv", links[0]) and os.path.samefile(d / "run_info.json", links[1])
    inode = links[0].stat().st_ino
    assert al.link_run_files(d, "SRR1") == links and links[0].stat().st_ino == inode  # nothing redone
    # kallisto's file replaced (a new inode): the link follows it
    (d / "new").write_text("target_id\tlength\teff_length\test_counts\ttpm\n")
    os.replace(d / "new", d / "abundance.tsv")
    al.link_run_files(d, "SRR1")
    assert os.path.samefile(d / "abundance.tsv", d / "SRR1_abundance.tsv")
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["abundance.tsv", "run_info.json", "SRR1_abundance.tsv", "SRR1_run_info.json"]
    ), "a temporary name was left behind"
    with pytest.raises(FileNotFoundError):
        al.link_run_files(tmp_path / "quant" / "nothing", "nothing")
    with pytest.raises(ValueError):
        al.link_run_files(d, "../SRR1")


def _tables(tmp_path: Path, runs: list[str], name="Sp") -> dict:
    merged = tmp_path / "merged"
    merged.mkdir(parents=True, exist_ok=True)
    out = {}
    for m in al.MEASURES:
        p = merged / f"{name}_{m}.tsv"
        p.write_text(
            "\t".join(["target_id", *runs])
            + "\n"
            + "\n".join(f"tx{i}\t" + "\t".join(str(i + j) for j in range(len(runs))) for i in range(3))
            + "\n"
        )
        out[m] = p
    return out


ODD = ['say "hi"', "tab\there", "line\nbreak", "back\\slash", "|pipe|", "it's", "   ", "NA", "\u2028sep", "#hash"]


def test_write_merge_dir_links_same_tables_converts_others_and_writes_a_valid_tsv(tmp_path):
    out = tmp_path / "out"
    a = _tables(tmp_path / "a", ["R1", "R2", "R3"], "A")
    b = _tables(tmp_path / "b", ["R5", "R4"], "B")  # column order not the rows' order: converted
    rows_a = [
        {"run": "R1", "exclusion": "no", "sample_title": ODD[0], "odd": ODD[1]},
        {"run": "R2", "exclusion": "", "sample_title": ODD[2], "odd": ODD[3]},  # blank: amalgkit's "no"
        {"run": "R3", "exclusion": "failed_quantification", "odd": ODD[4]},  # its column is left out
        {"run": "R9", "exclusion": "not_selected", "odd": ODD[5]},
    ]
    rows_b = [{"run": "R4", "exclusion": "no", "odd": o} for o in ODD[6:7]] + [
        {"run": "R5", "exclusion": "no", "odd": "\n".join(ODD)},
        {"run": "R1", "exclusion": "no"},  # listed by A already: left out
    ]
    result = al.write_merge_dir(
        out,
        [
            ("A", "Alpha one", a, rows_a),
            al.SpeciesTables("B", "Beta/two", b, rows_b),  # a '/': an explicit species_token
            ("C", "Alpha  one", a, [{"run": "R7", "exclusion": "no"}]),  # token of A's: left out
        ],
    )
    merge = out / "merge"
    assert result["left_out"].keys() == {"C"}
    assert result["species"]["A"]["tables"] == dict.fromkeys(al.MEASURES, "converted")  # R3 dropped
    assert result["species"]["B"]["tables"] == dict.fromkeys(al.MEASURES, "converted")
    assert (merge / "Alpha_one" / "Alpha_one_est_counts.tsv").read_text().splitlines()[0] == "target_id\tR1\tR2"
    assert (merge / "Beta_two" / "Beta_two_tpm.tsv").read_text().splitlines()[:2] == ["target_id\tR4\tR5", "tx0\t1\t0"]
    assert (merge / "Alpha_one" / "Alpha_one_quant_model.tsv").read_text() == (
        "run\tbackend\tlength_model\nR1\tkallisto\teffective\nR2\tkallisto\teffective\n"
    )
    # the metadata: one line per row, every row as wide as the header, read back by csv and pandas
    text = (merge / "metadata.tsv").read_text()
    lines = text.splitlines()
    assert len(lines) == 1 + 4 + 2
    header = lines[0].split("\t")
    assert header[: len(al.AMALGKIT_COLUMNS)] == list(al.AMALGKIT_COLUMNS)
    assert header[-1] == "species_token"
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    assert all(None not in r and len(r) == len(header) for r in rows)
    assert [r["run"] for r in rows] == ["R1", "R2", "R3", "R9", "R4", "R5"]
    assert [r["exclusion"] for r in rows][:2] == ["no", "no"]
    assert {r["scientific_name"] for r in rows} == {"Alpha one", "Beta/two"}
    assert [r["species_token"] for r in rows] == ["", "", "", "", "Beta_two", "Beta_two"]
    assert rows[0]["sample_title"] == tsv_cell(ODD[0]) == 'say "hi"'
    assert rows[-1]["odd"] == tsv_cell("\n".join(ODD))
    df = pd.read_csv(merge / "metadata.tsv", sep="\t", dtype=str, keep_default_na=False)  # as amalgkit reads it
    assert df.shape == (6, len(header)) and df["odd"].tolist()[:6] == [
        tsv_cell(r.get("odd")) for r in rows_a + rows_b[:2]
    ]
    assert not [p for p in merge.rglob("*") if ".tmp" in p.name]

    # A's rows now match its table: hard links; the folder of a species that went is removed
    rows_a[2]["exclusion"] = "no"
    result = al.write_merge_dir(out, [("A", "Alpha one", a, rows_a)])
    assert result["species"]["A"]["tables"] == dict.fromkeys(al.MEASURES, "linked")
    assert os.path.samefile(a["tpm"], merge / "Alpha_one" / "Alpha_one_tpm.tsv")
    assert not (merge / "Beta_two").exists()
    result = al.write_merge_dir(out, [("A", "Alpha one", a, rows_a)])
    assert result["species"]["A"]["tables"] == dict.fromkeys(al.MEASURES, "kept")


def _states(**kw) -> dict:
    return {run: al.RunState(*v) if isinstance(v, tuple) else v for run, v in kw.items()}


def test_species_rows_map_a_real_ena_filereport_row():
    path = need_shared("metadata", "ena_filereport_SRR9320616_fetchngs_usage.tsv")
    name, rows, fmt = al.species_rows(path, _states(SRR9320616=("quantified", "", 91.2, "PAIRED")), "Mus_musculus")
    assert (name, fmt, len(rows)) == ("Mus musculus", "ena", 1)
    r = rows[0]
    expect = {
        "run": "SRR9320616",
        "scientific_name": "Mus musculus",
        "lib_layout": "paired",
        "total_spots": "120996825",
        "total_bases": "11857688850",
        "exclusion": "no",
        "is_sampled": "yes",
        "mapping_rate": 91.2,
        "bioproject": "PRJNA549480",
        "biosample": "SAMN12086751",
        "experiment": "SRX6088086",
        "sra_study": "SRP201778",
        "sra_sample": "SRS4989433",
        "sra_primary": "SRA900583",
        "taxid": "10090",
        "instrument": "Illumina HiSeq 2500",
        "platform": "ILLUMINA",
        "sample_title": "Old 3 Kidney",
        "sample_group": "Old 3 Kidney",
        "lib_strategy": "RNA-Seq",
    }
    assert {k: r.get(k) for k in expect} == expect


def test_species_rows_map_real_runinfo_rows_with_a_failure():
    path = need_shared("metadata", "sra_runinfo_SRX079566_research_parasite_README.csv")
    states = _states(
        SRR292241=("quantified", "", 80.0, "PAIRED"), SRR390728=("failed", "quant: kallisto quant exited 1")
    )
    name, rows, fmt = al.species_rows(path, states, "Homo_sapiens")
    assert (name, fmt) == ("Homo sapiens", "runinfo")
    got = [
        {k: r[k] for k in ("run", "lib_layout", "total_spots", "exclusion", "mapping_rate", "NCBI_Link")} for r in rows
    ]
    assert got[0] == {
        "run": "SRR292241",
        "lib_layout": "paired",
        "total_spots": "9721384",
        "exclusion": "no",
        "mapping_rate": 80.0,
        "NCBI_Link": "https://sra-downloadb.be-md.ncbi.nlm.nih.gov/sos5/sra-pub-run-32/SRR000/292/SRR292241/SRR292241.3",
    }
    assert got[1]["exclusion"] == "failed_quantification" and got[1]["mapping_rate"] is None
    assert rows[1]["exclusion_detail"] == "quant: kallisto quant exited 1"
    assert rows[0]["bioproject"] == "PRJNA172563" and rows[0]["sra_sample"] == "SRS212581"


def test_species_rows_pass_an_amalgkit_table_through():
    path = need_shared("metadata", "amalgkit_metadata_yeast_14runs.tsv")
    src = list(csv.DictReader(open(path, newline=""), delimiter="\t"))
    sampled = [r["run"] for r in src if r["is_sampled"] == "yes"]
    states = {r["run"]: al.RunState("skipped", "is_sampled=no") for r in src if r["run"] not in sampled}
    states |= {run: al.RunState("quantified", mapping_rate=50.0 + i) for i, run in enumerate(sampled)}
    states[sampled[0]] = al.RunState("failed", "download: 404")
    name, rows, fmt = al.species_rows(path, states, "yeasts")
    assert fmt == "amalgkit" and name == "Schizosaccharomyces pombe"  # 4 of the 8 sampled rows each: the first
    assert [r["run"] for r in rows] == [r["run"] for r in src]
    for old, new in zip(src, rows):
        kept = {k: v for k, v in old.items() if k not in ("exclusion", "is_sampled", "mapping_rate", "scientific_name")}
        assert {k: new[k] for k in kept} == kept, "a column was not passed through"
        assert new["scientific_name"] == name
        assert new.get("original_scientific_name", name) == old["scientific_name"]
        if old["run"] not in sampled:
            assert (new["exclusion"], new["is_sampled"], new["mapping_rate"]) == ("no", "no", old["mapping_rate"])
    assert rows[1]["exclusion"] == "failed_quantification"
    assert [r["mapping_rate"] for r in rows if r["run"] in sampled[1:]] == [51.0 + i for i in range(len(sampled) - 1)]


def _species_tree(out: Path, species: str, name: str, runs: list[str], failed: str) -> SpeciesPaths:
    """A finished species as the pipeline leaves it: ENA table, plan, kallisto files, merged tables."""
    sp = SpeciesPaths(out, species)
    table = out.parent / f"{species}.tsv"
    rows = [f"{r}\tPAIRED\t{name}\t100\t10000" for r in runs]
    table.write_text(
        "run_accession\tlibrary_layout\tscientific_name\tread_count\tbase_count\n" + "\n".join(rows) + "\n"
    )
    sp.markers.mkdir(parents=True)
    (sp.markers / "split.json").write_text(json.dumps({"metadata": str(table)}))
    sp.metadata.mkdir(parents=True)
    (sp.runs_table).write_text("run\tlayout\n" + "".join(f"{r}\tPAIRED\n" for r in runs))
    (sp.skipped_table).write_text("run\treason\n")
    marker = {"runs": [{"run": failed, "status": "failed", "stage": "quant", "reason": 'kallisto said "no"\\x\n'}]}
    (sp.batch_marker("quant", 0)).write_text(json.dumps(marker))
    done = [r for r in runs if r != failed]
    for i, run in enumerate(done):
        _fake_run(sp.quant, run, [i + 1, 2 * i])
    merge.merge_species(species, sp.quant, runs, sp.merged)
    return sp


def test_publish_species_from_workers_at_once_keeps_every_species(tmp_path):
    """Species finishing at once each rewrite merge/ from every species' saved rows, under the lock."""
    out = tmp_path / "out"
    a = _species_tree(out, "Sp_a", "Alpha alpha", ["SRR10", "SRR11", "SRR12"], "SRR11")
    b = _species_tree(out, "Sp_b", "Beta beta", ["ERR20", "ERR21"], "ERR20")
    with ThreadPoolExecutor(4) as pool:  # flock excludes threads too: each opens the lock anew
        results = list(pool.map(al.publish_species, [a, b] * 4))
    assert {r["token"] for r in results} == {"Alpha_alpha", "Beta_beta"}
    meta = pd.read_csv(out / "merge" / "metadata.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert meta["run"].tolist() == ["SRR10", "SRR11", "SRR12", "ERR20", "ERR21"]
    assert meta["exclusion"].tolist() == ["no", "failed_quantification", "no", "failed_quantification", "no"]
    assert (
        meta["exclusion_detail"][1] == tsv_cell('quant: kallisto said "no"\\x\n') == 'quant: kallisto said "no"\\\\x\\n'
    )
    assert meta["mapping_rate"].tolist() == ["87.5", "", "87.5", "", "87.5"]
    assert sorted(p.name for p in (out / "merge").iterdir()) == ["Alpha_alpha", "Beta_beta", "metadata.tsv"]
    assert (out / "merge" / "Beta_beta" / "Beta_beta_est_counts.tsv").read_text().splitlines()[0] == "target_id\tERR21"
    for sp, run in ((a, "SRR12"), (b, "ERR21")):
        assert os.path.samefile(sp.run_quant(run) / "abundance.tsv", sp.run_quant(run) / f"{run}_abundance.tsv")


# -- with amalgkit -------------------------------------------------------------------------------


def _install_failed(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {what}")
    pytest.skip(what)


@pytest.fixture(scope="module")
def amalgkit() -> str:
    """The amalgkit executable of the venv ``scripts/amalgkit_venv.sh`` builds (once) and caches."""
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} is absent: amalgkit's source lives in ../shared/clients beside the project")
    if not shutil.which("flock"):
        _install_failed("flock (util-linux) is not on PATH: scripts/amalgkit_venv.sh needs it")
    args = ["bash", str(SCRIPT)] + ([os.environ["AMALGKIT_VENV"]] if os.environ.get("AMALGKIT_VENV") else [])
    env = dict(os.environ)
    env.setdefault("AMALGKIT_PYTHON", sys.executable)
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=1800, env=env)
    except subprocess.TimeoutExpired:
        _install_failed("building amalgkit's venv took more than 30 minutes")
    if r.returncode != 0:
        said = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("WARNING: Location"))
        _install_failed(
            f"amalgkit's packages cannot be had (scripts/amalgkit_venv.sh exit {r.returncode}): {said[-1500:]}"
        )
    exe = r.stdout.strip().splitlines()[-1]
    assert os.access(exe, os.X_OK), r.stdout
    return exe


def _run(amalgkit: str, *args, cwd=None) -> str:
    r = subprocess.run(
        [amalgkit, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=dict(os.environ, MPLBACKEND="Agg"),
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"amalgkit {args[0]} exited {r.returncode}:\n{out[-4000:]}"
    return out


def _fasta(path) -> list[tuple[str, str]]:
    records, name, seq = [], None, []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if name is not None:
                    records.append((name, "".join(seq)))
                name, seq = line[1:].split()[0], []
            else:
                seq.append(line.strip())
    if name is not None:
        records.append((name, "".join(seq)))
    return records


SPECIES = "Sim_ak"
NAME = "Simulata amalgkit (strain x)"  # not our folder's name, and not a token as it stands
TOKEN = "Simulata_amalgkit_strain_x"
RUNS = [f"DRR00010{i}" for i in range(1, 6)]
FAILED = "DRR000102"  # its download is corrupt; DRR000105 is left out by max_runs
TITLES = ['liver "left"\tlobe', "a\nb", "back\\slash", "it's |x|"]


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """The pipeline's output for 5 paired runs: one fails (a corrupt download), one is left out by
    ``max_runs``, three are quantified against an index that lacks 3 of the 30 transcripts (so
    some reads do not map). Then :func:`publish_species` puts it in amalgkit's layout."""
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("ak")
    ds = simulate.make_species_dataset(
        str(root / "sim"),
        "Simulata_amalgkit",
        RUNS,
        "PAIRED",
        reads_per_run=2000,
        read_len=50,
        n_transcripts=30,
        seed=11,
    )
    transcripts = root / "transcripts.fa.gz"
    simulate.write_fasta_gz(_fasta(ds["transcriptome"])[:-3], str(transcripts))
    meta = pd.read_csv(ds["metadata"], sep="\t", dtype=str)
    meta["scientific_name"] = NAME
    meta["sample_title"] = TITLES + ["plain"]
    meta["tissue_type"] = ["", "", "", "kidney", ""]
    meta.to_csv(root / "meta.tsv", sep="\t", index=False)  # pandas quotes the tab and the newline
    with FileServer(root / "sim" / "archive") as server:
        server.set_fault(f"/vol1/fastq/DRR000/{FAILED}/{FAILED}_2.fastq.gz", corrupt=True)
        write_species(
            root / "cfg",
            SPECIES,
            transcripts,
            root / "meta.tsv",
            metadata={"file": str(root / "meta.tsv"), "max_runs": 4},
            download={"sources": ["ena"], "mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
        )
        out = root / "out"
        r = run_luigi(root / "cfg", out)
    assert r.returncode != 0 and FAILED in r.stderr, r.stderr[-3000:]  # the corrupt run fails the species
    sp = SpeciesPaths(out, SPECIES)
    quantified = sorted(p.name for p in sp.quant.iterdir() if not p.name.startswith("."))
    assert quantified == ["DRR000101", "DRR000103", "DRR000104"], r.stderr[-3000:]
    # the pipeline published the species itself, failed run and all: its summary says what it wrote
    published = json.loads(sp.summary.read_text())["amalgkit"]
    return {"root": root, "out": out, "paths": sp, "quantified": quantified, "published": published}


def test_published_tree(output):
    sp, out = output["paths"], output["out"]
    published = output["published"]
    assert published["merge_dir"] == str(out.resolve() / "merge")
    assert {k: published[k] for k in ("species", "scientific_name", "format", "token", "runs", "linked_runs")} == {
        "species": SPECIES,
        "scientific_name": NAME,
        "format": "ena",
        "token": TOKEN,
        "runs": 3,
        "linked_runs": 3,
    }
    assert published["tables"] == dict.fromkeys(al.MEASURES, "linked") and "left_out" not in published
    entry = json.loads((sp.metadata / "amalgkit.json").read_text())
    assert [r["run"] for r in entry["rows"]] == RUNS
    for run in output["quantified"]:
        d = sp.run_quant(run)
        assert os.path.samefile(d / "abundance.tsv", d / f"{run}_abundance.tsv")
        assert os.path.samefile(d / "run_info.json", d / f"{run}_run_info.json")
    for m in al.MEASURES:
        assert os.path.samefile(sp.merged / f"{SPECIES}_{m}.tsv", out / "merge" / TOKEN / f"{TOKEN}_{m}.tsv")
    meta = pd.read_csv(out / "merge" / "metadata.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert meta["run"].tolist() == RUNS
    assert meta["exclusion"].tolist() == ["no", "failed_quantification", "no", "no", "not_selected"]
    assert meta["is_sampled"].tolist() == ["yes", "yes", "yes", "yes", "no"]
    assert meta["sample_group"].tolist() == [
        tsv_cell(TITLES[0]),
        tsv_cell(TITLES[1]),
        tsv_cell(TITLES[2]),
        "kidney",
        "plain",
    ]
    assert set(meta["lib_layout"]) == {"paired"} and set(meta["total_spots"]) == {"2000"}
    assert "md5 mismatch" in meta["exclusion_detail"][1] and meta["exclusion_detail"][4] == "max_runs=4"
    rates = pd.to_numeric(meta["mapping_rate"]).tolist()
    assert all(0 < r < 100 for r in rates[0:1] + rates[2:4]) and pd.isna(rates[1]) and pd.isna(rates[4])


def test_amalgkit_merge_cstmm_and_sanity_read_our_output(output, amalgkit, tmp_path):
    out, sp = output["out"], output["paths"]
    meta_path = out / "merge" / "metadata.tsv"
    n = len(output["quantified"])

    # merge: from the species' quant/ (it writes OUT/SPECIES/merge/), into tables equal to ours
    text = _run(amalgkit, "merge", "--out_dir", sp.root, "--metadata", meta_path, "--threads", "1")
    assert f"Detected {n} quant abundance files across all runs." in text
    assert f"{n} quant outfiles were detected." in text
    theirs, ours = sp.root / "merge" / TOKEN, out / "merge" / TOKEN
    for m in al.MEASURES:
        a = pd.read_csv(theirs / f"{TOKEN}_{m}.tsv", sep="\t")
        b = pd.read_csv(ours / f"{TOKEN}_{m}.tsv", sep="\t")
        assert list(a.columns) == ["target_id", *output["quantified"]]
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    qm = f"{TOKEN}_quant_model.tsv"
    assert (theirs / qm).read_bytes() == (ours / qm).read_bytes()
    a = pd.read_csv(sp.root / "merge" / "metadata.tsv", sep="\t")
    b = pd.read_csv(meta_path, sep="\t")
    assert a["run"].tolist() == b["run"].tolist()
    assert a["mapping_rate"].tolist() == pytest.approx(b["mapping_rate"].tolist(), nan_ok=True, abs=0)
    assert a["exclusion"].tolist() == b["exclusion"].tolist()

    # cstmm: our merge folder as its --dir_count; every quantified run keeps exclusion=no
    ak_out = tmp_path / "amalgkit"
    text = _run(amalgkit, "cstmm", "--out_dir", ak_out, "--dir_count", out / "merge")
    assert "Only one species was detected" in text
    cst = pd.read_csv(ak_out / "cstmm" / "metadata.tsv", sep="\t")
    assert cst.loc[cst["run"].isin(output["quantified"]), "exclusion"].tolist() == ["no"] * n
    assert cst["tmm_normalization_factor"].notna().sum() == n
    counts = pd.read_csv(ak_out / "cstmm" / TOKEN / f"{TOKEN}_cstmm_counts.tsv", sep="\t")
    assert list(counts.columns) == ["target_id", *output["quantified"]]

    # sanity: every sampled, included run's quant output is found
    text = _run(
        amalgkit,
        "sanity",
        "--out_dir",
        ak_out,
        "--metadata",
        meta_path,
        "--quant",
        "--quant_dir",
        sp.quant,
        "--quiet",
        "yes",
    )
    assert f"quant: {n}/{n} runs available" in text, text[-3000:]
    summary = pd.read_csv(ak_out / "sanity" / "sanity_summary.tsv", sep="\t")
    row = summary.set_index("check").loc["quant"]
    assert (row["available_count"], row["unavailable_count"]) == (n, 0)

    # amalgkit's own reader of the metadata sees the values we wrote, odd ones included; and its
    # own species token is ours
    script = (
        "import argparse, json, sys\n"
        "from amalgkit.metadata_utils import load_metadata\n"
        "from amalgkit.runtime_utils import normalize_species_token\n"
        "def token(name):\n"
        "    try:\n"
        "        return normalize_species_token(name)\n"
        "    except ValueError:\n"
        "        return None\n"
        "print(json.dumps([token(n) for n in json.loads(sys.argv[2])]))\n"
        "m = load_metadata(argparse.Namespace(metadata=sys.argv[1], out_dir='.'))\n"
        "print(json.dumps(m.df[['run', 'sample_group', 'scientific_name', 'exclusion']].to_dict('records')))\n"
    )
    names = [*TOKENS, *REFUSED]
    py = Path(amalgkit).with_name("python")
    r = subprocess.run(
        [str(py), "-c", script, str(meta_path), json.dumps(names)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    tokens, records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]
    assert tokens == [*TOKENS.values(), *[None] * len(REFUSED)]
    assert [x["run"] for x in records] == RUNS
    assert {x["scientific_name"] for x in records} == {NAME}
    assert [x["sample_group"] for x in records][:3] == [tsv_cell(t) for t in TITLES[:3]]
