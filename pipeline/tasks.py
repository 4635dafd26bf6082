"""The Luigi tasks: which task needs which, where each writes its marker, and a run() that calls
the step of the same name in :mod:`pipeline.steps`.

Per species: SplitMetadata -> (BatchDownload -> BatchQuant -> BatchCleanup) per batch, BuildIndex,
and Species (merge + failure report); MultiSpecies requires every species. Each task's output is a
JSON marker under ``work/markers/`` written atomically after its data is in place.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from pathlib import Path
from typing import Optional

import luigi
import luigi.interface

from . import finish, progress, settings, steps
from .cli.console import install_failure_filter, install_progress_handler, report_input_error
from .files import atomic_write_json, read_json, remove_stale_temps
from .heartbeat import Heartbeat, run_log_path, start_run
from .inputs.species_config import SpeciesConfig, load_all, load_species_config
from .model import InputError
from .paths import CLEANUP, DOWNLOAD, INDEX, QUANT, SPECIES, SPLIT, SpeciesPaths
from .runlock import LockRefused, RunLock
from .runlog import RunLog

logger = logging.getLogger(__name__)


install_failure_filter()
install_progress_handler()


def shared() -> steps.Shared:
    p = settings.PipelineSettings()
    return steps.Shared(
        policy=p.retry_policy(), tools=settings.tools(), portal_url=p.ena_portal_url, disk_limit=p.disk_limit_bytes()
    )


@functools.lru_cache(maxsize=256)
def _config(path: str) -> SpeciesConfig:
    return load_species_config(path)


class SpeciesTask(luigi.Task):
    config_path = luigi.Parameter(description="the species YAML")
    output_dir = luigi.Parameter(default="output/amalgkit")

    @property
    def cfg(self) -> SpeciesConfig:
        return _config(str(Path(self.config_path).resolve()))

    @property
    def paths(self) -> SpeciesPaths:
        return SpeciesPaths(self.output_dir, self.cfg.species)

    def species_args(self) -> dict:
        return {"config_path": self.config_path, "output_dir": self.output_dir}

    def run_step(self, step, *args) -> dict:
        """Call ``step(cfg, paths, *args)`` and write its figures as this task's marker, last, with
        when it started and finished and how long it took."""
        if os.getpid() != _MAIN_PID:  # a worker child: Ctrl-C is the parent's to handle, in one line,
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # and the parent's SIGTERM ends it at once
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        started_at, t0 = time.time(), time.monotonic()
        figures = step(self.cfg, self.paths, *args)
        figures |= {"seconds": round(time.monotonic() - t0, 3), "started_at": started_at, "finished_at": time.time()}
        self.status(self.done_message(figures), 100)
        atomic_write_json(self.output().path, figures)
        return figures

    def done_message(self, figures: dict) -> str:
        """The web view's last word on a finished task."""
        return f"{self.cfg.species}: {self.get_task_family()} done"

    def status(self, message: str, percent: Optional[float] = None) -> None:
        try:
            self.set_status_message(message)  # type: ignore[misc]  # set by the worker at run time
            if percent is not None:
                self.set_progress_percentage(int(percent))  # type: ignore[misc]
        except Exception:  # the scheduler being away must not fail the data work
            pass


class BatchTask(SpeciesTask):
    batch = luigi.IntParameter()

    def batch_marker(self, stage: str) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.paths.batch_marker(stage, self.batch)))


class SplitMetadata(SpeciesTask):
    """Read and select the runs, write ``runs.tsv``, ``skipped.tsv`` and one JSON file per batch."""

    def output(self):
        return luigi.LocalTarget(str(self.paths.marker(SPLIT)))

    def run(self):
        self.run_step(steps.plan_species, shared(), self.status)


class BuildIndex(SpeciesTask):
    """Fetch the transcriptome into genome/ when it is a URL, and build the index of ``quant.tool``
    once; a marker of another tool's index (``quant.tool`` changed) is not this task's output."""

    resources = {"cpu": 1}

    def output(self):
        return luigi.LocalTarget(str(self.paths.marker(INDEX)))

    def complete(self):
        return super().complete() and steps.index_tool(self.paths) == self.cfg.quant_tool

    def done_message(self, figures: dict) -> str:
        return f"{self.cfg.species}: {self.cfg.quant_tool} index done ({Path(figures['transcriptome']).name})"

    def run(self):
        self.run_step(steps.build_species_index, shared(), self.status)


class BatchDownload(BatchTask):
    """Download the batch's runs. Batch n waits for the cleanup of batch n - prefetch - 1, so at
    most ``prefetch + 1`` batches of reads are on disk at once, and for the species' index."""

    resources = {"download": 1}

    def requires(self):
        # the index first: no read is fetched for a species whose reference cannot be had
        deps: list[luigi.Task] = [SplitMetadata(**self.species_args()), BuildIndex(**self.species_args())]
        earlier = self.batch - self.cfg.prefetch - 1
        if earlier >= 0:
            deps.append(BatchCleanup(batch=earlier, **self.species_args()))
        return deps

    def output(self):
        return self.batch_marker(DOWNLOAD)

    def done_message(self, figures: dict) -> str:
        return progress.download_done(self.paths, self.batch, figures)

    def run(self):
        self.run_step(lambda cfg, paths: steps.download_batch(cfg, paths, self.batch, shared(), self.status))


