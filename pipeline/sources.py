"""Obtaining one run's reads from an ordered list of sources, falling through on failure.

- ``ena``: the FASTQ files listed in the metadata (``fastq_ftp``), each verified against
  ``fastq_bytes`` and ``fastq_md5``.
- ``sra``: the run's ``.sra`` file from its candidate URLs in order (ENA's ``sra_ftp``, the AWS
  Open Data copy, the metadata's own links), checked for the ``NCBI.sra`` signature, then
  converted locally with ``fasterq-dump``.

A source that fails leaves nothing behind: its partial files are removed before the next source
is tried. The layout used later is decided from the files obtained, not from the metadata.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from . import quant, sra, subsample
from .download import DownloadError, RetryPolicy, fetch, safe_name
from .model import RemoteFile, Run
from .runlog import RunLog
from .util import remove_tree_files

SOURCES = ("ena", "sra")


def run_dir(fastq_dir, run: str) -> Path:
    return Path(fastq_dir) / run


def clear_run_dir(fastq_dir, run: str) -> int:
    """Remove everything in ``fastq/RUN/`` (finished and partial files); return bytes freed."""
    d = run_dir(fastq_dir, run)
    freed = remove_tree_files(d)
    if d.exists():
        d.rmdir()
    return freed


def _fetch_ena(run: Run, out: Path, mirrors, policy, log, progress) -> dict:
    if not run.files:
        raise DownloadError("no FASTQ files listed in the metadata")
    names, total = [], 0
    for i, rf in enumerate(run.files, 1):
        name = safe_name(rf.name, f"{run.run}_{i}.fastq.gz")
        info = fetch(rf, out / name, mirrors, policy, log, progress)
        names.append(name)
        total += info["bytes"]
    return {"files": names, "bytes": total, "expected_reads": run.read_count,
            "verified": all(f.md5 for f in run.files)}


def _fetch_sra(run: Run, out: Path, mirrors, policy, log, progress, threads: int, lock=None) -> dict:
    if not run.sra_urls:
        raise DownloadError("no .sra URL known for this run")
    if lock is not None and not lock.acquire(blocking=False):
        log.write("sra: waiting while another run of this batch fetches and converts its .sra (one at a time)")
        lock.acquire()
    try:
        return _fetch_sra_unlocked(run, out, mirrors, policy, log, progress, threads)
    finally:
        if lock is not None:
            lock.release()


def _fetch_sra_unlocked(run: Run, out: Path, mirrors, policy, log, progress, threads: int) -> dict:
    reasons = []
    for i, url in enumerate(run.sra_urls):
        # ENA's sra_ftp comes first and is the only one the metadata gives a size and md5 for
        first_with_md5 = i == 0 and run.sra_md5 is not None
        rf = RemoteFile(url=url, name=f"{run.run}.sra", md5=run.sra_md5 if first_with_md5 else None,
                        bytes=run.sra_bytes if first_with_md5 else None)
        dest = out / rf.name
        try:
            info = fetch(rf, dest, mirrors, policy, log, progress)
            paths = sra.sra_to_fastq(dest, out, run.run, threads=threads, log=log)
        except (DownloadError, sra.SraError) as e:
            reasons.append(str(e))
            log.write(f"sra: {url}: {e}")
            unconvertible = isinstance(e, sra.SraError) and dest.exists() and sra.is_sra_file(dest)
            dest.unlink(missing_ok=True)
            Path(out, f".{rf.name}.part").unlink(missing_ok=True)
            if unconvertible:
                break  # a real .sra that fasterq-dump cannot convert: other copies will not do better
            continue
        dest.unlink(missing_ok=True)
        spots = quant.count_fastq_records(paths[0])
        if run.read_count is not None and spots != run.read_count:
            log.write(f"sra: fasterq-dump gave {spots} spots; the metadata says {run.read_count} "
                      "(unpaired reads of a paired run are left out)")
        return {"files": [p.name for p in paths], "bytes": info["bytes"], "expected_reads": spots,
                "verified": True, "url": info["url"]}
    raise DownloadError("; ".join(reasons))


def obtain_run(run: Run, fastq_dir, mirrors: dict, policy: RetryPolicy, log: RunLog,
               sources=SOURCES, progress=None, threads: int = 1, sra_lock=None) -> dict:
    """Get one run's FASTQ files into ``fastq_dir/RUN/`` from the first source that works.

    A run's files are fetched one after another, so ``download.parallel`` runs at once (the
    caller's pool) means at most that many transfers. ``sra_lock``, shared by the runs of one
    batch, makes their ``.sra`` routes (download and conversion) take turns, so the batch holds at
    most one conversion's excess (see :func:`pipeline.batches.sra_room`).
    Never raises for the run's own failure. Returns {"run", "status": "ok"|"failed", "source",
    "files" (names in that folder), "bytes", "expected_reads", "verified", "seconds", "reason"}.
    """
    t0 = time.monotonic()
    out = run_dir(fastq_dir, run.run)
    result = {"run": run.run, "status": "failed", "source": "", "files": [], "bytes": 0, "seconds": 0.0,
              "reason": ""}
    reasons = []
    for source in sources:
        try:
            if source == "ena":
                got = _fetch_ena(run, out, mirrors, policy, log, progress)
            elif source == "sra":
                got = _fetch_sra(run, out, mirrors, policy, log, progress, threads, sra_lock)
            else:
                raise DownloadError(f"unknown source {source!r}")
        except DownloadError as e:
            reasons.append(f"{source}: {e}")
            log.write(f"source {source} failed: {e}")
            clear_run_dir(fastq_dir, run.run)
            continue
        result.update(got, status="ok", source=source)
        log.write(f"obtained from {source}: {', '.join(got['files'])}")
        break
    else:
        result["reason"] = " | ".join(reasons) or "no download source configured"
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


def apply_max_bp(run: Run, res: dict, fastq_dir, max_bp: Optional[int], log: RunLog) -> dict:
    """``download.max_bp``: keep only the first spots of a run bigger than the cap. Reading the
    files for it also verifies them (a truncated gzip or mates that disagree fail the run here);
    the cap's own output is written by us. Files no md5 vouches for and that are not capped are
    read through later, while kallisto runs (:func:`pipeline.quant.quantify_run`).
    A run that fails loses its files. Returns ``res`` updated."""
    if res["status"] != "ok" or not max_bp or (run.base_count is not None and run.base_count <= max_bp):
        return res
    paths = [run_dir(fastq_dir, run.run) / f for f in res["files"]]
    try:
        cap = subsample.cap_reads(paths, max_bp, over=run.base_count is not None)
    except subsample.CapError as e:
        return _failed(res, f"max_bp: {e}", fastq_dir, run, log)
    if not cap["capped"] and res.get("expected_reads") not in (None, cap["spots"]):
        return _failed(res, f"{cap['spots']} spots in the files but the metadata says {res['expected_reads']}",
                       fastq_dir, run, log)
    res.update(expected_reads=cap["spots"], verified=True)
    if cap["capped"]:
        res["capped_bases"] = cap["bases"]
        log.write(f"max_bp: kept the first {cap['spots']} spots ({cap['bases']} bases)")
    return res


def _failed(res: dict, reason: str, fastq_dir, run: Run, log: RunLog) -> dict:
    log.write(f"failed after download: {reason}")
    clear_run_dir(fastq_dir, run.run)
    return res | {"status": "failed", "reason": reason}
