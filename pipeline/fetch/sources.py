"""Obtaining one run's reads from an ordered list of sources, falling through on failure.

- ``ena``: the FASTQ files listed in the metadata (``fastq_ftp``), each verified against
  ``fastq_bytes`` and ``fastq_md5``.
- ``sra``: the run's ``.sra`` file from its candidate URLs in order (ENA's ``sra_ftp``, the AWS
  Open Data copy, the metadata's own links), checked for the ``NCBI.sra`` signature, then
  converted locally with ``fasterq-dump``.

Whatever the source, a run's files are staged in ``fastq/RUN/`` under names made from its
accession (:func:`staged_names`): ``RUN_1.fastq.gz`` and ``RUN_2.fastq.gz`` for a pair,
``RUN.fastq.gz`` for single-end reads (``.fastq`` when the reads are not gzipped), the names the
``.sra`` route writes too. So kallisto's log, which names its first FASTQ, names the run (tools
that read it, such as MultiQC, take their sample names from it), and two runs of the user's own
files that share a file name stay apart. The run's log names the original file beside the staged one.

A source that fails leaves nothing behind: its partial files are removed before the next source
is tried. The layout used later is decided from the files obtained, not from the metadata.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..files import remove_tree_files
from ..model import SOURCES, RemoteFile, Run, RunDownload, Tools, excerpt, file_name_problem, run_file_stems
from ..reads import cap
from ..reads.fastq import count_fastq_records
from ..runlog import RunLog
from . import segments, sra
from .retry import RetryPolicy
from .transfer import DownloadError, apply_mirrors, fetch


@dataclass
class FetchSetup:
    """What every run of a batch is fetched with."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    mirrors: dict = field(default_factory=dict)
    sources: Sequence[str] = SOURCES
    tools: Tools = field(default_factory=Tools)
    threads: int = 1  # fasterq-dump threads
    split: segments.Split = field(default_factory=segments.Split)  # download.connections, min_segment
    #: shared by the runs of one batch: their ``.sra`` routes (download and conversion) take turns,
    #: so the batch holds at most one conversion's excess (see :func:`pipeline.plan.sizes.sra_excess`)
    sra_lock: Optional[threading.Lock] = None
    progress: Optional[Callable[[int], None]] = None  # bytes received


def clear_run_dir(run_dir) -> int:
    """Remove everything in a run's ``fastq/RUN/`` (finished and partial files); return bytes freed."""
    d = Path(run_dir)
    freed = remove_tree_files(d)
    if d.exists():
        d.rmdir()
    return freed


GZIP_MAGIC = b"\x1f\x8b"


def _local_path(url: str) -> Optional[Path]:
    """The local file a ``file://`` URL names, or None for any other URL."""
    parts = urllib.parse.urlsplit(url)
    return Path(urllib.request.url2pathname(parts.path)) if parts.scheme.lower() == "file" else None


def fastq_suffix(rf: RemoteFile, mirrors: Optional[dict] = None) -> str:
    """``.fastq.gz`` for gzipped reads, ``.fastq`` for plain ones.

    A local file (a ``file://`` URL, after ``mirrors``) is told by its first bytes, which it is
    read for (only those, and never written); a remote one, or a local file that cannot be read
    (its fetch then fails with the reason), by its name ending in ``.gz``.
    """
    local = _local_path(apply_mirrors(rf.url, mirrors or {}))
    if local is not None:
        try:
            with open(local, "rb") as fh:
                return ".fastq.gz" if fh.read(2) == GZIP_MAGIC else ".fastq"
        except OSError:
            pass
    return ".fastq.gz" if rf.name.lower().endswith(".gz") else ".fastq"


def staged_names(run: str, files: Sequence[RemoteFile], mirrors: Optional[dict] = None) -> list[str]:
    """The names ``files`` get in the run's ``fastq/RUN/``: ``RUN_1`` and ``RUN_2`` for a pair
    (``RUN_N`` for the N-th of any other number), ``RUN`` for one file; each with
    :func:`fastq_suffix`. The accession is checked when the :class:`Run` is made, so these are
    always safe file names."""
    return [stem + fastq_suffix(rf, mirrors) for stem, rf in zip(run_file_stems(run, len(files)), files)]


def _fetch_ena(run: Run, out: Path, setup: FetchSetup, log: RunLog) -> RunDownload:
    if not run.files:
        raise DownloadError("no FASTQ files listed in the metadata")
    for rf in run.files:
        # never written (the staged name is), but logged: reading the metadata refuses such a name,
        # and one that comes here anyway (a batch file edited by hand) fails the run, naming it
        problem = file_name_problem(rf.name)
        if problem:
            raise DownloadError(f"local file name {excerpt(rf.name)} {problem}")
    names, total = [], 0
    for rf, name in zip(run.files, staged_names(run.run, run.files, setup.mirrors)):
        if name != rf.name:
            log.write(f"ena: {rf.name} ({rf.url}) is staged as {name}")
        info = fetch(rf, out / name, setup.mirrors, setup.policy, log, setup.progress, setup.split)
        names.append(name)
        total += info["bytes"]
    return RunDownload(
        run=run.run, files=names, bytes=total, expected_reads=run.read_count, verified=all(f.md5 for f in run.files)
    )


def _fetch_sra(run: Run, out: Path, setup: FetchSetup, log: RunLog) -> RunDownload:
    if not run.sra_urls:
        raise DownloadError("no .sra URL known for this run")
    lock = setup.sra_lock
    if lock is not None and not lock.acquire(blocking=False):
        log.write("sra: waiting while another run of this batch fetches and converts its .sra (one at a time)")
        lock.acquire()
    try:
        return _fetch_sra_unlocked(run, out, setup, log)
    finally:
        if lock is not None:
            lock.release()


