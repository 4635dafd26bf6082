"""The species' quantifier (``quant.tool``) and a run's strandedness (``quant.strandedness``).

:func:`prepare_many` reads the head of each run's files once (a sample of ``quant.strand_sample``
spots), flags SRA Lite qualities from it and finds the strandedness with kallisto when ``auto``
(:mod:`pipeline.quant.strand`), for a whole batch at once; :func:`quantify` then quantifies a run
with kallisto
(:mod:`pipeline.quant.quantify`) or salmon (:mod:`pipeline.quant.salmon_quant`, whose ``-l A``
finds the library type itself). What was found goes into the run's ``pipeline_run.json`` under
:data:`QC_KEYS`, the columns the merged QC table takes from it. :func:`build_index` builds the
tool's index, once per species.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..files import remove_path
from ..model import RunQuant, Tools, yes_no
from ..reads.fastq import FastqError
from ..reads.sample import ReadSample, sample_head
from ..runlog import RunLog
from . import quantify as kallisto_quant
from . import salmon_quant, strand

TOOLS = ("kallisto", "salmon")
#: What a run records of its quantification, in the merged QC table's order.
QC_KEYS = ("quant_tool", "strandedness", "strand_how", "strand_fr", "strand_rf", "library_type", "lite_qualities")
#: ``quant.strand_sample``'s default: spots read from the head of each run. Enough: a share of
#: n hits has a binomial standard error of at most 0.5 / sqrt(n), 0.004 at 20,000 hits and 0.016
#: when only 5 % of the sample pseudoaligns, against decision margins of 0.1 (README).
STRAND_SAMPLE = 20_000


@dataclass
class QuantOptions:
    """A species' ``quant`` settings, as plain values."""

    tool: str = "kallisto"
    strandedness: str = "auto"
    strand_sample: int = STRAND_SAMPLE
    threads: int = 1
    fragment_length: float = 200
    fragment_sd: float = 20


def build_index(tool: str, fasta, index, log_path, tools: Tools, threads: int = 1) -> dict:
    """The species' index for ``tool`` at ``index`` (kallisto's file, salmon's folder)."""
    if tool == "salmon":
        return salmon_quant.build_index(fasta, index, log_path, exe=tools.salmon, threads=threads)
    return kallisto_quant.build_index(fasta, index, log_path, exe=tools.kallisto)


@dataclass
class RunFiles:
    """A run to prepare: its files, its log and its record so far."""

    run: str
    fastqs: list
    log: RunLog
    extra: Optional[dict] = None


def prepare(
    run: str, fastqs: list, index, quant_dir, opts: QuantOptions, tools: Tools, log: RunLog, extra: Optional[dict]
) -> tuple[strand.StrandCall, dict]:
    """:func:`prepare_many` for one run."""
    return prepare_many([RunFiles(run, fastqs, log, extra)], index, quant_dir, opts, tools)[run]


def prepare_many(
    jobs: Sequence[RunFiles], index, quant_dir, opts: QuantOptions, tools: Tools
) -> dict[str, tuple[strand.StrandCall, dict]]:
    """Each run's strandedness (configured, found from a sample of its head with kallisto, or left
    to salmon's ``-l A``) and its record so far (``extra``, the tool, the SRA Lite flag).

    With kallisto and ``auto``, the samples of all ``jobs`` are written to one temporary folder
    (``quant/.FIRST_RUN.strand.tmp``, removed after) and the paired ones mapped together
    (:func:`~pipeline.quant.strand.detect_paired`: two loads of the index for the lot); a
    single-end sample, or all of them when that fails, is mapped alone. A head of the files that
    cannot be sampled decides nothing (``undecided``, no lite flag): the quantification's own
    checks then fail the run, with the tool's log kept."""
    if not jobs:
        return {}
    detecting = opts.tool == "kallisto" and opts.strandedness == "auto"
    work = strand.sample_dir(quant_dir, jobs[0].run)
    samples: dict[str, ReadSample] = {}
    calls: dict[str, strand.StrandCall] = {}
    remove_path(work)
    try:
        for i, job in enumerate(jobs):
            try:
                samples[job.run] = sample_head(job.fastqs, opts.strand_sample, work / str(i) if detecting else None)
            except (FastqError, OSError) as e:  # the quantification's own checks give the run's verdict
                job.log.write(f"strand: the head of the files cannot be sampled ({e}); the quantification will tell")
        if detecting:
            calls = _detect(jobs, samples, index, work, opts, tools)
    finally:
        remove_path(work)
    out = {}
    for job in jobs:
        if opts.strandedness != "auto":
            call = strand.StrandCall(opts.strandedness, "configured")
        elif opts.tool == "salmon":
            call = strand.StrandCall("auto", "salmon -l A")
        else:
            call = calls.get(job.run) or strand.StrandCall("unstranded", "undecided")
        sample = samples.get(job.run)
        if sample is not None and sample.one_quality:
            job.log.write(
                f"qualities: every base of the first {sample.spots} spots has quality {sample.quality!r} (SRA Lite?)"
            )
        lite = "" if sample is None else yes_no(sample.one_quality)
        out[job.run] = call, (job.extra or {}) | {"quant_tool": opts.tool, "lite_qualities": lite} | call.record()
    return out


