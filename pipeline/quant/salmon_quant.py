"""Quantifying one run with salmon, verified, written into place atomically; building its index.

The counterpart of :mod:`pipeline.quant.quantify` for ``quant.tool: salmon``: the run is staged
in ``quant/.RUN.tmp``, salmon's ``num_processed`` must equal the reads expected (salmon too exits
0 on a truncated ``.gz`` and quantifies what it read), files no md5 vouched for are read to
their end beside it, and only then is the folder renamed to ``quant/RUN``, holding salmon's own
files plus ``abundance.tsv`` and ``run_info.json`` in kallisto's form (see :mod:`.salmon`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Optional

from ..fetch.transfer import md5_file
from ..files import atomic_write_json, atomic_write_text, staged_path
from ..model import PAIRED, SINGLE, RunQuant
from ..reads.fastq import FastqError
from ..runlog import RunLog
from . import kallisto, salmon
from .quantify import RUN_RECORD, QuantError, read_through, run_record, run_tool

#: salmon's stdout and stderr in the run's folder (its own log is ``logs/salmon_quant.log``).
TOOL_LOG = "salmon.log"


def index_md5(index_dir) -> str:
    """One md5 for salmon's index folder: of each file's name and md5, in name order, its logs
    (which hold times) left out."""
    h = hashlib.md5()
    for p in sorted(Path(index_dir).rglob("*")):
        if p.is_file() and p.suffix != ".log":
            h.update(f"{p.relative_to(index_dir)}\t{md5_file(p)}\n".encode())
    return h.hexdigest()


def build_index(fasta, index_dir, log_path, exe: str = "salmon", threads: int = 1) -> dict:
    """``salmon index`` into a temp folder, renamed into place once salmon says it is complete."""
    index_dir = Path(index_dir)
    t0 = time.monotonic()
    with staged_path(index_dir) as tmp:
        cwd = tmp.parent
        args = salmon.index_args(
            kallisto.relative_to(fasta, cwd), kallisto.relative_to(tmp, cwd), exe=exe, threads=threads
        )
        rc = kallisto.run(args, log_path, cwd=cwd)  # runs any tool: argument list, log, exit code
        if rc != 0 or not (tmp / "versionInfo.json").is_file():
            raise QuantError(f"salmon index failed on {fasta} (exit {rc}); see {log_path}")
    return {
        "index": str(index_dir),
        "bytes": sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file()),
        "seconds": round(time.monotonic() - t0, 3),
        "salmon_index_args": args[1:],
    }


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
    strandedness: str = "auto",
    extra: Optional[dict] = None,
    exe: str = "salmon",
) -> RunQuant:
    """``salmon quant -l A`` (or the library type ``strandedness`` names) into ``quant_dir/RUN/``.

    As :func:`pipeline.quant.quantify.quantify_run`: layout from the files, ``expected_reads``
    against ``num_processed``, a read-through when ``verified`` is false, ``extra`` recorded in
    ``pipeline_run.json`` with the library type salmon used. Never raises for the run's own failure.
    """
    t0 = time.monotonic()
    quant_dir = Path(quant_dir)
    layout = PAIRED if len(fastqs) == 2 else SINGLE
    result = RunQuant(run=run, layout=layout)
    try:
        with staged_path(quant_dir / run) as tmp:
            if len(fastqs) not in (1, 2):
                raise QuantError(f"expected 1 or 2 FASTQ files, got {len(fastqs)}")
            tmp.mkdir(parents=True)

            def make_args(inputs: list) -> list[str]:
                return salmon.quant_args(
                    kallisto.relative_to(index, tmp),
                    ".",
                    [kallisto.relative_to(f, tmp) for f in inputs],
                    libtype=salmon.library_type(strandedness, layout == SINGLE),
                    threads=threads,
                    fragment_length=fragment_length,
                    fragment_sd=fragment_sd,
                    exe=exe,
                )

            rc, spots_read, args = run_tool(run, tmp, fastqs, make_args, tmp / TOOL_LOG, log, fed=not verified)
            try:
                expected_reads = read_through(spots_read, expected_reads, log, tool="salmon")
                found = _check_output(tmp, rc, expected_reads, result)
            except (QuantError, FastqError, ValueError, OSError):
                keep_tool_log(tmp, log)
                raise
            atomic_write_json(
                tmp / RUN_RECORD,
                run_record(result, fastqs, expected_reads) | {"salmon_args": args} | (extra or {}) | found,
            )
        result.status = "ok"
        log.write(
            f"quant: ok, num_processed={result.n_processed} percent_mapped={result.p_pseudoaligned} "
            f"library type {found['library_type']}"
        )
    except (QuantError, FastqError, ValueError, OSError) as e:
        result.reason = str(e)
        log.write(f"quant: failed: {e}")
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _check_output(tmp: Path, rc: int, expected_reads: Optional[int], result: RunQuant) -> dict:
    """salmon's exit code, files and ``num_processed``; writes ``abundance.tsv`` and
    ``run_info.json``; returns what salmon found of the library (its type, strandedness, bias)."""
    if rc != 0:
        raise QuantError(f"salmon quant exited {rc} (its log is in the run's log file)")
    missing = [str(f) for f in (salmon.QUANT_SF, salmon.META_INFO, salmon.LIB_FORMAT_COUNTS) if not (tmp / f).is_file()]
    if missing:
        raise QuantError(f"salmon quant wrote no {', '.join(missing)}")
    meta = salmon.read_json_file(tmp / salmon.META_INFO)
    if "num_processed" not in meta:
        raise QuantError(f"salmon's {salmon.META_INFO} has no num_processed")
    info = salmon.run_info_from_meta(meta)
    n = info["n_processed"]
    if expected_reads is not None and n != int(expected_reads):
        raise QuantError(f"salmon processed {n} reads but the metadata says {expected_reads}: truncated or wrong input")
    atomic_write_text(tmp / "abundance.tsv", salmon.abundance_text((tmp / salmon.QUANT_SF).read_text()))
    atomic_write_text(tmp / "run_info.json", kallisto.run_info_text(info))
    result.n_processed = n
    result.n_pseudoaligned = info["n_pseudoaligned"]
    result.p_pseudoaligned = info["p_pseudoaligned"]
    libtype, figures = salmon.detected_format(tmp)
    return {"library_type": libtype, "strandedness": salmon.strandedness_of(libtype)} | figures


def keep_tool_log(tmp: Path, log: RunLog) -> None:
    """Copy the end of salmon's output and log into the run's log before the temp folder goes."""
    for name in (TOOL_LOG, "logs/salmon_quant.log"):
        if (tmp / name).exists():
            log.write(f"salmon {name}:\n" + (tmp / name).read_text(errors="replace")[-4000:])
