"""Quantifying a batch's paired runs after one load of the index, with results equal to ``kallisto quant``'s.

``kallisto quant`` reads the whole index before it maps a read, for every run. Here the paired runs
of a batch that share their kallisto flags are quantified in two steps, both kallisto 0.48's own code:

1. ``kallisto pseudo --bus -b BATCH`` loads the index once and maps every run with the read
   processing ``kallisto quant`` uses (the same k-mer matching, intersection and strand filter).
   It writes each run's equivalence-class counts (``output.bus``, one record per class and run),
   each run's fragment-length histogram (``flens.txt``) and the classes it found (``index.saved``,
   the index without its k-mer table: kilobytes).
2. ``kallisto quant-tcc -i index.saved -f FLD TCC``, per run, runs ``kallisto quant``'s EM on those
   counts with that histogram, and writes ``abundance.tsv`` with ``kallisto quant``'s writer.

``kallisto pseudo --quant`` is not used: it writes est_counts rounded to 6 digits and only the mean
and sd of each run's fragment lengths, so neither ``eff_length`` nor ``tpm`` can be rebuilt exactly.

Where kallisto's batch mode differs from ``kallisto quant`` the run is quantified alone instead
(the ``per_run`` callable): ``kallisto quant`` estimates fragment lengths from its first 10,000
fragments, while batch mode may take more when a run's first read chunk (8 MB of bases) holds
fewer: a histogram of more than :data:`FLD_SAMPLE` fragments goes alone; so does a run with no
read pseudoaligned or no fragment length (``kallisto quant`` fails it in its own words), and every
single-end run (``kallisto pseudo --single`` skips the check of single reads against the fragment
length that ``kallisto quant --single`` makes), or a run with a flag other than the strand flags.

``kallisto pseudo`` reports the reads processed for the whole batch only, so every run's files are
read to their end as kallisto takes them: each file is decompressed here (ISA-L) and counted by
:func:`~pipeline.quant.kallisto.run_fed`, which passes the plain FASTQ on into a FIFO that kallisto
reads in place of the file. kallisto does no decompression of its own, and the read-through costs
no second pass, so md5-verified runs are batched too: measured, the batch costs no more CPU than
a loop of ``kallisto quant`` even where loading the index costs nothing (README). A truncated
file or mates of different lengths fail that run, and the spots read must equal the metadata's.
kallisto processes at most the spots of each run, so its total equal to their sum means each
run's ``n_processed`` equals its spots. A run that fails the read-through makes the total
unusable for the others: they are batched again without it (once), then each alone.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .. import fifo
from ..files import atomic_write_text, remove_path, staged_path
from ..model import PAIRED, RunQuant
from ..reads.fastq import FastqError, mates_agree
from ..runlog import RunLog
from . import kallisto
from .quantify import QuantError, check_spots, keep_tool_log, write_run_record

#: Fragments ``kallisto quant`` takes for its fragment-length distribution (kallisto 0.48, ProcessReads.cpp).
FLD_SAMPLE = 10_000
#: A ``kallisto pseudo --bus`` record: barcode (the run's line in the batch file), UMI, class, count, flags, pad.
BUS_RECORD = np.dtype(
    [("bc", "<u8"), ("umi", "<u8"), ("ec", "<i4"), ("count", "<u4"), ("flags", "<u4"), ("pad", "<u4")]
)
_BUS_MAGIC = b"BUS\x00"


@dataclass
class BatchRun:
    """One downloaded run to quantify: its files, the reads the metadata expects, its log, what to record."""

    run: str
    fastqs: list
    expected_reads: Optional[int]
    log: RunLog
    extra: dict = field(default_factory=dict)
    flags: tuple = ()  # per-run kallisto flags, e.g. ("--rf-stranded",)


PerRun = Callable[[BatchRun], RunQuant]


def batch_groups(runs: Sequence[BatchRun]) -> tuple[list[list[BatchRun]], list[BatchRun]]:
    """``(groups, alone)``: paired runs grouped by their flags (two or more a group), and the rest."""
    by_flags: dict[tuple, list[BatchRun]] = {}
    alone: list[BatchRun] = []
    for r in runs:
        if len(r.fastqs) == 2 and all(f in kallisto.STRAND_FLAGS.values() for f in r.flags):
            by_flags.setdefault(tuple(r.flags), []).append(r)
        else:
            alone.append(r)
    groups = [g for g in by_flags.values() if len(g) > 1]
    alone += [g[0] for g in by_flags.values() if len(g) == 1]
    return groups, alone


def quantify_runs(
    runs: Sequence[BatchRun],
    index,
    quant_dir,
    *,
    threads: int,
    per_run: PerRun,
    exe: str = "kallisto",
) -> list[RunQuant]:
    """Quantify ``runs`` into ``quant_dir/RUN/``, batched where that is exact; results in ``runs``' order."""
    groups, alone = batch_groups(runs)
    done: dict[str, RunQuant] = {}
    for group in groups:
        for res in quantify_group(group, index, quant_dir, threads=threads, per_run=per_run, exe=exe):
            done[res.run] = res
    for r in alone:
        done[r.run] = per_run(r)
    return [done[r.run] for r in runs]


