"""The settings shared by every species: ``[pipeline]``, ``[kallisto]``, ``[salmon]`` and ``[fasterq_dump]``, and
Luigi's own ``[core]``, ``[retcode]``, ``[resources]`` and ``[worker]``.

Their defaults are the project's ``luigi.cfg``, shipped with the package as ``pipeline/defaults.cfg``
(a link to it, copied into an installed package), and are put first in Luigi's list
of config files when this module is imported, so they hold wherever the pipeline starts and however
it was installed; a ``luigi.cfg`` in the current directory or ``LUIGI_CONFIG_PATH`` overrides them.
This and :mod:`pipeline.tasks` are the modules that read Luigi's configuration; they turn it into
plain records (:class:`~pipeline.fetch.retry.RetryPolicy`, :class:`~pipeline.model.Tools`) that the
domain code takes as arguments.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import luigi

from .fetch.retry import RetryPolicy
from .inputs.ena import DEFAULT_BASE_URL
from .model import Tools
from .plan.sizes import parse_size

_DEFAULT_POLICY = RetryPolicy()
DEFAULTS_FILE = Path(__file__).with_name("defaults.cfg")


def install_defaults() -> None:
    """Put the packaged defaults first among Luigi's config files (lowest precedence) and re-read."""
    parser = luigi.configuration.LuigiConfigParser
    if str(DEFAULTS_FILE) not in parser._config_paths:
        parser._config_paths.insert(0, str(DEFAULTS_FILE))
        parser.reload()


install_defaults()


class _Section(luigi.Config):
    """A ``luigi.Config`` read from the section named by ``section`` rather than the class name."""

    section = ""

    @classmethod
    def get_task_family(cls) -> str:
        return cls.section or cls.__name__


class PipelineSettings(_Section):
    """``[pipeline]``: transfer settings shared by every species."""

    section = "pipeline"
    download_attempts = luigi.IntParameter(default=_DEFAULT_POLICY.attempts, description="transfer attempts per file")
    stall_seconds = luigi.FloatParameter(
        default=_DEFAULT_POLICY.stall_seconds, description="abort an attempt after this long without data"
    )
    backoff_base = luigi.FloatParameter(
        default=_DEFAULT_POLICY.backoff_base, description="first retry delay in seconds; doubles"
    )
    backoff_max = luigi.FloatParameter(default=_DEFAULT_POLICY.backoff_max, description="cap on the retry delay")
    max_retry_after = luigi.FloatParameter(
        default=_DEFAULT_POLICY.max_retry_after, description="cap on a server's Retry-After"
    )
    ena_portal_url = luigi.Parameter(default=DEFAULT_BASE_URL, description="ENA portal API base URL")
    heartbeat_seconds = luigi.FloatParameter(
        default=5.0, description="how often a run refreshes its heartbeat and samples the reads on disk"
    )
    host = luigi.Parameter(
        default="",
        description="this machine's name in markers and logs (empty: its host name); "
        "each machine's [resources] cpu and download are its own",
    )
    batch_window = luigi.IntParameter(
        default=500,
        description="unfinished batches of a species put before the scheduler at once; the next "
        "ones follow as these finish, so a 100,000-run species stays a few thousand tasks",
    )
    archive_connections = luigi.IntParameter(
        default=12,
        description="under a central scheduler: connections all machines together open to one "
        "archive host (each batch downloading claims download.parallel of them)",
    )
    rejoin_seconds = luigi.FloatParameter(
        default=5.0,
        description="under a central scheduler: how often a worker with nothing to do looks "
        "again while other workers still run tasks of the study",
    )
    disk_limit = luigi.Parameter(
        default="",
        description="cap on bytes under the output directory, e.g. 500G "
        "(empty: only the file system's free space counts)",
    )

    def retry_policy(self, stall_seconds: Optional[float] = None) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.download_attempts,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            max_retry_after=self.max_retry_after,
            stall_seconds=stall_seconds or self.stall_seconds,
        )

    def host_name(self) -> str:
        return self.host or socket.gethostname()

    def disk_limit_bytes(self) -> Optional[int]:
        return parse_size(self.disk_limit) if self.disk_limit else None


class KallistoSettings(_Section):
    """``[kallisto]``."""

    section = "kallisto"
    binary = luigi.Parameter(default=Tools.kallisto, description="kallisto executable")


class SalmonSettings(_Section):
    """``[salmon]``: the quantifier of species whose ``quant.tool`` is salmon."""

    section = "salmon"
    binary = luigi.Parameter(default=Tools.salmon, description="salmon executable")


class FasterqDumpSettings(_Section):
    """``[fasterq_dump]``."""

    section = "fasterq_dump"
    binary = luigi.Parameter(default=Tools.fasterq_dump, description="fasterq-dump executable")
    gzip = luigi.BoolParameter(
        default=Tools.gzip_fastq, description="gzip the converted FASTQ (level 1) before kallisto"
    )


def tools() -> Tools:
    return Tools(
        kallisto=KallistoSettings().binary,
        salmon=SalmonSettings().binary,
        fasterq_dump=FasterqDumpSettings().binary,
        gzip_fastq=FasterqDumpSettings().gzip,
    )


def resource_cap(name: str) -> int:
    """``[resources] NAME``: how much of it all tasks may hold at once (Luigi's default is 1)."""
    return luigi.configuration.get_config().getint("resources", name, 1)
