"""The body of each Luigi task, without Luigi: plan a species, build its index, download, quantify
and clean up a batch, and finish a species with its merged tables and failure report.

Each step takes the species config, its :class:`~pipeline.paths.SpeciesPaths` and the shared
settings as plain records, and returns the figures its task writes into its marker. ``status`` is
a callable ``(message, percent or None)`` for the scheduler's web view; it may do nothing.
"""

from __future__ import annotations

import errno
import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import streaming
from .fetch.retry import RetryPolicy
from .fetch.sources import apply_max_bp, clear_run_dir, obtain_run
from .fetch.transfer import fetch, safe_name
from .files import read_json, sync_filesystem
from .inputs import ena, metadata, tx2gene
from .inputs.species_config import SpeciesConfig
from .model import InputError, RemoteFile, Run, RunDownload, Tools
from .paths import DOWNLOAD, INDEX, SpeciesPaths
from .plan import batches, space
from .plan.sizes import human
from .progress import BatchProgress, Status, batch_label, no_status, say_batch_done
from .provenance import reference_record
from .quant import quantifier
from .quant.quantify import is_quantified
from .runlog import RunLog

logger = logging.getLogger(__name__)


@dataclass
class Shared:
    """The settings every species shares (``luigi.cfg``), as plain values."""

    policy: RetryPolicy
    tools: Tools
    portal_url: str = ena.DEFAULT_BASE_URL
    disk_limit: Optional[int] = None  # bytes under the output directory, or None


# -- planning ----------------------------------------------------------------------------------


def fetch_ena_metadata(cfg: SpeciesConfig, paths: SpeciesPaths, shared: Shared, refresh: bool = False) -> dict:
    """A species' ``metadata.query`` answer at ``paths.ena_search``: the saved one, unless it is
    missing or ``refresh`` asks ENA again (see :func:`pipeline.inputs.ena.fetch_search`)."""
    assert cfg.metadata_query is not None
    return ena.fetch_search(
        cfg.metadata_query,
        paths.ena_search,
        base_url=shared.portal_url,
        policy=shared.policy,
        log=RunLog(paths.metadata_log),
        refresh=refresh,
    )


def started_batches(paths: SpeciesPaths) -> list[list[Run]]:
    """When planning again, the batches up to the last one whose download started keep their
    runs; an unfinished tail is planned afresh."""
    planned, last = [], -1
    for i, path in paths.batch_files():
        planned.append(batches.read_batch(path))
        if paths.batch_marker(DOWNLOAD, i).exists() or any(paths.run_fastq(r.run).exists() for r in planned[i]):
            last = i
    return planned[: last + 1]


def plan_species(cfg: SpeciesConfig, paths: SpeciesPaths, shared: Shared, status: Status = no_status) -> dict:
    """Read and select the runs, write ``runs.tsv``, ``skipped.tsv`` and one JSON file per batch."""
    source = cfg.metadata_file
    if cfg.metadata_query:
        # the answer is kept and re-used on resume, so batches stay as they were planned
        status(f"{cfg.species}: querying ENA", None)
        source = Path(fetch_ena_metadata(cfg, paths, shared)["path"])
    assert source is not None
    runs, skipped = metadata.load_runs(source, cfg.selection)
    metadata.write_runs_tsv(runs, paths.runs_table)
    metadata.write_skipped_tsv(skipped, paths.skipped_table)
    kept = started_batches(paths)
    sra_route = "sra" in cfg.sources
    groups = batches.extend_plan(kept, runs, size=cfg.batch_size, max_bytes=cfg.max_bytes, sra_route=sra_route)
    if kept:
        logger.info(
            "%s: re-planning: batches 0-%d were started and keep their runs; %d new batch(es)",
            cfg.species,
            len(kept) - 1,
            len(groups) - len(kept),
        )
    if cfg.max_bytes:
        _warn_about_sizes(cfg, runs, sra_route)
    for i, group in enumerate(groups[len(kept) :], len(kept)):
        batches.write_batch(paths.batch_file(i), i, group, sync=False)
    for i, path in list(paths.batch_files()):  # a re-plan may need fewer batches
        if i >= len(groups):
            path.unlink()
    sync_filesystem(paths.runs_table.parent)  # once for the whole plan, before its marker
    return {
        "runs": len(runs),
        "skipped": len(skipped),
        "batches": len(groups),
        "max_bytes": cfg.max_bytes,
        "prefetch": cfg.prefetch,
        "largest_batch_bytes": max((batches.batch_bytes(g)[0] for g in groups), default=0),
        "metadata": str(source),
    }