def parse_bus(data: bytes) -> np.ndarray:
    """The records of a BUS file (format version 1): ValueError for anything else."""
    if len(data) < 20 or data[:4] != _BUS_MAGIC:
        raise ValueError("not a BUS file")
    version, _bc_len, _umi_len, text_len = np.frombuffer(data, "<u4", 4, 4)
    start = 20 + int(text_len)
    if version != 1 or len(data) < start or (len(data) - start) % BUS_RECORD.itemsize:
        raise ValueError(f"BUS file of version {version}, {len(data)} bytes: not whole records")
    return np.frombuffer(data, BUS_RECORD, offset=start)


def run_counts(records: np.ndarray, sample: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, counts)`` of one run (its line in the batch file), classes ascending, each once."""
    mine = records[records["bc"] == sample]
    ecs, inverse = np.unique(mine["ec"], return_inverse=True)
    return ecs, np.bincount(inverse, weights=mine["count"], minlength=len(ecs)).astype(np.int64)


def parse_flens(text: str) -> list[list[int]]:
    """``flens.txt``: one line of fragment-length counts per run of the batch."""
    return [[int(x) for x in line.split()] for line in text.splitlines() if line.strip()]


def alone_reason(n_pseudoaligned: int, flens: Sequence[int]) -> Optional[str]:
    """Why a run's batch figures would not give ``kallisto quant``'s result, or None."""
    if n_pseudoaligned == 0:
        return "no read pseudoaligned"
    fragments = sum(flens)
    if fragments == 0:
        return "no fragment length was measured"
    if fragments > FLD_SAMPLE:
        return f"batch mode sampled {fragments} fragment lengths where kallisto quant takes {FLD_SAMPLE}"
    return None


def run_info_for(batch_info: dict, n_processed: int, ecs: np.ndarray, counts: np.ndarray, call: str) -> dict:
    """One run's ``run_info.json`` fields, laid out and rounded as ``kallisto quant`` writes them."""
    n_targets = int(batch_info["n_targets"])
    aligned, unique = int(counts.sum()), int(counts[ecs < n_targets].sum())

    def pct(n: int) -> float:
        return float(f"{100.0 * n / n_processed:.1f}") if n_processed > 0 else 0.0

    return {
        "n_targets": n_targets,
        "n_bootstraps": 0,
        "n_processed": n_processed,
        "n_pseudoaligned": aligned,
        "n_unique": unique,
        "p_pseudoaligned": pct(aligned),
        "p_unique": pct(unique),
        "kallisto_version": batch_info.get("kallisto_version"),
        "index_version": batch_info.get("index_version"),
        "start_time": batch_info.get("start_time"),
        "call": call,
    }


