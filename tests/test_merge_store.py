"""The incremental merge (merge_store): the same bytes as the plain merge, parsing only new or changed runs.

The plain merge (``merge.merge_species``) is the oracle: after every change to the runs (added,
re-quantified, removed, failed, moved) both write their tables from the same quant folder and the
files must be equal byte for byte.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
from test_merge import HEADER, _files, _kallisto_like, _quant, _write

from pipeline.quant import columnar, merge, merge_store
from pipeline.quant.merge import MEASURES, merge_species
from pipeline.quant.merge_store import MANIFEST, merge_incremental

RUNS = [f"SRR{i}" for i in range(8)]


class Reader:
    """merge_store's parser, recording which abundance.tsv files it read."""

    def __init__(self):
        self.read: list[str] = []

    def __call__(self, path):
        self.read.append(path.parent.name)
        return merge.read_abundance_bytes(path)


def _same_as_plain(tmp_path, runs, extra=None, block=3, reader=None, tag="m"):
    """Merge ``runs`` both ways; assert equal files; return the incremental merge's result."""
    q = tmp_path / "quant"
    plain, new = tmp_path / f"plain_{tag}", tmp_path / "merged"
    shutil.rmtree(plain, ignore_errors=True)
    expected = merge_species("Sp", q, runs, plain, extra, block=block)
    got = merge_incremental("Sp", q, runs, new, tmp_path / "store", extra, block=block, read=reader or Reader())
    assert got["runs"] == expected["runs"]
    names = {k: os.path.basename(v) for k, v in got["files"].items()}
    assert names == {"h5ad": "Sp.h5ad", **{k: os.path.basename(v) for k, v in expected["files"].items()}}
    assert _files(new) == {"Sp.h5ad": (new / "Sp.h5ad").read_bytes(), **_files(plain)}
    assert_h5ad_is_the_tables(new)
    return got


