"""``download.mode: stream`` in the batch steps: which runs the download step leaves to the quant
step, and quantifying those with their reads streamed into kallisto, then, when that fails and
``download.stream_fallback`` is ``file``, once more from files fetched to disk.

A streamed run takes no disk for its reads, so the download step's free-space check counts only
the runs it fetches itself (:func:`on_disk`); the runs that cannot be streamed (see
:func:`pipeline.fetch.stream.file_mode_reason`) are fetched as in file mode, saying why in the
run's log.
"""

from __future__ import annotations

from typing import Callable, Optional

from .fetch.retry import RetryPolicy
from .fetch.segments import Split
from .fetch.sources import FetchSetup, apply_max_bp, clear_run_dir, obtain_run
from .fetch.stream import file_mode_reason
from .inputs.species_config import SpeciesConfig
from .model import STREAMED, Run, RunDownload, RunQuant, Tools
from .paths import SpeciesPaths
from .quant.streamed import quantify_streamed
from .runlog import RunLog

#: ``(run, its download row, its log) -> result``: kallisto on a run's files in ``fastq/RUN/``
QuantifyFiles = Callable[[Run, RunDownload, RunLog], RunQuant]


def is_streamed(cfg: SpeciesConfig, run: Run) -> bool:
    """Whether the quant step streams ``run`` (rather than the download step fetching it)."""
    return cfg.streams and file_mode_reason(run, cfg.sources, cfg.mirrors, cfg.max_bp) is None


def on_disk(cfg: SpeciesConfig, runs: list[Run]) -> list[Run]:
    """The runs of ``runs`` whose reads are fetched to disk."""
    return [r for r in runs if not is_streamed(cfg, r)]


def defer(cfg: SpeciesConfig, run: Run, log: RunLog) -> Optional[RunDownload]:
    """The download step's row for a run it leaves to the quant step to stream, or None when it
    fetches the run itself. In stream mode the run's log says which, and why."""
    if not cfg.streams:
        return None
    reason = file_mode_reason(run, cfg.sources, cfg.mirrors, cfg.max_bp)
    if reason:
        log.write(f"download: not streamed: {reason}; fetched to disk (file mode)")
        return None
    log.write("download: left to the quant step, which streams the reads into kallisto (download.mode: stream)")
    return RunDownload(run=run.run, status=STREAMED, source=STREAMED, expected_reads=run.read_count)


def quantify_streamed_run(
    cfg: SpeciesConfig,
    paths: SpeciesPaths,
    run: Run,
    setup: FetchSetup,
    extra: dict,
    log: RunLog,
    quantify_files: QuantifyFiles,
) -> RunQuant:
    """Quantify ``run`` streamed; when that fails and ``download.stream_fallback`` is ``file``,
    fetch it to ``fastq/RUN/`` as in file mode (every source of ``setup``), quantify the files
    with ``quantify_files`` and delete them."""
    res = quantify_streamed(
        run,
        paths.index,
        paths.quant,
        **cfg.quant_options,
        strand=cfg.strandedness,  # fr, rf or unstranded: stream mode refuses auto (no files to sample)
        mirrors=cfg.mirrors,
        policy=setup.policy,
        log=log,
        extra=extra | {"source": STREAMED},
        exe=setup.tools.kallisto,
        progress=setup.progress,
    )
    if res.ok or cfg.stream_fallback != "file":
        return res
    log.write("stream: fetching the run to disk instead (download.stream_fallback: file)")
    run_dir = paths.run_fastq(run.run)
    try:
        d = apply_max_bp(run, obtain_run(run, run_dir, setup, log), run_dir, cfg.max_bp, log)
        if not d.ok:
            return RunQuant(
                run=run.run,
                status="failed",
                stage="download",
                reason=f"streamed: {res.reason}; then file mode: {d.reason}",
            )
        return quantify_files(run, d, log)
    finally:
        clear_run_dir(run_dir)


def fetch_setup(cfg: SpeciesConfig, policy: RetryPolicy, tools: Tools, **more) -> FetchSetup:
    """What a species' runs are fetched (or streamed) with; ``more`` sets the other fields."""
    return FetchSetup(
        policy=policy.with_stall(cfg.stall_seconds),
        mirrors=cfg.mirrors,
        sources=cfg.sources,
        tools=tools,
        threads=cfg.threads,
        split=Split(cfg.download_connections, cfg.min_segment),
        **more,
    )
