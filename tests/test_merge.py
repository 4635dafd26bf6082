"""Merged tables: amalgkit's layout, stable column order, and the same result however runs are blocked.

merge.py passes kallisto's text through; pandas (a test dependency only) reads the tables back as an
independent oracle.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.quant import merge
from pipeline.quant.merge import MEASURES, QC_COLUMNS, merge_species

ROOT = Path(__file__).resolve().parents[1]
HEADER = "target_id\tlength\teff_length\test_counts\ttpm"
INFO = {"n_processed": 100, "n_pseudoaligned": 90, "p_pseudoaligned": 90.0}


def _write(root, run, text, info=INFO, newline="\n"):
    d = root / run
    d.mkdir(parents=True)
    (d / "abundance.tsv").write_bytes(text.replace("\n", newline).encode())
    (d / "run_info.json").write_text(json.dumps(info))
    return d / "abundance.tsv"


def _quant(root, run, values, ids=("t1", "t2", "t3")):
    rows = [HEADER] + [f"{t}\t1000\t{801.5 + i}\t{v}\t{v * 10.25}" for i, (t, v) in enumerate(zip(ids, values))]
    return _write(root, run, "\n".join(rows) + "\n")


def _kallisto_like(root, runs, n=50, seed=1):
    """Runs with values in the shapes kallisto prints (6 significant digits, exponents, bare 0) and a
    few it might: trailing zeros, "-0", upper-case exponents."""
    rng = random.Random(seed)
    odd = ["12.0", "3.50", "-0", "1E+03", "0.000", "7"]
    for run in runs:
        rows = [HEADER]
        for i in range(n):
            counts = rng.choice([0, rng.uniform(0, 5), rng.uniform(0, 1e5), rng.choice(odd)])
            tpm = rng.choice([0, rng.uniform(0, 1e-4), rng.uniform(0, 1e4)])
            rows.append(
                f"ENST{i:011d}.{i % 7}\t{rng.randint(200, 9000)}\t{rng.uniform(50, 9000):g}\t"
                f"{counts if isinstance(counts, str) else format(counts, 'g')}\t{tpm:g}"
            )
        _write(root, run, "\n".join(rows) + "\n")


def _files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _assert_matches_pandas(out, quant, runs, species="Sp"):
    """Every merged column equals the run's abundance.tsv column, both read by pandas."""
    for m in MEASURES:
        merged = pd.read_csv(out / f"{species}_{m}.tsv", sep="\t", dtype={"target_id": str})
        assert list(merged.columns) == ["target_id", *runs]
        for r in runs:
            ab = pd.read_csv(quant / r / "abundance.tsv", sep="\t", dtype={"target_id": str})
            assert merged["target_id"].tolist() == ab["target_id"].tolist()
            assert merged[r].tolist() == ab[m].tolist(), (m, r)


@pytest.mark.parametrize("block", [1, 2, 200])
def test_blocks_give_the_same_tables(tmp_path, block):
    runs = [f"SRR{i}" for i in range(5)]
    for i, r in enumerate(runs):
        _quant(tmp_path / "quant", r, [i, i + 0.5, 2 * i])
    out = tmp_path / f"merged{block}"
    res = merge_species("Sp", tmp_path / "quant", runs + ["SRR99"], out, {"SRR1": {"layout": "PAIRED"}}, block=block)
    assert res["runs"] == runs  # SRR99 has no abundance.tsv and is left out
    assert res["files"] == {k: str(out / f"Sp_{k}.tsv") for k in (*MEASURES, "qc")}
    counts = pd.read_csv(out / "Sp_est_counts.tsv", sep="\t")
    assert list(counts.columns) == ["target_id", *runs]
    assert counts["target_id"].tolist() == ["t1", "t2", "t3"]
    assert counts["SRR3"].tolist() == [3, 3.5, 6]
    assert pd.read_csv(out / "Sp_tpm.tsv", sep="\t")["SRR2"].tolist() == [20.5, 25.625, 41.0]
    assert pd.read_csv(out / "Sp_eff_length.tsv", sep="\t")["SRR4"].tolist() == [801.5, 802.5, 803.5]
    _assert_matches_pandas(out, tmp_path / "quant", runs)
    qc = pd.read_csv(out / "Sp_qc.tsv", sep="\t")
    assert qc["run"].tolist() == runs and qc.loc[1, "layout"] == "PAIRED"
    assert sorted(p.name for p in out.iterdir()) == [
        "Sp_eff_length.tsv",
        "Sp_est_counts.tsv",
        "Sp_qc.tsv",
        "Sp_tpm.tsv",
    ]