def _fetch_sra_unlocked(run: Run, out: Path, setup: FetchSetup, log: RunLog) -> RunDownload:
    reasons = []
    for i, url in enumerate(run.sra_urls):
        # ENA's sra_ftp comes first and is the only one the metadata gives a size and md5 for
        first_with_md5 = i == 0 and run.sra_md5 is not None
        rf = RemoteFile(
            url=url,
            name=f"{run.run}.sra",
            md5=run.sra_md5 if first_with_md5 else None,
            bytes=run.sra_bytes if first_with_md5 else None,
        )
        dest = out / rf.name
        try:
            info = fetch(rf, dest, setup.mirrors, setup.policy, log, setup.progress, setup.split)
            paths = sra.sra_to_fastq(
                dest,
                out,
                run.run,
                threads=setup.threads,
                log=log,
                compress=setup.tools.gzip_fastq,
                exe=setup.tools.fasterq_dump,
            )
        except (DownloadError, sra.SraError) as e:
            reasons.append(str(e))
            log.write(f"sra: {url}: {e}")
            unconvertible = isinstance(e, sra.SraError) and dest.exists() and sra.is_sra_file(dest)
            dest.unlink(missing_ok=True)
            segments.discard(Path(out, f".{rf.name}.part"))
            if unconvertible:
                break  # a real .sra that fasterq-dump cannot convert: other copies will not do better
            continue
        dest.unlink(missing_ok=True)
        spots = count_fastq_records(paths[0])
        if run.read_count is not None and spots != run.read_count:
            log.write(
                f"sra: fasterq-dump gave {spots} spots; the metadata says {run.read_count} "
                "(unpaired reads of a paired run are left out)"
            )
        return RunDownload(
            run=run.run, files=[p.name for p in paths], bytes=info["bytes"], expected_reads=spots, verified=True
        )
    raise DownloadError("; ".join(reasons))


_ROUTES = {"ena": _fetch_ena, "sra": _fetch_sra}
assert set(_ROUTES) == set(SOURCES)


def obtain_run(run: Run, run_dir, setup: FetchSetup, log: RunLog) -> RunDownload:
    """Get one run's FASTQ files into ``run_dir`` (its ``fastq/RUN/``) from the first source
    that works, trying ``setup.sources`` in order.

    A run's files are fetched one after another, so ``download.parallel`` runs at once (the
    caller's pool) means at most that many transfers. Never raises for the run's own failure.
    """
    t0 = time.monotonic()
    out = Path(run_dir)
    result = RunDownload(run=run.run)
    reasons = []
    for source in setup.sources:
        route = _ROUTES.get(source)
        try:
            if route is None:
                raise DownloadError(f"unknown source {source!r}")
            got = route(run, out, setup, log)
        except DownloadError as e:
            reasons.append(f"{source}: {e}")
            log.write(f"source {source} failed: {e}")
            clear_run_dir(out)
            continue
        result = got
        result.status, result.source = "ok", source
        log.write(f"obtained from {source}: {', '.join(got.files)}")
        break
    else:
        result.reason = " | ".join(reasons) or "no download source configured"
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def apply_max_bp(run: Run, res: RunDownload, run_dir, max_bp: Optional[int], log: RunLog) -> RunDownload:
    """``download.max_bp``: keep only the first spots of a run bigger than the cap. Reading the
    files for it also verifies them (a truncated gzip or mates that disagree fail the run here);
    the cap's own output is written by us. Files no md5 vouches for and that are not capped are
    read through later, while kallisto runs (:func:`pipeline.quant.quantify.quantify_run`).
    A run that fails loses its files. Returns ``res`` updated."""
    if not res.ok or not max_bp or (run.base_count is not None and run.base_count <= max_bp):
        return res
    paths = [Path(run_dir) / f for f in res.files]
    try:
        kept = cap.cap_reads(paths, max_bp, over=run.base_count is not None)
    except cap.CapError as e:
        return _failed(res, f"max_bp: {e}", run_dir, log)
    if not kept["capped"] and res.expected_reads not in (None, kept["spots"]):
        return _failed(
            res, f"{kept['spots']} spots in the files but the metadata says {res.expected_reads}", run_dir, log
        )
    res.expected_reads, res.verified = kept["spots"], True
    if kept["capped"]:
        res.capped_bases = kept["bases"]
        log.write(f"max_bp: kept the first {kept['spots']} spots ({kept['bases']} bases)")
    return res


def _failed(res: RunDownload, reason: str, run_dir, log: RunLog) -> RunDownload:
    log.write(f"failed after download: {reason}")
    clear_run_dir(run_dir)
    res.status, res.reason = "failed", reason
    return res


def archive_hosts(runs: Sequence[Run], sources: Sequence[str], mirrors: Optional[dict] = None) -> list[str]:
    """The servers (``host[:port]``, after ``mirrors``) that fetching ``runs`` by ``sources`` may
    contact, sorted; local files (``file://``) contact none. Politeness caps count per host."""
    hosts = set()
    for run in runs:
        urls = ([rf.url for rf in run.files] if "ena" in sources else []) + (
            list(run.sra_urls) if "sra" in sources else []
        )
        for url in urls:
            parts = urllib.parse.urlsplit(apply_mirrors(url, mirrors or {}))
            if parts.scheme.lower() in ("http", "https", "ftp") and parts.netloc:
                hosts.add(parts.netloc.lower())
    return sorted(hosts)