def _detect(jobs, samples: dict[str, ReadSample], index, work, opts: QuantOptions, tools: Tools) -> dict:
    """The strand calls of the sampled runs: the paired ones together, the rest (or all, when
    mapping them together fails) one by one."""
    t0 = time.monotonic()
    logs = {job.run: job.log for job in jobs}
    paired = {run: s for run, s in samples.items() if len(s.files) == 2 and s.spots > 0}
    calls = (
        strand.detect_paired(paired, index, work / "together", threads=opts.threads, logs=logs, exe=tools.kallisto)
        if paired
        else None
    ) or {}
    share = (time.monotonic() - t0) / max(1, len(samples))
    for i, (run, sample) in enumerate(samples.items()):
        if run not in calls:
            calls[run] = strand.detect(
                run,
                sample,
                index,
                work / f"alone-{i}",
                threads=opts.threads,
                fragment_length=opts.fragment_length,
                fragment_sd=opts.fragment_sd,
                log=logs[run],
                exe=tools.kallisto,
            )
        elif calls[run].seconds is not None:
            calls[run].seconds = round(share, 3)
    return calls


def quantify(
    run: str,
    fastqs: list,
    index,
    quant_dir,
    opts: QuantOptions,
    tools: Tools,
    *,
    expected_reads: Optional[int],
    verified: bool,
    log: RunLog,
    extra: Optional[dict] = None,
    prepared: Optional[tuple[strand.StrandCall, dict]] = None,
) -> RunQuant:
    """Quantify one run with the species' tool into ``quant_dir/RUN/`` (after :func:`prepare`,
    unless ``prepared`` is its answer already); never raises for the run's own failure."""
    call, record = prepared or prepare(run, fastqs, index, quant_dir, opts, tools, log, extra)
    same: dict[str, Any] = {
        "threads": opts.threads,
        "fragment_length": opts.fragment_length,
        "fragment_sd": opts.fragment_sd,
        "expected_reads": expected_reads,
        "verified": verified,
        "log": log,
    }
    if opts.tool == "salmon":
        record = {k: v for k, v in record.items() if k != "strandedness"}  # salmon's record says the one it used
        return salmon_quant.quantify_run(
            run, fastqs, index, quant_dir, strandedness=opts.strandedness, extra=record, exe=tools.salmon, **same
        )
    return kallisto_quant.quantify_run(
        run, fastqs, index, quant_dir, strand=call.strandedness, extra=record, exe=tools.kallisto, **same
    )


def qc_columns(record: dict) -> dict:
    """The QC table's columns of a run's ``pipeline_run.json`` (a record made before this module
    names no tool: kallisto, the only one then)."""
    return {k: record.get(k, "kallisto" if k == "quant_tool" else "") for k in QC_KEYS}


def strand_text(row: dict) -> str:
    """A run's strandedness and how it was found, in words for the report: ``rf (detected: fr
    0.00, rf 1.00)``, ``unstranded (undecided: ...)``, ``fr (configured)``, ``rf (salmon -l A: SR)``."""
    found = str(row.get("strandedness") or "")
    if not found:
        return ""
    how = str(row.get("strand_how") or "")
    if row.get("strand_fr") not in (None, ""):
        how += f": fr {float(row['strand_fr']):.2f}, rf {float(row['strand_rf']):.2f}"
    elif row.get("library_type"):
        how += f": {row['library_type']}"
    return f"{found} ({how})" if how else found