class BatchQuant(BatchTask):
    """``quant.tool`` on every downloaded run of the batch, one after another with ``quant.threads``."""

    @property  # Luigi reads it as an attribute; a property computes it per species
    def resources(self):  # type: ignore[override]
        return {"cpu": self.cfg.threads}

    def requires(self):
        return {
            "download": BatchDownload(batch=self.batch, **self.species_args()),
            "index": BuildIndex(**self.species_args()),
        }

    def output(self):
        return self.batch_marker(QUANT)

    def done_message(self, figures: dict) -> str:
        return progress.quant_done(self.paths, self.batch, figures)

    def run(self):
        downloaded = read_json(self.input()["download"].path)["runs"]
        reference = read_json(self.input()["index"].path)
        self.run_step(
            lambda cfg, paths: steps.quantify_batch(
                cfg, paths, self.batch, downloaded, settings.tools(), self.status, reference
            )
        )


class BatchCleanup(BatchTask):
    """Delete the batch's reads (failed runs' too), including partial downloads."""

    def requires(self):
        return BatchQuant(batch=self.batch, **self.species_args())

    def output(self):
        return self.batch_marker(CLEANUP)

    def run(self):
        self.run_step(lambda cfg, paths: steps.cleanup_batch(paths, self.batch))


class Species(SpeciesTask):
    """All batches of one species, then the merged tables and the failure report."""

    def requires(self):
        return SplitMetadata(**self.species_args())

    def output(self):
        return luigi.LocalTarget(str(self.paths.marker(SPECIES)))

    def run(self):
        n = read_json(self.input().path)["batches"]
        yield [BuildIndex(**self.species_args())] + [BatchCleanup(batch=i, **self.species_args()) for i in range(n)]
        self.run_step(finish.finish_species, n, settings.tools())


class MultiSpecies(luigi.WrapperTask):
    """Every species whose YAML is in ``config_dir``. All configs are validated before any work."""

    config_dir = luigi.Parameter(default="config/species")
    output_dir = luigi.Parameter(default="output/amalgkit")

    def requires(self):
        try:
            configs = load_all(self.config_dir, caps={r: settings.resource_cap(r) for r in ("cpu", "download")})
            species = [Species(config_path=str(c.path), output_dir=self.output_dir) for c in configs]
            # local metadata tables of unfinished species are checked before any species downloads
            for c, task in zip(configs, species):
                if c.metadata_file and not task.complete():
                    _check_metadata(str(c.path), c.metadata_file.stat().st_mtime_ns)
            steps.check_output_dir(self.output_dir)  # made here, once every input is known to be good
            claim_output_dir(self.output_dir)
        except InputError as e:
            report_input_error(e)
            raise
        return species


#: output directory -> the heartbeat this process keeps for it (MultiSpecies.requires is called often)
HEARTBEATS: dict[str, Heartbeat] = {}


#: output directory -> the run lock this process holds on it
LOCKS: dict[str, RunLock] = {}
#: refusals to share an output directory with another run (rnaseq-batch run exits 10 on one)
REFUSED: list[str] = []
#: how this process claims an output directory: ``rnaseq-batch run`` sets these from its options
CLAIM: dict[str, Optional[bool]] = {"wait": False, "shared": None}


def claim_output_dir(output_dir: str) -> None:
    """Take the run lock of ``output_dir`` (exclusive on a local scheduler, shared among the workers
    of one luigid), clear what an interrupted run left when alone, and start the heartbeat."""
    key = str(Path(output_dir).resolve())
    if key in HEARTBEATS:
        return
    shared = CLAIM["shared"]
    if shared is None:
        shared = not luigi.interface.core().local_scheduler
    lock = RunLock(key, shared=shared)
    try:
        lock.acquire(wait=bool(CLAIM["wait"]), say=logger.warning)
    except LockRefused as e:
        REFUSED.append(str(e))
        raise
    LOCKS[key] = lock
    if not shared:
        removed = remove_stale_temps(key)
        if removed:
            shown = ", ".join(str(p.relative_to(key)) for p in removed[:5]) + (" ..." if len(removed) > 5 else "")
            RunLog(run_log_path(key)).write(
                f"removed {len(removed)} temporary file(s) an interrupted run left: {shown}"
            )
    HEARTBEATS[key] = start_run(key, interval=settings.PipelineSettings().heartbeat_seconds)


def note_in_run_logs(message: str) -> None:
    """A line in the run log of every output directory this process works on."""
    for key in HEARTBEATS:
        RunLog(run_log_path(key)).write(message)


def end_heartbeats(exit_code: Optional[int]) -> None:
    """Say in each heartbeat and run log that this run ended, and how."""
    for key, hb in HEARTBEATS.items():
        RunLog(run_log_path(key)).write(f"ended: exit code {exit_code}")
        hb.stop(exit_code)


#: the process that imported the pipeline; Luigi runs tasks in forked children when workers > 1
_MAIN_PID = os.getpid()


@functools.lru_cache(maxsize=64)
def _check_metadata(config_path: str, mtime_ns: int) -> None:
    """Read a species' local metadata table once per version of it (Luigi calls requires() often)."""
    steps.check_metadata(_config(config_path))
