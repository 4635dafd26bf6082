"""Quantifying one run with kallisto, verified, written into place atomically; building the index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from .. import fifo
from ..files import atomic_write_json, atomic_write_text, staged_path
from ..model import PAIRED, SINGLE, ExpectedFailure, RunQuant, run_file_stems
from ..reads.fastq import FastqError, mates_agree
from ..runlog import RunLog
from . import kallisto

OUTPUT_FILES = ("abundance.tsv", "run_info.json")
#: What the pipeline records beside kallisto's own files in ``quant/RUN/``.
RUN_RECORD = "pipeline_run.json"


class QuantError(ExpectedFailure):
    pass


def is_quantified(quant_dir, run: str) -> bool:
    """A run is done when ``quant/RUN/abundance.tsv`` exists: the folder is renamed in whole."""
    return (Path(quant_dir) / run / "abundance.tsv").is_file()


def build_index(fasta, index_path, log_path, exe: str = "kallisto") -> dict:
    """``kallisto index`` into a temp name, renamed into place on success.

    kallisto runs in the index's folder, given the temp name and the FASTA relative to it (as
    ``kallisto quant`` is run, see :func:`quantify_run`).
    """
    index_path = Path(index_path)
    t0 = time.monotonic()
    with staged_path(index_path) as tmp:
        cwd = tmp.parent
        args = kallisto.index_args(kallisto.relative_to(fasta, cwd), kallisto.relative_to(tmp, cwd), exe=exe)
        rc = kallisto.run(args, log_path, cwd=cwd)
        if rc != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            raise QuantError(f"kallisto index failed on {fasta} (exit {rc}); see {log_path}")
    return {"index": str(index_path), "bytes": index_path.stat().st_size, "seconds": round(time.monotonic() - t0, 3)}


def quantify_run(
    run: str,
    fastqs: list,
    index,
    quant_dir,
    *,
    threads: int,
    fragment_length: float,
    fragment_sd: float,
    expected_reads: Optional[int],
    verified: bool,
    log: RunLog,
    extra: Optional[dict] = None,
    exe: str = "kallisto",
    strand: Optional[str] = None,
) -> RunQuant:
    """Quantify one run into ``quant_dir/RUN/``. Layout follows the files: 2 = paired, 1 = single.

    ``expected_reads`` (spots) from the metadata is compared with kallisto's ``n_processed``.
    When no md5 vouched for the files (``verified`` false), each is read to its end by this
    process, which passes it on decompressed to kallisto through a FIFO
    (:func:`~pipeline.quant.kallisto.run_fed`): a truncated gzip (which kallisto quantifies
    silently, exit 0) or mates of different lengths fail the run, and the count read is what
    ``n_processed`` must equal. The files are read once, and decompressed once, outside kallisto.
    ``extra`` is recorded with the run (``quant/RUN/pipeline_run.json``), e.g. its source.
    ``strand`` (``fr``, ``rf``) quantifies a stranded library (see :mod:`pipeline.quant.strand`).
    Never raises for the run's own failure.

    kallisto runs in the run's temp folder with ``-o .`` and the index and FASTQs relative to it,
    so that no folder name of the output tree reaches kallisto's unescaped ``"call"`` in
    ``run_info.json``; a ``run_info.json`` still made invalid by it (a FASTQ elsewhere whose path
    holds a quote or a backslash) is read all the same and rewritten as valid JSON, as the log says.
    """
    t0 = time.monotonic()
    quant_dir = Path(quant_dir)
    layout = PAIRED if len(fastqs) == 2 else SINGLE
    result = RunQuant(run=run, layout=layout)
    tmp: Optional[Path] = None
    try:
        with staged_path(quant_dir / run) as tmp:
            if len(fastqs) not in (1, 2):
                raise QuantError(f"expected 1 or 2 FASTQ files, got {len(fastqs)}")
            tmp.mkdir(parents=True)
            rc, spots_read, args = run_tool(
                run,
                tmp,
                fastqs,
                lambda inputs: quant_args_in(tmp, index, inputs, threads, fragment_length, fragment_sd, exe, strand),
                tmp / "kallisto.log",
                log,
                fed=not verified,
            )
            try:
                expected_reads = read_through(spots_read, expected_reads, log)
                _check_output(tmp, rc, expected_reads, result, log)
            except (QuantError, FastqError, ValueError, OSError):
                keep_tool_log(tmp, log)
                raise
            write_run_record(tmp, result, fastqs, expected_reads, args, extra)
        result.status = "ok"
        log.write(f"quant: ok, n_processed={result.n_processed} p_pseudoaligned={result.p_pseudoaligned}")
    except (QuantError, FastqError, ValueError, OSError) as e:
        result.reason = str(e)
        log.write(f"quant: failed: {e}")
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def run_tool(
    run: str,
    tmp: Path,
    fastqs: list,
    make_args: Callable[[list], list[str]],
    tool_log: Path,
    log: RunLog,
    fed: bool,
) -> tuple[int, Optional[Callable[[], int]], list[str]]:
    """Run the quantifier whose arguments ``make_args(inputs)`` gives, in ``tmp``, on ``run``'s
    ``fastqs``; return its exit code, a callable giving the spots read (None unless ``fed``) and
    its arguments.

    ``fed`` (files no md5 vouches for): the tool reads FIFOs in ``tmp`` that
    :func:`~pipeline.quant.kallisto.run_fed` fills with the files decompressed and counted; the
    callable then raises FastqError for a broken file or mates that differ. The FIFOs are named as
    the run's files are staged, less ``.gz`` (``RUN_1.fastq``, ``RUN_2.fastq``; ``RUN.fastq``), so
    the tool's log names the run as MultiQC expects. They are removed before this returns, so that
    ``tmp`` holds only the tool's output."""
    if not fed:
        args = make_args(list(fastqs))
        log.write("quant: " + kallisto.command_line(args, tmp))
        return kallisto.run(args, tool_log, cwd=tmp), None, args
    fifos = fifo.make(tmp, [stem + ".fastq" for stem in run_file_stems(run, len(fastqs))])
    args = make_args(fifos)
    log.write(f"quant: {kallisto.command_line(args, tmp)} (FIFOs fed with {', '.join(map(str, fastqs))})")
    counts, rc = kallisto.run_fed(args, list(zip(fastqs, fifos)), tool_log, cwd=tmp)
    for p in fifos:
        p.unlink()
    return rc, lambda: mates_agree([c.result() for c in counts]), args


