"""Batches: size parsing, expected bytes, packing by run count and by byte budget, stability."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from pipeline.model import RemoteFile, Run
from pipeline.plan.batches import (
    batch_bytes,
    make_batches,
    oversized_runs,
    read_batch,
    sra_room,
    unknown_size_runs,
    write_batch,
)
from pipeline.plan.sizes import (
    DEFAULT_BYTES_PER_BASE,
    SRA_READ_OVERHEAD,
    expected_bytes,
    fastq_text_bytes,
    parse_size,
    sra_excess,
    sra_peak_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def run(i: int, fastq=None, base_count=None, sra_bytes=None, read_count=None, layout="PAIRED") -> Run:
    """Run SRR{i}; ``fastq`` is a list of file sizes (None entries for unknown sizes)."""
    files = [
        RemoteFile(url=f"https://h/SRR{i}_{m}.fastq.gz", name=f"SRR{i}_{m}.fastq.gz", bytes=b)
        for m, b in enumerate(fastq or [], start=1)
    ]
    return Run(
        run=f"SRR{i}",
        layout=layout,
        base_count=base_count,
        files=files,
        sra_bytes=sra_bytes,
        read_count=read_count,
        sra_urls=[f"https://h/SRR{i}.sra"],
    )


def names(groups) -> list[list[str]]:
    return [[r.run for r in g] for g in groups]


# ---------------------------------------------------------------------------------------------
# parse_size
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("123", 123),
        ("0", 0),
        ("123B", 123),
        ("4K", 4096),
        ("4 k", 4096),
        ("4KiB", 4096),
        ("500M", 500 * 2**20),
        ("500MB", 500 * 2**20),
        ("40G", 40 * GiB),
        ("10GB", 10 * GiB),
        ("10GiB", 10 * GiB),
        ("10gib", 10 * GiB),
        ("1.5T", 3 * 2**39),
        (" 2T ", 2 * 2**40),
        ("1P", 2**50),
        (".5G", GiB // 2),
        ("1.G", GiB),
        ("0.1K", 103),  # fractions of a byte round up
        (7, 7),
        (2.2, 3),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text",
    ["", " ", "G", "-1", "-1G", "1.5X", "10iB", "1e9", "1,000", "nan", "40 G B", None, True, -3, float("inf"), [1]],
)
def test_parse_size_rejects_and_names_the_value(text):
    with pytest.raises(ValueError) as e:
        parse_size(text)
    assert repr(text) in str(e.value)


# ---------------------------------------------------------------------------------------------
# expected_bytes
# ---------------------------------------------------------------------------------------------


def test_expected_bytes_order_of_sources():
    assert expected_bytes(run(1, fastq=[100, 150], base_count=10**9, sra_bytes=7)) == 250
    # one mate size unknown -> fastq_bytes unknown -> base_count estimate
    assert expected_bytes(run(2, fastq=[100, None], base_count=1000, sra_bytes=7)) == 1000 * DEFAULT_BYTES_PER_BASE
    assert expected_bytes(run(3, base_count=1001), bytes_per_base=0.5) == 501  # rounded up
    assert expected_bytes(run(4, base_count=0, sra_bytes=9)) == 9  # 0 bases: unknown
    assert expected_bytes(run(5, sra_bytes=9)) == 9
    assert expected_bytes(run(6)) is None
    assert isinstance(expected_bytes(run(7, base_count=3)), int)


def test_default_factor_is_conservative_against_real_ena_rows():
    """The factor covers at least 99 % of real runs with both base_count and fastq_bytes."""
    import pandas as pd
    from conftest import need_shared

    path = need_shared("metadata", "ena_read_run_1000_from_pysradb.csv")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    ratios = []
    for bc, fb in zip(df["base_count"], df["fastq_bytes"]):
        parts = [p for p in fb.split(";") if p.strip()]
        if bc.strip().isdigit() and int(bc) > 0 and parts and all(p.strip().isdigit() for p in parts):
            ratios.append(sum(int(p) for p in parts) / int(bc))
    assert len(ratios) > 800
    covered = sum(r <= DEFAULT_BYTES_PER_BASE for r in ratios) / len(ratios)
    assert covered >= 0.99, covered


def test_simulated_reads_compress_below_the_factor(tmp_path):
    from pipeline.testing import simulate

    tx = simulate.make_transcriptome(20, 300, 800, seed=3)
    info = simulate.simulate_run(tx, str(tmp_path / "SRR1"), 2000, 75, "PAIRED", seed=4)
    ratio = sum(info["bytes"]) / info["base_count"]
    assert 0.2 < ratio < DEFAULT_BYTES_PER_BASE


# ---------------------------------------------------------------------------------------------
# make_batches
# ---------------------------------------------------------------------------------------------


def test_by_size_only_is_the_old_behaviour():
    runs = [run(i, fastq=[10]) for i in range(10)]
    groups = make_batches(runs, 4)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert names(groups) == [[f"SRR{i}" for i in range(0, 4)], [f"SRR{i}" for i in range(4, 8)], ["SRR8", "SRR9"]]
    assert make_batches([], 4) == []


def test_by_max_bytes_only():
    sizes = [30, 30, 30, 50, 20, 10, 100, 1, 1]
    runs = [run(i, fastq=[s]) for i, s in enumerate(sizes)]
    groups = make_batches(runs, max_bytes=100)
    # 30+30+30 (+50 would be 140); 50+20+10 (+100); 100 alone (== budget); 1+1
    assert [[expected_bytes(r) for r in g] for g in groups] == [[30, 30, 30], [50, 20, 10], [100], [1, 1]]
    assert all(batch_bytes(g)[0] <= 100 for g in groups)


def test_by_size_and_max_bytes():
    runs = [run(i, fastq=[10]) for i in range(7)] + [run(7, fastq=[60]), run(8, fastq=[50])]
    groups = make_batches(runs, size=3, max_bytes=100)
    assert [len(g) for g in groups] == [3, 3, 2, 1]  # count closes the first two, bytes the third
    assert [batch_bytes(g)[0] for g in groups] == [30, 30, 70, 50]


def test_oversized_run_gets_a_batch_of_its_own():
    runs = [run(1, fastq=[10]), run(2, fastq=[10]), run(3, fastq=[500]), run(4, fastq=[10])]
    groups = make_batches(runs, size=8, max_bytes=100)
    assert names(groups) == [["SRR1", "SRR2"], ["SRR3"], ["SRR4"]]
    over = oversized_runs(runs, 100)
    assert [(r.run, b) for r, b in over] == [("SRR3", 500)]
    assert oversized_runs(runs, 1000) == []


def test_unknown_size_is_alone_when_a_budget_is_set():
    runs = [run(1, fastq=[10]), run(2), run(3, fastq=[10]), run(4, fastq=[10]), run(5)]
    assert names(make_batches(runs, max_bytes=100)) == [["SRR1"], ["SRR2"], ["SRR3", "SRR4"], ["SRR5"]]
    assert names(make_batches(runs, size=2)) == [["SRR1", "SRR2"], ["SRR3", "SRR4"], ["SRR5"]]
    assert [r.run for r in unknown_size_runs(runs)] == ["SRR2", "SRR5"]
    assert oversized_runs(runs, 5) == [(runs[0], 10), (runs[2], 10), (runs[3], 10)]  # unknown not listed
    assert batch_bytes(runs) == (30, 2)


def test_base_count_estimate_uses_the_factor():
    runs = [run(i, base_count=100) for i in range(6)]  # 50 bytes each at 0.5
    assert [len(g) for g in make_batches(runs, max_bytes=100, bytes_per_base=0.5)] == [2, 2, 2]
    assert [len(g) for g in make_batches(runs, max_bytes=100, bytes_per_base=0.25)] == [4, 2]


def test_order_kept_and_identical_on_a_second_call():
    # sizes that a best-fit packer would reorder: big, small, big, small...
    runs = [run(i, fastq=[90 if i % 2 else 15]) for i in range(50)]
    first = make_batches(runs, size=5, max_bytes=120)
    second = make_batches(list(runs), size=5, max_bytes=120)
    assert names(first) == names(second)
    assert [r.run for g in first for r in g] == [r.run for r in runs]  # consecutive, never reordered


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"size": 0},
        {"size": -1},
        {"size": True},
        {"size": 2.0},
        {"max_bytes": 0},
        {"size": 2, "max_bytes": -5},
        {"max_bytes": "40G"},
    ],
)
def test_bad_limits(kwargs):
    with pytest.raises(ValueError):
        make_batches([run(1, fastq=[1])], **kwargs)


def test_ten_thousand_runs(tmp_path):
    runs = [run(1_000_000 + i, fastq=[(i * 7919) % 3_000_000_000 + 500_000_000, 400_000_000]) for i in range(10_000)]
    t = time.perf_counter()
    groups = make_batches(runs, size=8, max_bytes=parse_size("20G"))
    took = time.perf_counter() - t
    assert sum(len(g) for g in groups) == 10_000
    assert all(len(g) <= 8 and batch_bytes(g)[0] <= 20 * GiB for g in groups)
    assert names(make_batches(runs, size=8, max_bytes=parse_size("20G"))) == names(groups)
    print(f"10,000 runs -> {len(groups)} batches in {took:.3f} s", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# batch files
# ---------------------------------------------------------------------------------------------


def test_write_and_read_batch_round_trip(tmp_path):
    runs = [run(1, fastq=[10, 20], base_count=100), run(2, base_count=100), run(3)]
    path = tmp_path / "batches" / "batch_00003.json"
    write_batch(path, 3, runs, bytes_per_base=0.5)
    assert [r.to_dict() for r in read_batch(path)] == [r.to_dict() for r in runs]
    import json

    doc = json.loads(path.read_text())
    assert doc["batch"] == 3 and doc["expected_bytes"] == 30 + 50 and doc["unknown_size"] == 1


def test_read_batch_accepts_files_without_the_new_fields(tmp_path):
    import json

    path = tmp_path / "old.json"
    path.write_text(json.dumps({"batch": 0, "runs": [run(1, fastq=[5]).to_dict()]}))
    assert [r.run for r in read_batch(path)] == ["SRR1"]


def test_scale_script_writes_a_valid_setup(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from scripts import make_scale_metadata as m
    finally:
        sys.path.remove(str(ROOT))
    from pipeline.inputs.metadata import load_runs
    from pipeline.inputs.species_config import load_species_config

    setup = m.write_setup(str(tmp_path), 50, seed=2)
    cfg = load_species_config(setup["config"])
    assert cfg.species == "Scale_test" and cfg.batch_size == 8
    runs, skipped = load_runs(cfg.metadata_file, cfg.selection)
    assert len(runs) == 50 and not skipped
    assert runs[0].run == "SRR1000000" and runs[-1].run == "SRR1000049"
    assert all(len(r.files) == 2 and 5 * 10**8 <= r.fastq_bytes <= 5 * 10**9 for r in runs)
    assert all(r.files[0].url.startswith("https://ftp.sra.ebi.ac.uk/vol1/fastq/") for r in runs)
    figures = m.measure(setup, str(tmp_path), 8, parse_size("8G"))
    assert figures["runs"] == 50 and figures["oversized_runs"] == 0
    assert figures["largest_batch_bytes"] <= parse_size("8G")
    assert len(list((tmp_path / "measure" / "batches").iterdir())) == figures["batches"]


# ---------------------------------------------------------------------------------------------
# room for one .sra conversion per batch
# ---------------------------------------------------------------------------------------------


def test_plain_fastq_estimate_from_bases_and_reads():
    # SRRHOXC: 10,000 pairs of 50 bp; fasterq-dump 3.0.3 wrote 3,927,828 bytes (tests/test_sra_route.py)
    assert fastq_text_bytes(run(1, base_count=1_000_000, read_count=10_000)) == 2_000_000 + 20_000 * SRA_READ_OVERHEAD
    single = run(2, base_count=1_000_000, read_count=10_000, layout="SINGLE")
    assert fastq_text_bytes(single) == 2_000_000 + 10_000 * SRA_READ_OVERHEAD
    no_reads = run(3, base_count=3_000)  # one read per 30 bases assumed
    assert fastq_text_bytes(no_reads) == 6_000 + 100 * SRA_READ_OVERHEAD
    assert fastq_text_bytes(run(4, sra_bytes=1000)) == 10_000
    assert fastq_text_bytes(run(5, fastq=[10, 10])) is None


def test_sra_peak_counts_the_sra_file_the_output_and_fasterq_dumps_temp_files():
    r = run(1, fastq=[300, 300], base_count=1000, read_count=10, sra_bytes=500)
    text = 2000 + 20 * SRA_READ_OVERHEAD
    assert sra_peak_bytes(r) == 500 + 2 * text
    assert sra_excess(r) == 500 + 2 * text - 600
    # no sra_bytes: twice the FASTQ bytes (the most in 895 real ENA rows is 1.84 times)
    assert sra_peak_bytes(run(2, fastq=[300, 300], base_count=1000, read_count=10)) == 1200 + 2 * text
    assert sra_peak_bytes(run(3, fastq=[300, 300])) is None and sra_excess(run(3, fastq=[300, 300])) is None


def test_batches_keep_room_for_one_conversion_when_the_sra_route_is_a_source():
    # each run: 100 bytes of FASTQ; converting one from .sra holds 100 + 2 x (200 + 2 x 162) = 1148
    runs = [run(i, fastq=[50, 50], base_count=100, read_count=1, sra_bytes=100) for i in range(6)]
    excess = sra_excess(runs[0])
    assert excess == 1148 - 100
    # FASTQ alone: 6 runs fit 600 bytes; with the .sra route, 2000 bytes hold n x 100 + one excess
    assert names(make_batches(runs, max_bytes=600)) == [[r.run for r in runs]]
    groups = make_batches(runs, max_bytes=2000, sra_route=True)
    assert [len(g) for g in groups] == [6]  # 600 + 1048 <= 2000
    groups = make_batches(runs, max_bytes=1400, sra_route=True)
    assert [len(g) for g in groups] == [3, 3]  # 300 + 1048 <= 1400 < 400 + 1048
    assert all(batch_bytes(g)[0] + sra_room(g) <= 1400 for g in groups)
    # a run whose conversion alone exceeds the budget is alone and named
    assert names(make_batches(runs[:2], max_bytes=1000, sra_route=True)) == [["SRR0"], ["SRR1"]]
    assert [(r.run, b) for r, b in oversized_runs(runs[:1], 1000, sra_route=True)] == [("SRR0", 1148)]
    assert oversized_runs(runs[:1], 1000) == []
    # a run whose conversion cannot be sized counts as unknown with the .sra route
    unsized = run(9, fastq=[50, 50])
    assert unknown_size_runs([unsized], sra_route=True) == [unsized] and unknown_size_runs([unsized]) == []
    # a run with no .sra URL (local files) cannot take that route: no room kept for it
    local = Run(
        run="SRR8",
        layout="PAIRED",
        files=[
            RemoteFile(url="file:///d/a_1.fq.gz", name="a_1.fq.gz", bytes=50),
            RemoteFile(url="file:///d/a_2.fq.gz", name="a_2.fq.gz", bytes=50),
        ],
    )
    assert sra_excess(local) == 0 and unknown_size_runs([local], sra_route=True) == []
    assert names(make_batches([local] * 1, max_bytes=100, sra_route=True)) == [["SRR8"]]


def test_batch_file_records_the_room(tmp_path):
    runs = [run(i, fastq=[50, 50], base_count=100, read_count=1, sra_bytes=100) for i in range(2)]
    write_batch(tmp_path / "b.json", 0, runs)
    import json

    d = json.loads((tmp_path / "b.json").read_text())
    assert d["sra_room"] == 1048 and d["expected_bytes"] == 200