def test_blocked_output_is_byte_identical_to_one_block(tmp_path, monkeypatch):
    runs = [f"SRR{i}" for i in range(5)]
    _kallisto_like(tmp_path / "quant", runs)
    extra = {r: {"layout": "PAIRED", "source": "ena"} for r in runs}
    merge_species("Sp", tmp_path / "quant", runs, tmp_path / "b2", extra, block=2)
    merge_species("Sp", tmp_path / "quant", runs, tmp_path / "b200", extra, block=200)
    assert _files(tmp_path / "b2") == _files(tmp_path / "b200")
    monkeypatch.setattr(merge, "ROWS", 7)  # values held 7 rows to a string: 50 rows = 8 pieces, the last short
    merge_species("Sp", tmp_path / "quant", runs, tmp_path / "rows7", extra, block=2)
    assert _files(tmp_path / "rows7") == _files(tmp_path / "b200")
    _assert_matches_pandas(tmp_path / "b2", tmp_path / "quant", runs)


def test_values_are_kallistos_text_verbatim(tmp_path):
    runs = ["SRR1", "SRR2", "SRR3"]
    _kallisto_like(tmp_path / "quant", runs, n=200, seed=3)
    merge_species("Sp", tmp_path / "quant", runs, tmp_path / "m", block=2)
    source = {}
    for r in runs:
        lines = (tmp_path / "quant" / r / "abundance.tsv").read_text().splitlines()
        head = lines[0].split("\t")
        source[r] = [dict(zip(head, line.split("\t"))) for line in lines[1:]]
    for m in MEASURES:
        lines = (tmp_path / "m" / f"Sp_{m}.tsv").read_text().split("\n")
        assert lines[0] == "\t".join(["target_id", *runs]) and lines[-1] == ""
        rows = [line.split("\t") for line in lines[1:-1]]
        assert len(rows) == 200
        for i, row in enumerate(rows):
            assert row == [source["SRR1"][i]["target_id"], *(source[r][i][m] for r in runs)]
    # pandas wrote these as 0.0, 3.5, -0.0, 1000.0, 0.0; now they are left as kallisto wrote them
    cells = set((tmp_path / "m" / "Sp_est_counts.tsv").read_text().replace("\n", "\t").split("\t"))
    assert {"0", "12.0", "3.50", "-0", "1E+03", "0.000", "7"} <= cells


@pytest.mark.parametrize("newline, trailing, bom", [("\n", False, ""), ("\r\n", True, ""), ("\r\n", False, "\ufeff")])
def test_line_endings_and_column_order_do_not_matter(tmp_path, newline, trailing, bom):
    runs = ["SRR1", "SRR2"]
    _kallisto_like(tmp_path / "plain", runs, n=20)
    merge_species("Sp", tmp_path / "plain", runs, tmp_path / "m_plain")
    for i, r in enumerate(runs):
        lines = (tmp_path / "plain" / r / "abundance.tsv").read_text().splitlines()
        rows = [line.split("\t") for line in lines]
        if i == 1:  # columns in another order are found by name
            rows = [[row[j] for j in (4, 0, 3, 1, 2)] for row in rows]
        text = bom + "\n".join("\t".join(row) for row in rows) + ("\n" if trailing else "")
        _write(tmp_path / "odd", r, text, newline=newline)
    merge_species("Sp", tmp_path / "odd", runs, tmp_path / "m_odd")
    assert _files(tmp_path / "m_odd") == _files(tmp_path / "m_plain")


def test_different_indexes_are_refused(tmp_path):
    _quant(tmp_path / "quant", "SRR1", [1, 2, 3])
    bad = _quant(tmp_path / "quant", "SRR2", [1, 2, 3], ids=("t1", "t2", "tX"))
    with pytest.raises(ValueError, match="target_id list differs") as e:
        merge_species("Sp", tmp_path / "quant", ["SRR1", "SRR2"], tmp_path / "m", block=1)
    assert str(bad) in str(e.value) and "Sp" in str(e.value)
    assert not list((tmp_path / "m").glob(".*"))  # no partial files left


GOOD = [HEADER, "t1\t1000\t801.5\t1\t10", "t2\t1000\t802.5\t2\t20", "t3\t1000\t803.5\t3\t30"]


