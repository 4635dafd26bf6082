#!/usr/bin/env python3
"""Batch quantification against a plain loop of ``kallisto quant`` on the same files, from one run.

    .venv/bin/python bench/quant_batch_bench.py [--runs 4] [--reads 200000] [--read-len 75]
        [--sizes 2000,3000,25000] [--batch 4] [--threads 1] [--repeats 1] [--bound] [--out bench/out]

For each index size (simulated transcripts, pipeline.testing.simulate, the pipeline bench's seed)
the simulated paired runs are quantified in batches of ``--batch`` runs, interleaved:

- loop: ``kallisto quant -t THREADS`` for each run, one after another (what ``quant.batch_mode:
  per_run`` runs for md5-verified files, without the pipeline around it);
- batch: :func:`pipeline.quant.kallisto_batch.quantify_runs` as ``quant.batch_mode: auto`` runs it:
  ``kallisto pseudo --bus`` once per batch on FIFOs fed with each file decompressed and counted by
  Python (the per-run read count), ``kallisto quant-tcc`` per run, staged and renamed into quant/RUN/.
- bound (with ``--bound``): ``kallisto pseudo --bus`` alone once per batch on the reads decompressed
  on disk beforehand (not timed): one load and the mapping, no feeding, counting, EM or staging.
  No exact batch built on kallisto's batch mode takes less, so bound / loop is the floor of
  batch / loop for that index, run size and batch size.

Prints, per size: the index's bytes and its load time alone (``kallisto quant`` on an empty
FASTQ); wall and CPU seconds (user + system, this process and its children: steadier than wall
time on a shared machine) of three ways over the same files, medians over ``--repeats``, the order
rotating: ``loop`` (above), ``r-thru`` (:func:`pipeline.quant.quantify.quantify_run` on files without
md5: kallisto quant on FIFOs that Python feeds with the files decompressed and counted) and ``batch`` (below); batch / loop and
batch / r-thru; the load average; runs that had to go alone; and whether every abundance.tsv is
byte-identical to kallisto quant's. Data and indexes are cached
under OUT/data/; the outputs go to OUT/quant_batch_bench.work/ and are removed at the end.
Writes OUT/quant_batch_bench.json.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline_bench import fresh  # noqa: E402

from pipeline.quant import kallisto, kallisto_batch  # noqa: E402
from pipeline.quant.quantify import quantify_run  # noqa: E402
from pipeline.reads import gz  # noqa: E402
from pipeline.runlog import RunLog  # noqa: E402
from pipeline.testing import simulate  # noqa: E402

SEED = 20241125  # bench/pipeline_bench.py's
SPECIES = "Bench_sim"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dataset(root: Path, runs: int, reads: int, read_len: int, n_tx: int) -> tuple[Path, list[tuple[str, list[str]]]]:
    """The simulated species (cached) and its kallisto index (built once)."""
    d = root / f"sim_{runs}x{reads}x{read_len}_{n_tx}tx"
    accessions = [f"DRR{900001 + i}" for i in range(runs)]
    ds = simulate.make_species_dataset(str(d), SPECIES, accessions, "PAIRED", reads, read_len, n_tx, SEED)
    index = d / "transcriptome.idx"
    if not index.is_file():
        say(f"kallisto index, {n_tx} transcripts")
        tmp = index.with_name(index.name + ".tmp")
        subprocess.run(kallisto.index_args(ds["transcriptome"], tmp), check=True, capture_output=True)
        os.replace(tmp, index)
    return index, [(r["run"], [str(Path(f).resolve()) for f in r["files"]]) for r in ds["runs"]]


def load_seconds(index: Path, work: Path) -> float:
    """kallisto quant on an empty FASTQ: the index load alone (kallisto then exits 1: no reads)."""
    empty = work / "empty.fastq"
    empty.write_text("")
    t0 = time.perf_counter()
    subprocess.run(
        kallisto.quant_args(index, work / "empty", [empty], single=True, fragment_length=200, fragment_sd=20),
        capture_output=True,
    )
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def loop(index: Path, runs: list, out: Path, threads: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), cpu_seconds()
    for run, fastqs in runs:
        (out / run).mkdir(parents=True)
        args = kallisto.quant_args(index, out / run, fastqs, threads=threads)
        subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0, cpu_seconds() - c0


def batched(index: Path, runs: list, out: Path, threads: int, size: int, alone: list) -> tuple[float, float]:
    def per_run(b: kallisto_batch.BatchRun):
        alone.append(b.run)  # counted, and the table says so
        return quantify_run(
            b.run,
            b.fastqs,
            index,
            out,
            threads=threads,
            fragment_length=200,
            fragment_sd=20,
            expected_reads=None,
            verified=True,
            log=b.log,
        )

    todo = [kallisto_batch.BatchRun(run=r, fastqs=f, expected_reads=None, log=RunLog(None)) for r, f in runs]
    t0, c0 = time.perf_counter(), cpu_seconds()
    for i in range(0, len(todo), size):
        res = kallisto_batch.quantify_runs(todo[i : i + size], index, out, threads=threads, per_run=per_run)
        bad = [r for r in res if not r.ok]
        if bad:
            raise RuntimeError(f"batch failed: {bad[0].run}: {bad[0].reason}")
    return time.perf_counter() - t0, cpu_seconds() - c0


def per_run_read_through(index: Path, runs: list, out: Path, threads: int) -> tuple[float, float]:
    """The per-run path for files no md5 vouches for: kallisto quant on FIFOs, the files read through to feed them."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    for run, fastqs in runs:
        res = quantify_run(run, fastqs, index, out, threads=threads, fragment_length=200, fragment_sd=20,
                           expected_reads=None, verified=False, log=RunLog(None))  # fmt: skip
        if not res.ok:
            raise RuntimeError(f"{run}: {res.reason}")
    return time.perf_counter() - t0, cpu_seconds() - c0