def quantify_group(
    group: Sequence[BatchRun],
    index,
    quant_dir,
    *,
    threads: int,
    per_run: PerRun,
    exe: str = "kallisto",
    again: bool = True,
) -> list[RunQuant]:
    """One ``kallisto pseudo`` call for ``group`` (paired runs, the same flags), then each run's EM.

    Never raises for a run's own failure; a batch that cannot be used falls back as the module says.
    """
    t0 = time.monotonic()
    quant_dir = Path(quant_dir)
    results: dict[str, RunQuant] = {}
    with staged_path(quant_dir / f"batch-{group[0].run}") as scratch:
        scratch.mkdir(parents=True)
        lines: list[str] = []
        feeds: list[tuple] = []
        for i, r in enumerate(group):
            names = [f"{i}_{m}.fastq" for m in range(1, len(r.fastqs) + 1)]
            feeds += zip(r.fastqs, fifo.make(scratch, names))
            lines.append("\t".join([str(i), *names]) + "\n")
        (scratch / "batch.txt").write_text("".join(lines))
        args = kallisto.pseudo_batch_args(
            kallisto.relative_to(index, scratch), ".", "batch.txt", threads=threads, flags=group[0].flags, exe=exe
        )
        for r in group:
            r.log.write(f"quant: batch of {len(group)} runs: " + kallisto.command_line(args, scratch))
        file_counts, rc = kallisto.run_fed(args, feeds, scratch / "kallisto.log", cwd=scratch)
        spots: dict[str, int] = {}
        remaining = iter(file_counts)  # in feeds' order: each run's files in turn
        for r in group:
            per_file = [next(remaining) for _ in r.fastqs]
            try:
                spots[r.run] = check_spots(mates_agree([f.result() for f in per_file]), r.expected_reads)
            except (FastqError, QuantError) as e:
                results[r.run] = _failed(r, str(e))
        rest = [r for r in group if r.run in spots]
        members = [(i, r) for i, r in enumerate(group) if r.run in spots]
        batch_seconds = time.monotonic() - t0
        try:
            if len(rest) < len(group):
                raise QuantError("a run of the batch failed its read-through, so the batch's read total is not theirs")
            if rc != 0:
                raise QuantError(f"kallisto pseudo exited {rc}")
            batch_info = kallisto.read_run_info(scratch)
            if int(batch_info.get("n_processed", -1)) != sum(spots.values()):
                raise QuantError(
                    f"kallisto pseudo processed {batch_info.get('n_processed')} reads, the files hold {sum(spots.values())}"
                )
            records = parse_bus((scratch / "output.bus").read_bytes())
            flens = parse_flens((scratch / "flens.txt").read_text())
            if len(flens) != len(group):
                raise QuantError(f"flens.txt has {len(flens)} lines for {len(group)} runs")
        except (QuantError, ValueError, OSError, kallisto.RunInfoError) as e:
            keep_tool_log(scratch, rest[0].log if rest else group[0].log)
            for r in rest:
                r.log.write(f"quant: batch not used ({e}); " + ("batched again" if again else "quantified alone"))
            if again and len(rest) > 1:
                remove_path(scratch)
                results.update(
                    (q.run, q)
                    for q in quantify_group(
                        rest, index, quant_dir, threads=threads, per_run=per_run, exe=exe, again=False
                    )
                )
            else:
                results.update((r.run, per_run(r)) for r in rest)
            members = []
        total = max(1, sum(spots.values()))

        def one(item: tuple[int, BatchRun]) -> tuple[BatchRun, Optional[RunQuant]]:
            """The run's result from the batch, or None when it is to be quantified alone."""
            i, r = item
            ecs, counts = run_counts(records, i)
            why = alone_reason(int(counts.sum()), flens[i])
            if why:
                r.log.write(f"quant: {why}; quantified alone with kallisto quant")
                return r, None
            share = batch_seconds * spots[r.run] / total
            return r, _quantify_member(
                r, i, ecs, counts, flens[i], spots[r.run], batch_info, args, scratch, quant_dir, share, exe
            )

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            done = list(pool.map(one, members))
        for r, res in done:  # one kallisto quant at a time, each with quant.threads
            results[r.run] = res or per_run(r)
        remove_path(scratch)
    return [results[r.run] for r in group]


