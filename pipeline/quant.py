"""Quantifying one run with kallisto, verified, written into place atomically."""
from __future__ import annotations

import gzip
import os
import shutil
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from . import kallisto
from .runlog import RunLog
from .util import atomic_write_json

OUTPUT_FILES = ("abundance.tsv", "run_info.json")


class QuantError(Exception):
    pass


def is_quantified(quant_dir, run: str) -> bool:
    """A run is done when ``quant/RUN/abundance.tsv`` exists: the folder is renamed in whole."""
    return (Path(quant_dir) / run / "abundance.tsv").is_file()


def count_fastq_records(path) -> int:
    """Count FASTQ records, reading a gzip stream to its end: a truncated file raises QuantError."""
    opener = gzip.open if str(path).endswith(".gz") else open
    lines = 0
    try:
        with opener(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                lines += block.count(b"\n")
    except (EOFError, OSError, zlib.error) as e:
        raise QuantError(f"{path}: unreadable or truncated FASTQ: {e}") from None
    return lines // 4


def count_checked(fastqs: list) -> int:
    """Spots in files no md5 vouches for: each read to its end, mates must agree. Raises QuantError."""
    counts = [count_fastq_records(f) for f in fastqs]
    if len(counts) == 2 and counts[0] != counts[1]:
        raise QuantError(f"mates differ in read count: {counts[0]} vs {counts[1]}")
    return counts[0]


def build_index(fasta, index_path, log_path) -> dict:
    """``kallisto index`` into a temp name, renamed into place on success."""
    index_path = Path(index_path)
    tmp = index_path.with_name(f".{index_path.name}.tmp")
    t0 = time.monotonic()
    tmp.unlink(missing_ok=True)
    rc = kallisto.run(kallisto.index_args(fasta, tmp, exe=kallisto.binary()), log_path)
    if rc != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise QuantError(f"kallisto index failed on {fasta} (exit {rc}); see {log_path}")
    os.replace(tmp, index_path)
    return {"index": str(index_path), "bytes": index_path.stat().st_size, "seconds": round(time.monotonic() - t0, 3)}


def quantify_run(run: str, fastqs: list, index, quant_dir, *, threads: int, fragment_length: float,
                 fragment_sd: float, expected_reads: Optional[int], verified: bool, log: RunLog,
                 extra: Optional[dict] = None) -> dict:
    """Quantify one run into ``quant_dir/RUN/``. Layout follows the files: 2 = paired, 1 = single.

    ``expected_reads`` (spots) from the metadata is compared with kallisto's ``n_processed``.
    When no md5 vouched for the files (``verified`` false), each is also read to its end while
    kallisto runs, in a thread of this process: a truncated gzip (which kallisto quantifies
    silently, exit 0) or mates of different lengths fail the run, and the count read is what
    ``n_processed`` must equal. Both read the same pages, so the files are read from disk once, and
    with a core to spare the check costs no wall time.
    ``extra`` is recorded with the run (``quant/RUN/pipeline_run.json``), e.g. its source.
    Returns {"run", "status", "layout", "n_processed", ..., "reason"}; never raises for the run.
    """
    t0 = time.monotonic()
    quant_dir = Path(quant_dir)
    final = quant_dir / run
    tmp = quant_dir / f".{run}.tmp"
    layout = "PAIRED" if len(fastqs) == 2 else "SINGLE"
    result = {"run": run, "status": "failed", "layout": layout, "reason": ""}
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            if len(fastqs) not in (1, 2):
                raise QuantError(f"expected 1 or 2 FASTQ files, got {len(fastqs)}")
            counting = None if verified else pool.submit(count_checked, fastqs)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            args = kallisto.quant_args(index, tmp, fastqs, threads=threads, single=layout == "SINGLE",
                                       fragment_length=fragment_length, fragment_sd=fragment_sd,
                                       exe=kallisto.binary())
            log.write("quant: " + " ".join(args))
            rc = kallisto.run(args, tmp / "kallisto.log")
            if counting is not None:
                spots = counting.result()  # QuantError for a truncated file, before kallisto's verdict
                if expected_reads is not None and spots != int(expected_reads):
                    raise QuantError(f"{spots} spots in the files but the metadata says {expected_reads}")
                expected_reads = spots
                log.write(f"quant: read through {spots} spots while kallisto ran (no md5 to check against)")
        if rc != 0:
            raise QuantError(f"kallisto quant exited {rc} (its log is in the run's log file)")
        missing = [f for f in OUTPUT_FILES if not (tmp / f).is_file()]
        if missing:
            raise QuantError(f"kallisto quant wrote no {', '.join(missing)}")
        info = kallisto.read_run_info(tmp)
        n = int(info.get("n_processed", -1))
        if expected_reads is not None and n != int(expected_reads):
            raise QuantError(f"kallisto processed {n} reads but the metadata says {expected_reads}: "
                             "truncated or wrong input")
        result.update(n_processed=n, n_pseudoaligned=int(info.get("n_pseudoaligned", 0)),
                      p_pseudoaligned=float(info.get("p_pseudoaligned", 0.0)))
        atomic_write_json(tmp / "pipeline_run.json", {k: v for k, v in result.items() if k != "status"} |
                          {"fastqs": [Path(f).name for f in fastqs], "expected_reads": expected_reads} | (extra or {}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        result["status"] = "ok"
        log.write(f"quant: ok, n_processed={n} p_pseudoaligned={result['p_pseudoaligned']}")
    except (QuantError, ValueError, OSError) as e:
        result["reason"] = str(e)
        log.write(f"quant: failed: {e}")
        if (tmp / "kallisto.log").exists():
            log.write("kallisto log:\n" + (tmp / "kallisto.log").read_text(errors="replace")[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result
