"""Merged tables at scale: the plain merge against the incremental one, and the columnar formats.

    .venv/bin/python bench/merge_bench.py            # 100 runs x 30,000 transcripts (about 1-2 min)
    .venv/bin/python bench/merge_bench.py --big      # 1k and 10k runs x 30,000, 100k runs x 300
    .venv/bin/python bench/merge_bench.py --sizes 1000x30000:100

Runs are made from a pool of ``--pool`` distinct abundance.tsv files in kallisto's shapes (half the
est_counts 0, the rest log-normal; TPMs from them; ``%g`` text), hard-linked under each run's name,
so every run is parsed as a file of its own. Each step runs in a child process: its time and peak
RSS are its own. For every size it prints

- merges: the plain merge (``merge.merge_species``) and the incremental one from an empty store
  (tables only, then the h5ad copy alone), a re-merge with nothing changed, ``+K`` new runs, and one
  re-quantified run, with the abundance files each read; the tables are compared byte for byte;
- files: the three TSVs, the store, the h5ad copy and Parquet (pyarrow, zstd, a file per measure,
  written from the TSVs), sizes and ratios to the TSVs;
- reads of all three measures: pandas ``read_csv`` of the TSVs, ``read_parquet``, ``anndata.read_h5ad``
  with ``to_df`` (what ``scanpy.read_h5ad`` calls), and R (``data.table::fread`` of the TSVs,
  ``hdf5r`` of the h5ad) when Rscript and those packages are there; R has no Parquet reader here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.quant.merge import MEASURES  # noqa: E402

SPECIES = "Bench"
HEADER = "target_id\tlength\teff_length\test_counts\ttpm\n"


def make_pool(root: Path, n: int, n_tx: int, seed: int = 7) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = [f"ENST{i:011d}.{i % 9}" for i in range(n_tx)]
    length = rng.integers(200, 9000, n_tx)
    out = []
    for k in range(n):
        counts = np.where(rng.random(n_tx) < 0.5, 0, rng.lognormal(2, 2.5, n_tx))
        eff = np.maximum(length - rng.normal(180, 20), 20)
        rate = counts / eff
        tpm = rate / rate.sum() * 1e6
        lines = [f"{t}\t{n}\t{e:g}\t{c:g}\t{p:g}\n" for t, n, e, c, p in zip(ids, length, eff, counts, tpm)]
        p = root / f"pool{k}.tsv"
        p.write_text(HEADER + "".join(lines))
        out.append(p)
    return out


def add_runs(quant: Path, pool: list[Path], start: int, n: int) -> list[str]:
    info = json.dumps({"n_processed": 1000, "n_pseudoaligned": 800, "p_pseudoaligned": 80.0})
    runs = []
    for i in range(start, start + n):
        run = f"SRR{10_000_000 + i}"
        d = quant / run
        d.mkdir(parents=True)
        os.link(pool[i % len(pool)], d / "abundance.tsv")
        (d / "run_info.json").write_text(info)
        runs.append(run)
    return runs


def child(step: str, **kw) -> dict:
    """Run ``step`` in a fresh interpreter; its figures, seconds and peak RSS."""
    p = subprocess.run(
        [sys.executable, __file__, "--step", step], input=json.dumps(kw), capture_output=True, text=True, cwd=REPO
    )
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_step(step: str, kw: dict) -> dict:
    t = time.perf_counter()
    out: dict = {}
    if step in ("plain", "incremental"):
        from pipeline.quant import merge, merge_store

        runs, q, dest = kw["runs"], Path(kw["quant"]), Path(kw["merged"])
        if step == "plain":
            merge.merge_species(SPECIES, q, runs, dest, {})
        else:
            read: list[str] = []

            def reader(path):
                read.append(path.parent.name)
                return merge.read_abundance_bytes(path)

            r = merge_store.merge_incremental(
                SPECIES, q, runs, dest, Path(kw["store"]), {}, read=reader, h5ad_copy=kw["h5ad"]
            )
            out = dict(r["incremental"], read=len(read))
    elif step == "parquet":
        import pyarrow as pa
        import pyarrow.csv as pc
        import pyarrow.parquet as pq

        for m in MEASURES:
            src = Path(kw["merged"]) / f"{SPECIES}_{m}.tsv"
            head = src.open().readline().rstrip("\n").split("\t")
            types = {c: pa.float64() for c in head[1:]} | {"target_id": pa.string()}
            reader = pc.open_csv(
                src,
                read_options=pc.ReadOptions(block_size=1 << 26),
                parse_options=pc.ParseOptions(delimiter="\t"),
                convert_options=pc.ConvertOptions(column_types=types),
            )
            with pq.ParquetWriter(Path(kw["out"]) / f"{m}.parquet", reader.schema, compression="zstd") as w:
                for batch in reader:
                    w.write_batch(batch)
    elif step == "read_tsv":
        import pandas as pd

        for m in MEASURES:
            pd.read_csv(Path(kw["merged"]) / f"{SPECIES}_{m}.tsv", sep="\t", index_col=0)
    elif step == "read_parquet":
        import pandas as pd

        for m in MEASURES:
            pd.read_parquet(Path(kw["out"]) / f"{m}.parquet")
    elif step == "read_h5ad":
        import anndata

        a = anndata.read_h5ad(Path(kw["merged"]) / f"{SPECIES}.h5ad")
        for layer in (None, "tpm", "eff_length"):
            a.to_df(layer=layer)
    out["seconds"] = time.perf_counter() - t
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


R_TSV = 'library(data.table); for (f in commandArgs(TRUE)) invisible(fread(f, sep="\\t"))'
R_H5AD = (
    "library(hdf5r); h <- H5File$new(commandArgs(TRUE)[1], 'r'); "
    "for (d in c('X', 'layers/tpm', 'layers/eff_length')) invisible(h[[d]][,]); h$close_all()"
)


def r_read(code: str, files: list[str]) -> dict:
    if not shutil.which("Rscript"):
        return {"error": "no Rscript"}
    t = time.perf_counter()
    p = subprocess.run(["Rscript", "-e", code, *files], capture_output=True, text=True)
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:80]}
    return {"seconds": time.perf_counter() - t}


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def one_size(work: Path, n_runs: int, n_tx: int, n_add: int, pool_n: int, r_tsv_max: int, lean: bool) -> dict:
    root = work / f"{n_runs}x{n_tx}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "pool").mkdir(parents=True)
    t = time.perf_counter()
    pool = make_pool(root / "pool", pool_n, n_tx)
    runs = add_runs(root / "quant", pool, 0, n_runs)
    made = time.perf_counter() - t
    q, plain, new, store = root / "quant", root / "plain", root / "merged", root / "store"
    res: dict = {"runs": n_runs, "transcripts": n_tx, "added": n_add, "made_s": made}
    skipped = {"error": "not run (--lean)"}
    res["plain"] = skipped if lean else child("plain", runs=runs, quant=str(q), merged=str(plain))
    common = {"quant": str(q), "merged": str(new), "store": str(store)}
    res["first"] = child("incremental", runs=runs, h5ad=False, **common)
    res["identical"] = (
        "not compared (--lean)"
        if lean
        else all(
            (plain / f"{SPECIES}_{m}.tsv").read_bytes() == (new / f"{SPECIES}_{m}.tsv").read_bytes()
            for m in (*MEASURES, "qc")
        )
    )
    shutil.rmtree(plain, ignore_errors=True)
    res["first_h5ad"] = child("incremental", runs=runs, h5ad=True, **common)
    res["noop"] = child("incremental", runs=runs, h5ad=True, **common)
    res["sizes"] = {
        "tsv": sum(size(new / f"{SPECIES}_{m}.tsv") for m in MEASURES),
        "store": size(store),
        "h5ad": size(new / f"{SPECIES}.h5ad"),
    }
    (root / "pq").mkdir()
    res["parquet_write"] = skipped if lean else child("parquet", merged=str(new), out=str(root / "pq"))
    res["sizes"]["parquet"] = size(root / "pq") or float("nan")
    res["read_tsv"] = skipped if lean else child("read_tsv", merged=str(new))
    res["read_parquet"] = skipped if lean else child("read_parquet", out=str(root / "pq"))
    res["read_h5ad"] = skipped if lean else child("read_h5ad", merged=str(new))
    tsvs = [str(new / f"{SPECIES}_{m}.tsv") for m in MEASURES]
    res["r_tsv"] = r_read(R_TSV, tsvs) if n_runs <= r_tsv_max and not lean else {"error": "not run"}
    res["r_h5ad"] = skipped if lean else r_read(R_H5AD, [str(new / f"{SPECIES}.h5ad")])
    shutil.rmtree(root / "pq")
    more = add_runs(q, pool, n_runs, n_add)
    res["add"] = child("incremental", runs=runs + more, h5ad=True, **common)
    target = q / runs[len(runs) // 2] / "abundance.tsv"
    shutil.copyfile(target, target.with_suffix(".new"))  # a re-quantified run: a file of its own, a new mtime
    os.replace(target.with_suffix(".new"), target)
    res["requant"] = child("incremental", runs=runs + more, h5ad=True, **common)
    shutil.rmtree(root, ignore_errors=True)
    return res


def fmt(x, unit="s") -> str:
    if not isinstance(x, dict):
        return str(x)
    if "error" in x:
        return f"({x['error']})"
    return f"{x['seconds']:.2f} {unit}"


def report(res: dict) -> str:
    n, p, f = res["runs"], res["plain"], res["first"]
    lines = [f"== {n:,} runs x {res['transcripts']:,} transcripts (+{res['added']:,} added) =="]

    def ratio(a, b):
        ok = isinstance(a, dict) and isinstance(b, dict) and "seconds" in a and "seconds" in b and b["seconds"]
        return f"{a['seconds'] / b['seconds']:.2f}x" if ok else "-"

    rows = [
        ("plain merge (before)", p, "-", "all"),
        ("incremental, empty store: tables", f, ratio(f, p), f.get("read")),
        ("  then the h5ad copy alone", res["first_h5ad"], ratio(res["first_h5ad"], p), res["first_h5ad"].get("read")),
        ("re-merge, nothing changed", res["noop"], ratio(res["noop"], p), res["noop"].get("read")),
        (f"+{res['added']} runs: tables + h5ad", res["add"], ratio(res["add"], p), res["add"].get("read")),
        ("1 run re-quantified: tables + h5ad", res["requant"], ratio(res["requant"], p), res["requant"].get("read")),
    ]
    lines.append(f"{'step':38} {'seconds':>10} {'/plain':>7} {'read':>6} {'peak RSS':>10}")
    for name, r, rat, read in rows:
        rss = f"{r['maxrss_mib']:.0f} MiB" if "maxrss_mib" in r else ""
        lines.append(f"{name:38} {fmt(r):>10} {rat:>7} {read!s:>6} {rss:>10}")
    lines.append(f"tables byte-identical to the plain merge: {res['identical']}")
    s = res["sizes"]
    lines.append(f"{'file':10} {'MB':>10} {'/TSV':>7}   write            pandas read      R read")
    reads = {
        "tsv": (p, res["read_tsv"], res["r_tsv"]),
        "h5ad": (res["first_h5ad"], res["read_h5ad"], res["r_h5ad"]),
        "parquet": (res["parquet_write"], res["read_parquet"], {"error": "no R reader here"}),
        "store": (None, None, None),
    }
    for k in ("tsv", "h5ad", "parquet", "store"):
        w, pr, rr = reads[k]
        cells = f"{fmt(w) if w else '':16} {fmt(pr) if pr else '':16} {fmt(rr) if rr else ''}"
        lines.append(f"{k:10} {s[k] / 1e6:>10.1f} {s[k] / s['tsv']:>6.2f}x   {cells}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big", action="store_true", help="1k and 10k runs x 30,000 transcripts, 100k runs x 300")
    ap.add_argument("--sizes", help="RUNSxTRANSCRIPTS:ADDED,... (overrides the defaults)")
    ap.add_argument("--pool", type=int, default=50, help="distinct abundance files the runs are made from")
    ap.add_argument("--r-tsv-max", type=int, default=1000, help="R reads the TSVs up to this many runs")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--step")
    ap.add_argument(
        "--lean", action="store_true", help="the incremental merge's steps and sizes only (no plain merge, no reads)"
    )
    a = ap.parse_args()
    if a.step:
        print(json.dumps(run_step(a.step, json.loads(sys.stdin.read()))))
        return
    spec = a.sizes or ("1000x30000:100,100000x300:1000,10000x30000:1000" if a.big else "100x30000:10")
    sizes = [(*map(int, s.split(":")[0].split("x")), int(s.split(":")[1])) for s in spec.split(",")]
    work = a.out / "merge_bench"
    a.out.mkdir(parents=True, exist_ok=True)
    all_results = []
    t0 = time.perf_counter()
    for n_runs, n_tx, n_add in sizes:
        res = one_size(work, n_runs, n_tx, n_add, a.pool, a.r_tsv_max, a.lean)
        all_results.append(res)
        print(report(res), flush=True)
        print(flush=True)
        (a.out / "merge_bench.json").write_text(json.dumps(all_results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - t0:.0f} s; figures in {a.out / 'merge_bench.json'}")


if __name__ == "__main__":
    main()