def _failed(r: BatchRun, reason: str) -> RunQuant:
    r.log.write(f"quant: failed: {reason}")
    return RunQuant(run=r.run, layout=PAIRED, reason=reason)


def _quantify_member(
    r: BatchRun,
    i: int,
    ecs: np.ndarray,
    counts: np.ndarray,
    flens: Sequence[int],
    spots: int,
    batch_info: dict,
    batch_args: list[str],
    scratch: Path,
    quant_dir: Path,
    batch_share: float,
    exe: str,
) -> Optional[RunQuant]:
    """Run ``i`` of the batch: ``kallisto quant-tcc`` on its counts, into ``quant_dir/RUN/``; None when
    kallisto quant-tcc fails (the run is then quantified alone)."""
    t0 = time.monotonic()
    (scratch / f"{i}.tcc").write_text("".join(f"{e}\t{c}\n" for e, c in zip(ecs.tolist(), counts.tolist())))
    (scratch / f"{i}.fld").write_text(" ".join(map(str, flens)) + "\n")
    (scratch / f"out{i}").mkdir()
    args = kallisto.quant_tcc_args("index.saved", f"out{i}", f"{i}.tcc", f"{i}.fld", exe=exe)
    rc = kallisto.run(args, scratch / f"{i}.log", cwd=scratch)
    made = scratch / f"out{i}" / "abundance.tsv"
    if rc != 0 or not made.is_file():
        r.log.write(f"quant: kallisto quant-tcc exited {rc}; quantified alone with kallisto quant")
        return None
    result = RunQuant(run=r.run, layout=PAIRED)
    with staged_path(quant_dir / r.run) as tmp:
        tmp.mkdir(parents=True)
        os.replace(made, tmp / "abundance.tsv")
        call = kallisto.command_line(batch_args) + " && " + kallisto.command_line(args)
        info = run_info_for(batch_info, spots, ecs, counts, call)
        atomic_write_text(tmp / "run_info.json", kallisto.run_info_text(info))
        atomic_write_text(tmp / "kallisto.log", _run_log_text(r, tmp, info, scratch / f"out{i}", scratch / f"{i}.log"))
        result.n_processed, result.n_pseudoaligned = info["n_processed"], info["n_pseudoaligned"]
        result.p_pseudoaligned = info["p_pseudoaligned"]
        result.seconds = round(batch_share + time.monotonic() - t0, 3)
        extra = r.extra | {"quant_mode": "batch", "kallisto_batch_args": batch_args}
        write_run_record(tmp, result, r.fastqs, spots, args, extra)
    result.status = "ok"
    r.log.write(
        f"quant: ok (batch), n_processed={result.n_processed} p_pseudoaligned={result.p_pseudoaligned} "
        f"(read through {spots} spots while kallisto ran)"
    )
    return result


def _run_log_text(r: BatchRun, run_dir: Path, info: dict, out: Path, tcc_log: Path) -> str:
    """``quant/RUN/kallisto.log``: the run's own figures in the lines of ``kallisto quant``'s log
    (what MultiQC's kallisto module reads), then ``kallisto quant-tcc``'s log."""
    first, second = (kallisto.relative_to(f, run_dir) for f in r.fastqs)
    fld = out / "matrix.fld.tsv"
    mean = fld.read_text().split("\t")[1] if fld.is_file() else ""
    return (
        "(batch mode: one kallisto pseudo mapped the batch, kallisto quant-tcc ran this run's EM; "
        "the lines up to [   em] are this run's figures, as kallisto quant reports them)\n"
        f"[quant] will process pair 1: {first}\n{' ' * 29}{second}\n"
        "[quant] finding pseudoalignments for the reads ... done\n"
        f"[quant] processed {info['n_processed']:,} reads, {info['n_pseudoaligned']:,} reads pseudoaligned\n"
        + (f"[quant] estimated average fragment length: {mean}\n" if mean else "")
        + "[   em] quantifying the abundances ... done\n"
        + tcc_log.read_text(errors="replace")
    )