def _warn_about_sizes(cfg: SpeciesConfig, runs: list[Run], sra_route: bool) -> None:
    assert cfg.max_bytes is not None
    for r, b in batches.oversized_runs(runs, cfg.max_bytes, sra_route=sra_route):
        logger.warning(
            "%s: run %s is expected to take %s%s, more than batch.max_bytes %s: it gets a batch of its own",
            cfg.species,
            r.run,
            human(b),
            " if it is converted from .sra" if sra_route else "",
            human(cfg.max_bytes),
        )
    unknown = batches.unknown_size_runs(runs, sra_route=sra_route)
    if unknown:
        logger.warning(
            "%s: %d run(s) have no size in the metadata; each is counted as batch.max_bytes "
            "and gets a batch of its own: %s",
            cfg.species,
            len(unknown),
            ", ".join(r.run for r in unknown[:20]),
        )


def check_output_dir(output_dir) -> None:
    """InputError unless ``output_dir`` exists (or can be made) and a file can be written in it."""
    d = Path(output_dir).resolve()
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise InputError(f"output directory {d} cannot be used: {e.strerror or e}") from None


def check_metadata(cfg: SpeciesConfig) -> None:
    """Read a species' local metadata table, raising InputError for what is wrong with it."""
    if cfg.metadata_file:
        metadata.load_runs(cfg.metadata_file, cfg.selection)


# -- the index ---------------------------------------------------------------------------------


def index_tool(paths: SpeciesPaths) -> Optional[str]:
    """The tool whose index the species' index marker records (one made before salmon: kallisto);
    None without a marker."""
    marker = paths.marker(INDEX)
    if not marker.is_file():
        return None
    return read_json(marker).get("quant_tool") or "kallisto"


def build_species_index(cfg: SpeciesConfig, paths: SpeciesPaths, shared: Shared, status: Status = no_status) -> dict:
    """Fetch the transcriptome into genome/ when it is a URL, and build the index of ``quant.tool`` once."""
    paths.genome.mkdir(parents=True, exist_ok=True)
    fasta = cfg.transcriptome
    if cfg.transcriptome_is_url:
        name = safe_name(fasta.rstrip("/").rsplit("/", 1)[-1], "transcriptome.fa.gz")
        status(f"downloading transcriptome {fasta}", None)
        info = fetch(
            RemoteFile(url=fasta, name=name), paths.genome / name, cfg.mirrors, shared.policy, RunLog(paths.index_log)
        )
        fasta = info["path"]
    tool, index = cfg.quant_tool, paths.quant_index(cfg.quant_tool)
    status(f"{tool} index {Path(fasta).name}", None)
    figures = quantifier.build_index(tool, fasta, index, paths.index_log, shared.tools, threads=cfg.threads)
    _, figures["tx2gene"] = tx2gene.resolve_tx2gene(cfg.tx2gene, fasta)  # a bad map fails before any read
    return figures | {"transcriptome": str(fasta)} | reference_record(fasta, index, shared.tools, tool)


# -- a batch -----------------------------------------------------------------------------------


