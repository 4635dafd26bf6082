#!/usr/bin/env python3
"""What ``quant.strandedness: auto`` costs per run, and salmon against kallisto, side by side.

    .venv/bin/python bench/strand_bench.py [--reads 1000000] [--sample 20000] [--transcripts 2000] [--repeats 2] [--batch 8] [--out bench/out]

One simulated paired run (100 bp, rf-stranded) of ``--reads`` pairs is quantified through
:func:`pipeline.quant.quantifier.quantify` three ways, each on fresh output, interleaved over
``--repeats``: kallisto with ``auto`` (the sample of ``--sample`` spots: written out, then
decided by two ``kallisto pseudo`` calls), kallisto with ``rf`` configured (no sample quant), and salmon ``-l A``.
Prints the median seconds of each, the sample's own seconds (the run record's
``strand_seconds``) and the ratios. Real kallisto and salmon, one thread each.

Then the decision alone for a batch of ``--batch`` runs (the same files under as many names), three
ways: :func:`pipeline.quant.quantifier.prepare_many` on the batch (the paired samples mapped
together: two ``kallisto pseudo`` calls for the batch), ``prepare`` run by run (two calls per
run), and the samples each through three ``kallisto quant`` runs (:func:`pipeline.quant.strand.detect`,
what every run paid before the batch was mapped together). Seconds per run, against the run's
quantification with ``rf`` configured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.model import Tools  # noqa: E402
from pipeline.quant import quantifier, strand  # noqa: E402
from pipeline.reads.sample import sample_head  # noqa: E402
from pipeline.runlog import RunLog  # noqa: E402
from pipeline.testing import simulate  # noqa: E402

RUN = "DRR900001"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reads", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=quantifier.STRAND_SAMPLE)
    ap.add_argument("--transcripts", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="runs of the batch whose decision is timed")
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    a = ap.parse_args()
    out = Path(a.out) / "strand_bench.work"
    data = Path(a.out) / "data"
    t0 = time.monotonic()
    ds = simulate.make_species_dataset(
        str(data), "Strand_bench", [RUN], "PAIRED", a.reads, 100, a.transcripts, seed=7, strand="rf"
    )
    files = [Path(f) for f in ds["runs"][0]["files"]]
    sim_s = time.monotonic() - t0
    out.mkdir(parents=True, exist_ok=True)
    indexes = {}
    for tool in quantifier.TOOLS:
        idx = out / f"{tool}.idx"
        if not idx.exists():
            quantifier.build_index(tool, ds["transcriptome"], idx, out / f"{tool}_index.log", Tools())
        indexes[tool] = idx
    variants = {
        "kallisto auto": quantifier.QuantOptions(strand_sample=a.sample),
        "kallisto rf": quantifier.QuantOptions(strandedness="rf", strand_sample=a.sample),
        "salmon -l A": quantifier.QuantOptions(tool="salmon", strand_sample=a.sample),
    }
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    sample_s: list[float] = []
    found = {}
    for rep in range(a.repeats):
        for name in list(variants)[rep % 3 :] + list(variants)[: rep % 3]:
            opts = variants[name]
            qdir = out / "quant"
            shutil.rmtree(qdir, ignore_errors=True)
            t = time.monotonic()
            res = quantifier.quantify(
                RUN, files, indexes[opts.tool], qdir, opts, Tools(),
                expected_reads=a.reads, verified=True, log=RunLog(out / "run.log"),
            )  # fmt: skip
            seconds[name].append(time.monotonic() - t)
            if not res.ok:
                print(f"{name}: failed: {res.reason}")
                return 1
            rec = json.loads((qdir / RUN / "pipeline_run.json").read_text())
            found[name] = quantifier.strand_text(rec)
            if name == "kallisto auto":
                sample_s.append(rec["strand_seconds"])
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"one paired run, {a.reads:,} pairs of 100 bp, {a.transcripts} transcripts; sample {a.sample:,} spots")
    print(f"simulated in {sim_s:.1f} s; medians of {a.repeats} interleaved repeats, 1 thread")
    print(f"{'variant':<16}{'seconds':>10}{'/ kallisto rf':>15}  strandedness")
    for k, v in med.items():
        print(f"{k:<16}{v:>10.2f}{v / med['kallisto rf']:>15.2f}  {found[k]}")
    s = statistics.median(sample_s)
    print(f"{'strand sample':<16}{s:>10.2f}{s / med['kallisto rf']:>15.2f}  (within kallisto auto)")
    batch_seconds = _batch(files, indexes["kallisto"], out, a)
    print(f"deciding for a batch of {a.batch} runs, seconds per run (medians of {a.repeats}):")
    for k, v in batch_seconds.items():
        print(f"{k:<44}{v:>8.2f}{v / med['kallisto rf']:>8.3f} of a run's quant")
    shutil.rmtree(out / "quant", ignore_errors=True)
    return 0


def _batch(files, index, out: Path, a) -> dict[str, float]:
    """Seconds per run of the three ways of deciding for a batch (see the module)."""
    opts = quantifier.QuantOptions(strand_sample=a.sample)
    runs = [f"DRR9{i:05d}" for i in range(a.batch)]
    times: dict[str, list[float]] = {
        "together (prepare_many)": [],
        "run by run (prepare)": [],
        "kallisto quant x3 a run": [],
    }
    for _ in range(a.repeats):
        qdir = out / "quant"
        shutil.rmtree(qdir, ignore_errors=True)
        log = RunLog(out / "batch.log")
        t = time.monotonic()
        got = quantifier.prepare_many([quantifier.RunFiles(r, files, log) for r in runs], index, qdir, opts, Tools())
        times["together (prepare_many)"].append((time.monotonic() - t) / a.batch)
        assert {c.strandedness for c, _ in got.values()} == {"rf"}, got
        t = time.monotonic()
        for r in runs:
            assert quantifier.prepare(r, files, index, qdir, opts, Tools(), log, None)[0].strandedness == "rf"
        times["run by run (prepare)"].append((time.monotonic() - t) / a.batch)
        t = time.monotonic()
        for r in runs:
            work = strand.sample_dir(qdir, r)
            sample = sample_head(files, a.sample, work / "s")
            call = strand.detect(r, sample, index, work, threads=1, fragment_length=200, fragment_sd=20, log=log)
            assert call.strandedness == "rf", call
            shutil.rmtree(work)
        times["kallisto quant x3 a run"].append((time.monotonic() - t) / a.batch)
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    sys.exit(main())
