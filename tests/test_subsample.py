"""download.max_bp: subsample.cap_reads on real gzipped FASTQ (simulated reads, fixed seed)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from pipeline.reads import cap as subsample
from pipeline.testing import simulate


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """1,000 pairs of 2 x 50 bases: 100,000 bases in all."""
    root = tmp_path_factory.mktemp("capsim")
    d = simulate.make_species_dataset(
        root, "Capped_pairs", ["DRR000201"], "PAIRED", reads_per_run=1000, read_len=50, n_transcripts=10, seed=31
    )
    return [Path(f) for f in d["runs"][0]["files"]]


def _copy(files, dest: Path) -> list[Path]:
    dest.mkdir()
    return [Path(shutil.copy(f, dest / f.name)) for f in files]


def _records(path) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    return [b"".join(lines[i : i + 4]) for i in range(0, len(lines), 4)]


@pytest.mark.parametrize("over", [False, True])
def test_a_run_over_the_cap_keeps_its_first_pairs(pair, tmp_path, over):
    files = _copy(pair, tmp_path / "r")
    before = [_records(f) for f in files]
    res = subsample.cap_reads(files, 10_000, over=over)  # 100 pairs of 2 x 50 bases
    assert res == {"spots": 100, "bases": 10_000, "capped": True}
    # still gzip, as the names say (the temp copy's name has no .gz: it was once written plain)
    assert all(f.read_bytes()[:2] == b"\x1f\x8b" for f in files)
    assert [_records(f) for f in files] == [b[:100] for b in before]
    assert sorted(p.name for p in files[0].parent.iterdir()) == sorted(f.name for f in files)


def test_both_ways_give_the_same_bytes(pair, tmp_path):
    a, b = _copy(pair, tmp_path / "a"), _copy(pair, tmp_path / "b")
    assert subsample.cap_reads(a, 12_345) == subsample.cap_reads(b, 12_345, over=True)
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]


def test_a_run_under_the_cap_is_read_not_rewritten(pair, tmp_path, monkeypatch):
    files = _copy(pair, tmp_path / "r")
    stat = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]
    modes = []
    real_open = subsample._open
    monkeypatch.setattr(subsample, "_open", lambda p, mode, like=None: modes.append(mode) or real_open(p, mode, like))
    res = subsample.cap_reads(files, 1_000_000)
    assert res == {"spots": 1000, "bases": 100_000, "capped": False}
    assert modes == ["rb", "rb"]  # nothing compressed for nothing
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files] == stat


def test_a_truncated_gzip_or_mates_of_different_lengths_fail(pair, tmp_path):
    cut = _copy(pair, tmp_path / "cut")
    cut[1].write_bytes(cut[1].read_bytes()[: cut[1].stat().st_size // 2])
    with pytest.raises(subsample.CapError, match="cannot read"):
        subsample.cap_reads(cut, 1_000_000)
    short = _copy(pair, tmp_path / "short")
    recs = _records(short[1])
    with gzip.open(short[1], "wb") as fh:
        fh.writelines(recs[:-1])
    with pytest.raises(subsample.CapError, match="mates differ in read count after 999 spots"):
        subsample.cap_reads(short, 1_000_000)
    assert not [p for p in tmp_path.rglob("*.cap.tmp")]