def assert_h5ad_is_the_tables(merged, species="Sp"):
    """The columnar copy, read by anndata, holds what pandas reads from each TSV (NaN where NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a run listed twice: anndata warns of the repeated name
        a = anndata.read_h5ad(merged / f"{species}.h5ad")
    for m in MEASURES:
        path = merged / f"{species}_{m}.tsv"
        table = pd.read_csv(path, sep="\t", index_col=0, dtype={"target_id": str})
        frame = a.to_df(layer=None if m == "est_counts" else m).T
        assert list(frame.index) == list(table.index) and frame.index.name == "target_id"
        assert ["run", *frame.columns] == path.read_text().split("\n", 1)[0].replace("target_id", "run").split("\t")
        assert frame.to_numpy().dtype == "float64"
        np.testing.assert_array_equal(frame.to_numpy(), table.to_numpy(dtype="float64"))


def _spoil_keeping_key(path):
    """Overwrite a file with as many bytes of garbage and give it back its mtime: the store's key
    (size, mtime) still matches, so a merge that read it would fail or differ."""
    st = path.stat()
    path.write_bytes(b"\x00garbage" * (st.st_size // 8) + b"\x00" * (st.st_size % 8))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert merge_store.run_key(path) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("block", [1, 3, 200])
def test_first_merge_is_byte_identical_to_the_plain_merge(tmp_path, block):
    _kallisto_like(tmp_path / "quant", RUNS, n=60)
    extra = {r: {"layout": "PAIRED", "source": "ena"} for r in RUNS}
    got = _same_as_plain(tmp_path, RUNS + ["SRR_absent"], extra, block=block)
    assert got["incremental"]["read"] == len(RUNS)
    assert got["incremental"]["segments_made"] == -(-len(RUNS) // block)


def test_added_runs_are_the_only_ones_read(tmp_path):
    q = tmp_path / "quant"
    _kallisto_like(q, RUNS, n=40)
    _same_as_plain(tmp_path, RUNS[:5])
    originals = tmp_path / "originals"
    shutil.copytree(q, originals)
    for r in RUNS[:5]:
        _spoil_keeping_key(q / r / "abundance.tsv")
    reader = Reader()
    got = merge_incremental("Sp", q, RUNS, tmp_path / "merged", tmp_path / "store", block=3, read=reader)
    assert sorted(reader.read) == RUNS[5:]
    assert got["incremental"]["read"] == 3
    expected = merge_species("Sp", originals, RUNS, tmp_path / "plain_orig")
    tables = {k: v for k, v in _files(tmp_path / "merged").items() if k.endswith(".tsv")}
    assert tables == _files(tmp_path / "plain_orig")
    assert expected["runs"] == RUNS
    assert_h5ad_is_the_tables(tmp_path / "merged")


def test_a_requantified_run_is_read_again(tmp_path):
    q = tmp_path / "quant"
    _kallisto_like(q, RUNS, n=40)
    _same_as_plain(tmp_path, RUNS)
    shutil.rmtree(q / "SRR2")
    _kallisto_like(q, ["SRR2"], n=40, seed=99)  # new values, a new file
    reader = Reader()
    got = _same_as_plain(tmp_path, RUNS, reader=reader, tag="2")
    assert reader.read == ["SRR2"] and got["incremental"]["read"] == 1


def test_a_file_changed_in_place_with_the_same_size_is_read_again(tmp_path):
    q = tmp_path / "quant"
    for i, r in enumerate(RUNS[:3]):
        _quant(q, r, [i, i + 1, i + 2])
    _same_as_plain(tmp_path, RUNS[:3])
    f = q / "SRR1" / "abundance.tsv"
    text = f.read_text()
    st = f.stat()
    f.write_text(text.replace("\t1\t", "\t7\t", 1))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    reader = Reader()
    _same_as_plain(tmp_path, RUNS[:3], reader=reader, tag="2")
    assert reader.read == ["SRR1"]


@pytest.mark.parametrize("change", ["removed", "failed", "reordered", "retried", "duplicated"])
def test_removed_failed_or_moved_runs_need_no_abundance_read(tmp_path, change):
    q = tmp_path / "quant"
    _kallisto_like(q, RUNS, n=30)
    runs = [r for r in RUNS if r != "SRR6"]
    _same_as_plain(tmp_path, runs, block=3)
    if change == "removed":
        runs = [r for r in runs if r != "SRR1"]
    elif change == "failed":  # its quant folder gone: the run is left out as the plain merge leaves it out
        shutil.rmtree(q / "SRR4")
    elif change == "reordered":
        runs = runs[3:] + runs[:3]
    elif change == "retried":  # a run that failed before is quantified now, in its metadata place
        runs = RUNS
    else:
        runs = runs + ["SRR0"]
    reader = Reader()
    _same_as_plain(tmp_path, runs, block=3, reader=reader, tag="2")
    assert reader.read == (["SRR6"] if change == "retried" else [])


def test_nothing_changed_leaves_the_tables_alone(tmp_path):
    _kallisto_like(tmp_path / "quant", RUNS, n=20)
    _same_as_plain(tmp_path, RUNS)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "merged").iterdir()}
    reader = Reader()
    got = _same_as_plain(tmp_path, RUNS, reader=reader, tag="2")
    assert reader.read == [] and got["incremental"]["tables_rewritten"] is False
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "merged").iterdir()}
    assert {k: v for k, v in after.items() if "_qc" not in k} == {k: v for k, v in before.items() if "_qc" not in k}
    # a table edited by hand is written again
    (tmp_path / "merged" / "Sp_tpm.tsv").write_text("edited\n")
    assert _same_as_plain(tmp_path, RUNS, tag="3")["incremental"]["tables_rewritten"] is True


def test_small_additions_share_a_segment(tmp_path):
    q = tmp_path / "quant"
    runs = [f"SRR{i}" for i in range(12)]
    _kallisto_like(q, runs, n=10)
    for n in range(1, len(runs) + 1):
        reader = Reader()
        got = _same_as_plain(tmp_path, runs[:n], block=4, reader=reader, tag=str(n))
        assert reader.read == [runs[n - 1]]
    segments = merge_store._load(tmp_path / "store")[0]
    assert [len(s.runs) for s in segments] == [4, 4, 4]
    assert got["incremental"]["segments_kept"] == 2
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(
        [MANIFEST, "targets", *(f"{s.name}.{m}" for s in segments for m in MEASURES)]
    )


def test_a_damaged_store_is_set_aside(tmp_path, caplog):
    _kallisto_like(tmp_path / "quant", RUNS, n=20)
    _same_as_plain(tmp_path, RUNS[:-1])
    for seg in (tmp_path / "store").glob("seg*.tpm"):
        seg.write_bytes(seg.read_bytes()[:-3])
    reader = Reader()
    _same_as_plain(tmp_path, RUNS, reader=reader, tag="2")
    assert "set aside" in caplog.text and "seg000002.tpm" in caplog.text
    assert reader.read[:1] == ["SRR7"] and sorted(reader.read[1:]) == RUNS  # read once, then all again


def test_no_runs_and_empty_tables(tmp_path):
    got = _same_as_plain(tmp_path, ["SRR1"])
    assert got["runs"] == []
    _write(tmp_path / "quant", "SRR1", HEADER + "\n")  # a header and no transcript
    _same_as_plain(tmp_path, ["SRR1"], tag="2")


def test_a_run_of_another_index_is_refused_after_stored_runs(tmp_path):
    q = tmp_path / "quant"
    _quant(q, "SRR1", [1, 2, 3])
    _quant(q, "SRR2", [1, 2, 3])
    merge_incremental("Sp", q, ["SRR1", "SRR2"], tmp_path / "m", tmp_path / "store")
    bad = _quant(q, "SRR3", [1, 2, 3], ids=("t1", "t2", "tX"))
    with pytest.raises(ValueError, match="target_id list differs") as e:
        merge_incremental("Sp", q, ["SRR1", "SRR2", "SRR3"], tmp_path / "m", tmp_path / "store")
    assert str(bad) in str(e.value)
    # all runs re-quantified against a new index: nothing of the store is used, the new ids are taken
    for r in ("SRR1", "SRR2"):
        shutil.rmtree(q / r)
        _quant(q, r, [4, 5, 6], ids=("t1", "t2", "tX"))
    _same_as_plain(tmp_path, ["SRR1", "SRR2", "SRR3"])


def test_random_histories_match_the_plain_merge(tmp_path):
    """Runs added, re-quantified, dropped and moved at random over several merges."""
    rng = random.Random(5)
    q = tmp_path / "quant"
    pool = [f"ERR{i}" for i in range(15)]
    _kallisto_like(q, pool, n=25)
    runs: list[str] = []
    for step in range(12):
        action = rng.choice(["add", "add", "requant", "drop", "move"])
        if action == "add" or not runs:
            runs += [r for r in pool if r not in runs][: rng.randint(1, 4)]
        elif action == "requant":
            r = rng.choice(runs)
            shutil.rmtree(q / r)
            _kallisto_like(q, [r], n=25, seed=100 + step)
        elif action == "drop":
            runs.remove(rng.choice(runs))
        else:
            r = runs.pop(rng.randrange(len(runs)))
            runs.insert(rng.randrange(len(runs) + 1), r)
        _same_as_plain(tmp_path, runs, block=rng.choice([2, 3, 5]), tag=str(step))


def test_the_columnar_copy_parses_only_runs_it_did_not_hold(tmp_path, monkeypatch):
    q = tmp_path / "quant"
    _kallisto_like(q, RUNS, n=30)
    _same_as_plain(tmp_path, RUNS[:5], block=3)  # segments of 3 and 2 runs
    parse = columnar.parse_columns
    parsed: list[tuple[str, list[int]]] = []

    def spy(path, columns):
        parsed.append((path.suffix, list(columns)))
        return parse(path, columns)

    monkeypatch.setattr(columnar, "parse_columns", spy)
    _same_as_plain(tmp_path, RUNS[:7], block=3, tag="2")  # a new segment of SRR5, SRR6
    assert sorted(parsed) == [(".eff_length", [0, 1]), (".est_counts", [0, 1]), (".tpm", [0, 1])]
    parsed.clear()
    shutil.rmtree(q / "SRR1")
    _kallisto_like(q, ["SRR1"], n=30, seed=9)  # re-quantified: its segment is made again, SRR0 and SRR2 kept
    _same_as_plain(tmp_path, RUNS[:7], block=3, tag="3")
    assert sorted(parsed) == [(".eff_length", [1]), (".est_counts", [1]), (".tpm", [1])]


def test_nan_values_are_nan_in_the_columnar_copy(tmp_path):
    q = tmp_path / "quant"
    rows = [HEADER, "t1\t1000\t801.5\t0\t-nan", "t2\t1000\t802.5\t0\t-nan", "t3\t10\tnan\t0\t-nan"]
    _write(q, "SRR1", "\n".join(rows) + "\n")
    _quant(q, "SRR2", [1, 2, 3])
    _same_as_plain(tmp_path, ["SRR1", "SRR2"])
    a = anndata.read_h5ad(tmp_path / "merged" / "Sp.h5ad")
    assert np.isnan(a.layers["tpm"][0]).all() and not np.isnan(a.layers["tpm"][1]).any()
    assert a.obs_names.tolist() == ["SRR1", "SRR2"] and a.var_names.tolist() == ["t1", "t2", "t3"]


def test_without_the_copy_none_is_left(tmp_path):
    _kallisto_like(tmp_path / "quant", RUNS[:2], n=5)
    _same_as_plain(tmp_path, RUNS[:2])
    got = merge_incremental(
        "Sp", tmp_path / "quant", RUNS[:2], tmp_path / "merged", tmp_path / "store", h5ad_copy=False
    )
    assert "h5ad" not in got["files"] and not (tmp_path / "merged" / "Sp.h5ad").exists()