def quant_args_in(
    tmp: Path,
    index,
    fastqs: list,
    threads: int,
    fragment_length: float,
    fragment_sd: float,
    exe: str,
    strand: Optional[str] = None,
) -> list[str]:
    """``kallisto quant`` run in ``tmp`` with ``-o .``, the index and FASTQs relative to it (see
    :func:`quantify_run`); two FASTQs paired, one single-end; ``strand`` fr or rf, or None."""
    return kallisto.quant_args(
        kallisto.relative_to(index, tmp),
        ".",
        [kallisto.relative_to(f, tmp) for f in fastqs],
        threads=threads,
        single=len(fastqs) == 1,
        fragment_length=fragment_length,
        fragment_sd=fragment_sd,
        exe=exe,
        strand=strand,
    )


def run_record(result: RunQuant, fastqs: list, expected_reads: Optional[int]) -> dict:
    """The start of a run's ``pipeline_run.json``: its figures, its files' names, the reads expected."""
    return {k: v for k, v in result.to_dict().items() if k != "status"} | {
        "fastqs": [Path(f).name for f in fastqs],
        "expected_reads": expected_reads,
    }


def write_run_record(
    tmp: Path,
    result: RunQuant,
    fastqs: list,
    expected_reads: Optional[int],
    args: list[str],
    extra: Optional[dict],
) -> None:
    """``RUN_RECORD`` in the run's temp folder: :func:`run_record`, kallisto's arguments and
    ``extra`` (e.g. the run's source)."""
    atomic_write_json(
        tmp / RUN_RECORD, run_record(result, fastqs, expected_reads) | {"kallisto_args": args} | (extra or {})
    )


def read_through(
    spots_read: Optional[Callable[[], int]], expected_reads: Optional[int], log: RunLog, tool: str = "kallisto"
):
    """The reads the quantifier must have processed: the count of the read-through (``spots_read``
    gives it once the tool has run) when there is one, which must match the metadata's; else the
    metadata's. FastqError for a truncated file, before the tool's verdict."""
    if spots_read is None:
        return expected_reads
    spots = check_spots(spots_read(), expected_reads)
    log.write(f"quant: read through {spots} spots while {tool} ran (no md5 to check against)")
    return spots


def check_spots(spots: int, expected_reads: Optional[int]) -> int:
    """The spots read through a run's files, which must be what the metadata expects (if it says)."""
    if expected_reads is not None and spots != int(expected_reads):
        raise QuantError(f"{spots} spots in the files but the metadata says {expected_reads}")
    return spots


def _check_output(tmp: Path, rc: int, expected_reads: Optional[int], result: RunQuant, log: RunLog) -> None:
    """kallisto's exit code, its files and its ``n_processed`` against the reads expected.

    A ``run_info.json`` that kallisto made invalid JSON (its unescaped ``"call"``) is rewritten as
    valid JSON with the same fields, for whoever reads ``quant/RUN/`` later.
    """
    if rc != 0:
        raise QuantError(f"kallisto quant exited {rc} (its log is in the run's log file)")
    missing = [f for f in OUTPUT_FILES if not (tmp / f).is_file()]
    if missing:
        raise QuantError(f"kallisto quant wrote no {', '.join(missing)}")
    try:
        info, repaired = kallisto.load_run_info(tmp)
    except kallisto.RunInfoError as e:
        raise QuantError(f"cannot read kallisto's run_info.json: {e}") from None
    if repaired:
        atomic_write_text(tmp / "run_info.json", kallisto.run_info_text(info))
        log.write(
            'quant: kallisto wrote run_info.json with the command line unescaped in its "call" (a path there '
            "holds a quote, a backslash or a control character), so the file was not valid JSON with kallisto's "
            "own figures; rewritten as valid JSON with the same fields"
        )
    n = int(info.get("n_processed", -1))
    if expected_reads is not None and n != int(expected_reads):
        raise QuantError(
            f"kallisto processed {n} reads but the metadata says {expected_reads}: truncated or wrong input"
        )
    result.n_processed = n
    result.n_pseudoaligned = int(info.get("n_pseudoaligned", 0))
    result.p_pseudoaligned = float(info.get("p_pseudoaligned", 0.0))


def keep_tool_log(tmp: Path, log: RunLog) -> None:
    """Copy the end of kallisto's log into the run's log before the temp folder goes."""
    if (tmp / "kallisto.log").exists():
        log.write("kallisto log:\n" + (tmp / "kallisto.log").read_text(errors="replace")[-4000:])