@pytest.mark.parametrize(
    "lines, what",
    [
        (["target_id\tlength\teff_length\test_counts"] + [r.rsplit("\t", 1)[0] for r in GOOD[1:]], "no tpm column"),
        ([GOOD[0], GOOD[1], "t2\t1000\t802.5\t2", GOOD[3]], "line 3 has 4 fields"),
        (
            [GOOD[0], "t1\t1000\t801.5\t1", "t2\t1000\t802.5\t2\t20\t99", GOOD[3]],
            "line 2 has 4 fields",
        ),  # 15 fields in all
        ([GOOD[0], GOOD[1], "", GOOD[2], GOOD[3]], "line 3 has 1 fields"),
        (["", *GOOD[1:]], "no target_id, est_counts, tpm, eff_length column"),
    ],
)
def test_malformed_abundance_is_a_named_error(tmp_path, lines, what):
    _write(tmp_path / "quant", "SRR1", "\n".join(GOOD) + "\n")
    bad = _write(tmp_path / "quant", "SRR2", "\n".join(lines) + "\n")
    with pytest.raises(ValueError) as e:
        merge_species("Sp", tmp_path / "quant", ["SRR1", "SRR2"], tmp_path / "m", block=1)
    assert str(bad) in str(e.value) and "malformed" in str(e.value)
    assert what.split(",")[0] in str(e.value)
    assert list((tmp_path / "m").iterdir()) == []  # no part files, no tables


def test_no_runs_gives_empty_tables(tmp_path):
    res = merge_species(
        "Sp", tmp_path / "quant", ["SRR1"], tmp_path / "m", {"SRR1": {"layout": "PAIRED", "source": "ena"}}
    )
    assert res["runs"] == []
    assert pd.read_csv(tmp_path / "m" / "Sp_tpm.tsv", sep="\t").columns.tolist() == ["target_id"]
    # exactly what the pandas version wrote
    assert _files(tmp_path / "m") == {
        **{f"Sp_{m}.tsv": b"target_id\n" for m in MEASURES},
        "Sp_qc.tsv": b"run\tlayout\tn_processed\tn_pseudoaligned\tp_pseudoaligned\n",
    }


def test_qc_table_columns_and_values(tmp_path):
    q = tmp_path / "quant"
    _quant(q, "SRR1", [1, 2, 3])
    _quant(q, "SRR2", [1, 2, 3])
    (q / "SRR2" / "run_info.json").write_text(json.dumps({"n_processed": 5000, "p_pseudoaligned": 12.5}))
    _quant(q, "SRR3", [1, 2, 3])
    extra = {
        "SRR1": {"layout": "PAIRED", "source": "ena"},
        "SRR2": {"capped": True, "layout": "SINGLE"},
        "SRR3": {"layout": "PAIRED", "source": "sra", "capped": False},
    }
    merge_species("Sp", q, ["SRR1", "SRR2", "SRR3"], tmp_path / "m", extra)
    assert (tmp_path / "m" / "Sp_qc.tsv").read_text() == (
        "run\tlayout\tn_processed\tn_pseudoaligned\tp_pseudoaligned\tsource\tcapped\n"
        "SRR1\tPAIRED\t100\t90\t90.0\tena\t\n"
        "SRR2\tSINGLE\t5000\t\t12.5\t\tTrue\n"
        "SRR3\tPAIRED\t100\t90\t90.0\tsra\tFalse\n"
    )
    # the column order pandas gave the list of dicts
    rows = [
        {
            "run": r,
            "layout": e.get("layout", ""),
            **dict.fromkeys(QC_COLUMNS[2:]),
            **{k: v for k, v in e.items() if k != "layout"},
        }
        for r, e in extra.items()
    ]
    qc = pd.read_csv(tmp_path / "m" / "Sp_qc.tsv", sep="\t")
    assert list(qc.columns) == list(pd.DataFrame(rows).columns)
    assert qc["n_processed"].tolist() == [100, 5000, 100] and qc["source"].isna().tolist() == [False, True, False]


def test_merge_module_does_not_import_pandas():
    """merge.py alone (the package __init__ bypassed, so other modules' imports do not count)."""
    code = (
        "import sys, types; pkg = types.ModuleType('pipeline'); pkg.__path__ = [sys.argv[1]]; "
        "sys.modules['pipeline'] = pkg; import pipeline.quant.merge; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'numpy')))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "pipeline")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


SPY = r"""
import sys, traceback
class Spy:
    importer = None
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" and Spy.importer is None:
            mine = [f.filename for f in traceback.extract_stack() if f.filename.startswith(sys.argv[1])]
            Spy.importer = mine[-1] if mine else "?"
sys.meta_path.insert(0, Spy())
import pipeline.quant.merge
print("pandas" in sys.modules, Spy.importer)
"""


def test_import_pipeline_merge_leaves_pandas_out():
    """``import pipeline.quant.merge`` in a fresh interpreter (package __init__ and all it imports): pandas
    is not loaded; a failure names the module of ours that imported it."""
    r = subprocess.run([sys.executable, "-c", SPY, str(ROOT / "pipeline")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    loaded, importer = r.stdout.split()
    assert loaded == "False", f"pandas imported by {importer}"