def bound(index: Path, plain: list, out: Path, threads: int, size: int, reads: int) -> tuple[float, float]:
    """``kallisto pseudo --bus`` alone on every ``size`` runs, on their reads already decompressed on
    disk: one load of the index per batch and the mapping, with no feeding, counting, EM or staging.
    What kallisto itself needs; no exact batch built on its batch mode can take less."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    for i in range(0, len(plain), size):
        b = out / f"b{i}"
        b.mkdir(parents=True)
        group = plain[i : i + size]
        rows = ["\t".join([str(j), *(kallisto.relative_to(f, b) for f in files)]) for j, (_, files) in enumerate(group)]
        (b / "batch.txt").write_text("".join(row + "\n" for row in rows))  # relative: no blank for kallisto to split on
        args = kallisto.pseudo_batch_args(kallisto.relative_to(index, b), "out", "batch.txt", threads=threads)
        subprocess.run(args, check=True, capture_output=True, cwd=b)
        processed = int(kallisto.read_run_info(b / "out").get("n_processed", -1))
        if processed != reads * len(group):
            raise RuntimeError(
                f"bound: kallisto pseudo processed {processed} reads, the batch holds {reads * len(group)}"
            )
    return time.perf_counter() - t0, cpu_seconds() - c0


def decompressed(runs: list, into: Path) -> list:
    """The runs' files decompressed under ``into`` (for :func:`bound`; not timed)."""
    plain = []
    for run, fastqs in runs:
        files = []
        for f in fastqs:
            dest = into / Path(f).name.removesuffix(".gz")
            with gz.open_read(f) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            files.append(str(dest))
        plain.append((run, files))
    return plain


