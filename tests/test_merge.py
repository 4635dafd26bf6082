"""Merged tables: amalgkit's layout, stable column order, and the same result however runs are blocked."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.merge import merge_species


def _quant(root, run, values, ids=("t1", "t2", "t3")):
    d = root / run
    d.mkdir(parents=True)
    rows = ["target_id\tlength\teff_length\test_counts\ttpm"] + [
        f"{t}\t1000\t{801.5 + i}\t{v}\t{v * 10.25}" for i, (t, v) in enumerate(zip(ids, values))]
    (d / "abundance.tsv").write_text("\n".join(rows) + "\n")
    (d / "run_info.json").write_text(json.dumps({"n_processed": 100, "n_pseudoaligned": 90, "p_pseudoaligned": 90.0}))


@pytest.mark.parametrize("block", [1, 2, 200])
def test_blocks_give_the_same_tables(tmp_path, block):
    runs = [f"SRR{i}" for i in range(5)]
    for i, r in enumerate(runs):
        _quant(tmp_path / "quant", r, [i, i + 0.5, 2 * i])
    out = tmp_path / f"merged{block}"
    res = merge_species("Sp", tmp_path / "quant", runs + ["SRR99"], out, {"SRR1": {"layout": "PAIRED"}}, block=block)
    assert res["runs"] == runs  # SRR99 has no abundance.tsv and is left out
    counts = pd.read_csv(out / "Sp_est_counts.tsv", sep="\t")
    assert list(counts.columns) == ["target_id", *runs]
    assert counts["target_id"].tolist() == ["t1", "t2", "t3"]
    assert counts["SRR3"].tolist() == [3, 3.5, 6]
    assert pd.read_csv(out / "Sp_tpm.tsv", sep="\t")["SRR2"].tolist() == [20.5, 25.625, 41.0]
    assert pd.read_csv(out / "Sp_eff_length.tsv", sep="\t")["SRR4"].tolist() == [801.5, 802.5, 803.5]
    qc = pd.read_csv(out / "Sp_qc.tsv", sep="\t")
    assert qc["run"].tolist() == runs and qc.loc[1, "layout"] == "PAIRED"
    assert sorted(p.name for p in out.iterdir()) == ["Sp_eff_length.tsv", "Sp_est_counts.tsv", "Sp_qc.tsv", "Sp_tpm.tsv"]


def test_different_indexes_are_refused(tmp_path):
    _quant(tmp_path / "quant", "SRR1", [1, 2, 3])
    _quant(tmp_path / "quant", "SRR2", [1, 2, 3], ids=("t1", "t2", "tX"))
    with pytest.raises(ValueError, match="target_id list differs"):
        merge_species("Sp", tmp_path / "quant", ["SRR1", "SRR2"], tmp_path / "m", block=1)
    assert not list((tmp_path / "m").glob(".*"))  # no partial files left


def test_no_runs_gives_empty_tables(tmp_path):
    res = merge_species("Sp", tmp_path / "quant", ["SRR1"], tmp_path / "m")
    assert res["runs"] == []
    assert pd.read_csv(tmp_path / "m" / "Sp_tpm.tsv", sep="\t").columns.tolist() == ["target_id"]