def space_needed(cfg: SpeciesConfig, paths: SpeciesPaths, batch: int, runs: list[Run]) -> tuple[int, int]:
    """``(bytes, of which room for one .sra conversion)`` that batch ``batch`` still needs: its
    bytes still to come (with the room when the ``.sra`` route is a source), plus those of earlier
    batches still downloading."""

    def room_of(rs: list[Run]) -> int:
        return batches.sra_room(rs) if "sra" in cfg.sources else 0

    def remaining(rs: list[Run]) -> int:
        rs = streaming.on_disk(cfg, rs)  # a streamed run's reads never touch the disk
        total, _ = batches.batch_bytes(rs)
        return max(0, total + room_of(rs) - sum(space.tree_bytes(paths.run_fastq(r.run)) for r in rs))

    need = remaining(runs)
    for k in range(max(0, batch - cfg.prefetch), batch):
        if not paths.batch_marker(DOWNLOAD, k).exists():
            need += remaining(batches.read_batch(paths.batch_file(k)))
    return need, room_of(runs)


def download_batch(
    cfg: SpeciesConfig, paths: SpeciesPaths, batch: int, shared: Shared, status: Status = no_status
) -> dict:
    """Download the batch's runs, ``download.parallel`` at a time, each verified, once there is room."""
    runs = batches.read_batch(paths.batch_file(batch))
    need, room = space_needed(cfg, paths, batch, runs)
    room_note = (
        (f" (of which {human(room)} is room for one .sra conversion; download.sources: [ena] keeps none)")
        if room
        else ""
    )
    paths.fastq.mkdir(parents=True, exist_ok=True)
    status(f"{cfg.species} batch {batch}: checking free space for {human(need)}", None)
    free = space.wait_for_space(
        paths.fastq,
        need,
        cfg.min_free,
        timeout_s=cfg.disk_wait_seconds,
        poll_s=10,
        log=RunLog(paths.disk_log),
        limit=shared.disk_limit,
        used_root=paths.output_dir,
        what=f"{cfg.species} batch {batch}{room_note}",
    )
    progress = BatchProgress(batch_label(paths, batch), len(runs), batches.batch_bytes(runs)[0], status)
    progress.started()
    setup = streaming.fetch_setup(
        cfg, shared.policy, shared.tools, sra_lock=threading.Lock(), progress=progress.received
    )

    def one(run: Run) -> RunDownload:
        if is_quantified(paths.quant, run.run):
            return RunDownload(run=run.run, status="quantified", reason="already quantified")
        log = RunLog(paths.run_log(run.run))
        log.write(f"download: batch {batch}, sources {', '.join(cfg.sources)}")
        deferred = streaming.defer(cfg, run, log)
        if deferred:
            return deferred
        try:
            res = obtain_run(run, paths.run_fastq(run.run), setup, log)
            res = apply_max_bp(run, res, paths.run_fastq(run.run), cfg.max_bp, log)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            left, _ = space_needed(cfg, paths, batch, runs)
            message = (
                f"{cfg.species} batch {batch}: the disk filled while {run.run} was downloading into "
                f"{paths.run_fastq(run.run)}: {human(left)} of this batch still to come, "
                f"{human(space.free_bytes(paths.fastq))} free. Make room and run again: partial files resume"
            )
            log.write(message)
            raise space.DiskFullError(message) from None
        progress.run_done(run.run, res.status)
        return res

    def one_watched(run: Run) -> RunDownload:
        progress.run_started(run.run)
        return one(run)

    with ThreadPoolExecutor(max_workers=cfg.download_parallel) as pool:
        results = list(pool.map(one_watched, runs))
    progress.finished(sum(r.ok for r in results), sum(r.bytes for r in results))
    return {
        "batch": batch,
        "runs": [r.to_dict() for r in results],
        "bytes": sum(r.bytes for r in results),
        "expected_bytes": need,
        "free_at_start": free,
        "ok": sum(r.ok for r in results),
        "failed": sum(r.status == "failed" for r in results),
    }


def cleanup_batch(paths: SpeciesPaths, batch: int) -> dict:
    """Delete the batch's reads (failed runs' too), including partial downloads."""
    freed = sum(clear_run_dir(paths.run_fastq(r.run)) for r in batches.read_batch(paths.batch_file(batch)))
    say_batch_done(paths, batch)
    return {"batch": batch, "bytes_freed": freed}
