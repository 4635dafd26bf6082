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
import luigi.rpc

from . import finish, progress, quant_step, settings, steps
from .cli.console import install_failure_filter, install_progress_handler, report_input_error
from .fetch.sources import archive_hosts
from .files import atomic_write_json, read_json, remove_stale_temps
from .heartbeat import Heartbeat, run_log_path, start_run
from .hostcap import HostCaps
from .inputs.species_config import SpeciesConfig, load_all, load_species_config
from .model import InputError
from .paths import CLEANUP, DOWNLOAD, INDEX, QUANT, SPECIES, SPLIT, SpeciesPaths
from .plan import batches
from .runlock import LockRefused, RunLock
from .runlog import RunLog
from .scheduler import CLAIM, archive_resource, central_scheduler, publish_shared_caps

logger = logging.getLogger(__name__)
#: the caps that are each machine's own (``[resources]`` of its settings)
HOST_RESOURCES = ("cpu", "download")


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
        with HOST_CAPS.hold(self.host_claim(), waiting=lambda m: self.status(f"{self.cfg.species}: {m}")):
            started_at, t0 = time.time(), time.monotonic()
            figures = step(self.cfg, self.paths, *args)
            seconds, finished_at = round(time.monotonic() - t0, 3), time.time()  # before the caps are freed
        figures |= {
            "seconds": seconds,
            "started_at": started_at,
            "finished_at": finished_at,
            "host": settings.PipelineSettings().host_name(),
        }
        self.status(self.done_message(figures), 100)
        atomic_write_json(self.output().path, figures)
        return figures

    def host_claim(self) -> dict[str, int]:
        """What this task holds of its machine's ``cpu`` and ``download`` while it runs."""
        return {}

    @property
    def resources(self):  # type: ignore[override]  # Luigi reads it as an attribute
        """On a local scheduler, the machine's caps as Luigi counts them; under a central one,
        the caps all machines share (:meth:`shared_claim`); the machine's own are held by
        :data:`HOST_CAPS`."""
        if not central_scheduler():
            return self.host_claim()
        if not hasattr(self, "_shared"):  # Luigi reads it when the task is added and again when it ends
            self._shared = self.shared_claim()
        return self._shared

    def shared_claim(self) -> dict[str, int]:
        return {}

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

    def archive_claim(self, runs, connections: int) -> dict[str, int]:
        """``connections`` (at most ``[pipeline] archive_connections``) to each archive host that
        fetching ``runs`` may contact, as the central scheduler counts them for all machines."""
        cap = settings.PipelineSettings().archive_connections
        hosts = archive_hosts(runs, self.cfg.sources, self.cfg.mirrors)
        claim = {archive_resource(h): min(connections, cap) for h in hosts}
        publish_shared_caps({name: cap for name in claim})
        return claim

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

    def host_claim(self) -> dict[str, int]:
        return {"cpu": 1}

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

    def host_claim(self) -> dict[str, int]:
        return {"download": 1}

    def shared_claim(self) -> dict[str, int]:
        """``download.parallel`` runs of ``download.connections`` each, to every archive host the
        batch may contact."""
        runs = batches.read_batch(self.paths.batch_file(self.batch))
        return self.archive_claim(runs, min(self.cfg.download_parallel, len(runs)) * self.cfg.download_connections)

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
    """``quant.tool`` on every downloaded run of the batch, one after another with ``quant.threads``.
    In ``download.mode: stream`` it also downloads (the runs it streams), so it holds a download."""

    def host_claim(self) -> dict[str, int]:
        return {"cpu": self.cfg.threads} | ({"download": 1} if self.cfg.streams else {})

    def shared_claim(self) -> dict[str, int]:
        """In stream mode, one run's mates at a time from each archive host."""
        if not self.cfg.streams:
            return {}
        return self.archive_claim(batches.read_batch(self.paths.batch_file(self.batch)), 2)

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
            lambda cfg, paths: quant_step.quantify_batch(
                cfg, paths, self.batch, downloaded, settings.tools(), self.status, reference, shared().policy
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
    """All batches of one species, then the merged tables and the failure report.

    Once the species is planned, its next ``[pipeline] batch_window`` unfinished batches are
    requirements, so every worker of a central scheduler sees them and takes any; ``run`` puts
    the later windows before the scheduler as the earlier ones finish (and all of them, when the
    plan was made after this task was scheduled)."""

    def requires(self):
        # Luigi asks again just before run() and refuses to run a task whose requirements are not
        # all complete then, so the window is taken once per task object: run() moves it on.
        if not hasattr(self, "_deps"):
            deps: dict = {"plan": SplitMetadata(**self.species_args())}
            n = self.planned_batches()
            if n is not None:
                deps["index"] = BuildIndex(**self.species_args())
                deps["batches"] = [BatchCleanup(batch=i, **self.species_args()) for i in self.next_window(n)]
            self._deps = deps
        return self._deps

    def planned_batches(self) -> Optional[int]:
        split = self.paths.marker(SPLIT)
        return read_json(split)["batches"] if split.is_file() else None

    def next_window(self, n: int) -> list[int]:
        return self.paths.unfinished_batches(n, settings.PipelineSettings().batch_window)

    def output(self):
        return luigi.LocalTarget(str(self.paths.marker(SPECIES)))

    def run(self):
        n = read_json(self.input()["plan"].path)["batches"]
        yield BuildIndex(**self.species_args())
        while window := self.next_window(n):
            yield [BatchCleanup(batch=i, **self.species_args()) for i in window]
        self.run_step(finish.finish_species, n, settings.tools())


class MultiSpecies(luigi.WrapperTask):
    """Every species whose YAML is in ``config_dir``. All configs are validated before any work."""

    config_dir = luigi.Parameter(default="config/species")
    output_dir = luigi.Parameter(default="output/amalgkit")

    def requires(self):
        try:
            configs = load_all(self.config_dir, caps={r: settings.resource_cap(r) for r in HOST_RESOURCES})
            species = [Species(config_path=str(c.path), output_dir=self.output_dir) for c in configs]
            # local metadata tables of unfinished species are checked before any species downloads,
            # unless planned from this very table (a plan newer than it): 100,000 rows take 10 s
            for c, task in zip(configs, species):
                if c.metadata_file and not task.complete() and not _planned_from(task, c.metadata_file):
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


def claim_output_dir(output_dir: str) -> None:
    """Take the run lock of ``output_dir`` (exclusive on a local scheduler, shared among the workers
    of one luigid), clear what an interrupted run left when alone, and start the heartbeat."""
    key = str(Path(output_dir).resolve())
    if key in HEARTBEATS:
        return
    shared = central_scheduler()
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

#: this machine's cpu and download caps, made before Luigi forks its workers (see :mod:`pipeline.hostcap`)
HOST_CAPS = HostCaps({name: settings.resource_cap(name) for name in HOST_RESOURCES})


def _planned_from(task: Species, table: Path) -> bool:
    """Whether the species' plan was made after its metadata table last changed."""
    split = task.paths.marker(SPLIT)
    try:
        return split.stat().st_mtime_ns >= table.stat().st_mtime_ns
    except OSError:  # no plan yet, or a path that cannot be (a file where a folder should be)
        return False


@functools.lru_cache(maxsize=64)
def _check_metadata(config_path: str, mtime_ns: int) -> None:
    """Read a species' local metadata table once per version of it (Luigi calls requires() often)."""
    steps.check_metadata(_config(config_path))
