#!/usr/bin/env python3
"""The reads' gzip (pipeline.reads.gz, ISA-L) against Python's zlib-backed gzip, from one run.

    .venv/bin/python bench/gzip_bench.py [--reads 500000] [--read-len 75] [--repeats 3] [--out bench/out]

One simulated mate of ``--reads`` reads (pipeline.testing.simulate, the pipeline bench's seed) is
read to its end counting lines (what the read-through does for files no md5 vouches for) and
written back at level 1 (what the ``.sra`` route does with fasterq-dump's output, and the strand
sample and ``download.max_bp``), by both libraries, taking turns. Prints the median seconds of
each, the ratios and the bytes written. Writes OUT/gzip_bench.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.reads import gz  # noqa: E402
from pipeline.testing import simulate  # noqa: E402

SEED = 20241125  # bench/pipeline_bench.py's


def read_lines(opener, path: Path) -> int:
    n = 0
    with opener(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def zlib_open(path):
    return gzip.open(path, "rb")


def zlib_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as out:
        out.write(data)


def isal_write(path: Path, data: bytes) -> None:
    with gz.open_write(path) as out:
        out.write(data)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reads", type=int, default=500_000)
    ap.add_argument("--read-len", type=int, default=75)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    a = ap.parse_args()
    d = a.out / "data" / f"gzip_{a.reads}x{a.read_len}"
    ds = simulate.make_species_dataset(str(d), "Bench_sim", ["DRR900001"], "PAIRED", a.reads, a.read_len, 2000, SEED)
    src = Path(ds["runs"][0]["files"][0])
    data = gzip.decompress(src.read_bytes())
    work = a.out / "gzip_bench.work"
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {k: [] for k in ("read zlib", "read isal", "write zlib", "write isal")}
    for _ in range(a.repeats):
        times["read zlib"].append(timed(read_lines, zlib_open, src))
        times["read isal"].append(timed(read_lines, gz.open_read, src))
        times["write zlib"].append(timed(zlib_write, work / "zlib.gz", data))
        times["write isal"].append(timed(isal_write, work / "isal.gz", data))
    assert gzip.decompress((work / "isal.gz").read_bytes()) == data
    med = {k: statistics.median(v) for k, v in times.items()}
    sizes = {"zlib": (work / "zlib.gz").stat().st_size, "isal": (work / "isal.gz").stat().st_size}
    print(f"one mate: {a.reads:,} reads of {a.read_len} bp, {len(data) / 1e6:.1f} MB of FASTQ; median of {a.repeats}")
    print("| | zlib (Python gzip) | ISA-L (pipeline.reads.gz) | zlib / ISA-L |")
    print("| --- | --- | --- | --- |")
    print(
        f"| read to the end, s | {med['read zlib']:.3f} | {med['read isal']:.3f} | {med['read zlib'] / med['read isal']:.2f} |"
    )
    print(
        f"| write level 1, s | {med['write zlib']:.3f} | {med['write isal']:.3f} | {med['write zlib'] / med['write isal']:.2f} |"
    )
    print(f"| bytes written | {sizes['zlib']:,} | {sizes['isal']:,} | {sizes['zlib'] / sizes['isal']:.3f} |")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    (a.out / "gzip_bench.json").write_text(json.dumps({"seconds": times, "median": med, "bytes": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