MODES = {"loop": loop, "read_through": per_run_read_through}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--reads", type=int, default=200_000, help="read pairs per run")
    ap.add_argument("--read-len", type=int, default=75)
    ap.add_argument("--sizes", default="2000,3000,25000", help="transcripts of each index")
    ap.add_argument("--batch", type=int, default=4, help="runs per batch (the pipeline bench uses 2)")
    ap.add_argument("--threads", type=int, default=1, help="quant.threads")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--bound",
        action="store_true",
        help="also time kallisto pseudo --bus alone on the reads decompressed on disk (the floor of any batch)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    a = ap.parse_args()
    work = a.out / "quant_batch_bench.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    try:
        for n_tx in [int(x) for x in a.sizes.split(",")]:
            say(f"data: {a.runs} runs x {a.reads} pairs of {a.read_len} bp, {n_tx} transcripts")
            index, runs = dataset(a.out / "data", a.runs, a.reads, a.read_len, n_tx)
            loads: list[float] = []
            alone: list[str] = []
            same = True
            names = ["loop", "read_through", "batch"] + (["bound"] if a.bound else [])
            wall: dict[str, list[float]] = {n: [] for n in names}
            cpu: dict[str, list[float]] = {n: [] for n in names}
            plain = decompressed(runs, fresh(work / "plain")) if a.bound else []
            for k in range(a.repeats):
                for name in wall:
                    shutil.rmtree(work / name, ignore_errors=True)
                loads.append(load_seconds(index, work))
                for name in names[k % len(names) :] + names[: k % len(names)]:  # the order rotates
                    if name == "batch":
                        w, c = batched(index, runs, work / name, a.threads, a.batch, alone)
                    elif name == "bound":
                        w, c = bound(index, plain, work / name, a.threads, a.batch, a.reads)
                    else:
                        w, c = MODES[name](index, runs, work / name, a.threads)
                    wall[name].append(w)
                    cpu[name].append(c)
                same = same and all(
                    filecmp.cmp(work / other / r / "abundance.tsv", work / "batch" / r / "abundance.tsv", shallow=False)
                    for r, _ in runs
                    for other in ("loop", "read_through")
                )
            med = {n: round(statistics.median(v), 2) for n, v in wall.items()}
            med_cpu = {n: round(statistics.median(v), 2) for n, v in cpu.items()}
            row: dict[str, Any] = {
                "transcripts": n_tx,
                "index_mb": round(index.stat().st_size / 1e6, 1),
                "load_s": round(statistics.median(loads), 2),
                "wall_s": med,
                "cpu_s": med_cpu,
                "batch_over_loop": round(med["batch"] / med["loop"], 2),
                "batch_over_read_through": round(med["batch"] / med["read_through"], 2),
                "cpu_batch_over_loop": round(med_cpu["batch"] / med_cpu["loop"], 2),
                "cpu_batch_over_read_through": round(med_cpu["batch"] / med_cpu["read_through"], 2),
                **(
                    {
                        "bound_over_loop": round(med["bound"] / med["loop"], 2),
                        "cpu_bound_over_loop": round(med_cpu["bound"] / med_cpu["loop"], 2),
                    }
                    if a.bound
                    else {}
                ),
                "load_average": round(os.getloadavg()[0], 1),
                "alone": sorted(set(alone)),
                "identical": same,
            }
            rows.append(row)
            say(json.dumps(row))
            shutil.rmtree(work / "plain", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{a.runs} paired runs x {a.reads} pairs of {a.read_len} bp, batches of {a.batch}, "
        f"quant.threads {a.threads}, {os.cpu_count()} CPUs, median of {a.repeats}"
    )
    print("loop: kallisto quant per run; r-thru: the same on FIFOs Python feeds, counting the reads (the per-run")
    print("path for files without md5); batch: kallisto_batch.quantify_runs. Wall seconds, then CPU seconds.")
    print(
        f"{'transcripts':>11} {'index MB':>8} {'load s':>6} | {'loop':>6} {'r-thru':>6} {'batch':>6} {'b/loop':>6} "
        f"{'b/r-thru':>8} | {'loop':>6} {'r-thru':>6} {'batch':>6} {'b/loop':>6} {'b/r-thru':>8} | load  same"
    )
    for r in rows:
        w, c = r["wall_s"], r["cpu_s"]
        print(
            f"{r['transcripts']:>11} {r['index_mb']:>8} {r['load_s']:>6} | {w['loop']:>6} {w['read_through']:>6} "
            f"{w['batch']:>6} {r['batch_over_loop']:>6} {r['batch_over_read_through']:>8} | {c['loop']:>6} "
            f"{c['read_through']:>6} {c['batch']:>6} {r['cpu_batch_over_loop']:>6} "
            f"{r['cpu_batch_over_read_through']:>8} | {r['load_average']:>4}  "
            + ("yes" if r["identical"] else "NO")
            + (f" (alone: {len(r['alone'])})" if r["alone"] else "")
        )
    if a.bound:
        print("bound: kallisto pseudo --bus alone per batch on the reads decompressed on disk beforehand (untimed):")
        print("the load and the mapping, no feeding, counting, EM or staging; the floor of any exact batch.")
        print(f"{'transcripts':>11} | {'bound s':>7} {'bound/loop':>10} | {'CPU s':>6} {'CPU bound/loop':>14}")
        for r in rows:
            print(
                f"{r['transcripts']:>11} | {r['wall_s']['bound']:>7} {r['bound_over_loop']:>10} | "
                f"{r['cpu_s']['bound']:>6} {r['cpu_bound_over_loop']:>14}"
            )
    (a.out / "quant_batch_bench.json").write_text(
        json.dumps({"args": vars(a) | {"out": str(a.out)}, "rows": rows}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
