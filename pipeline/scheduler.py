"""What the workers ask of the scheduler beyond their tasks: whether it is central (luigid), the
caps it counts for all machines, and whether other workers still run tasks of a study."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import luigi
import luigi.interface
import luigi.rpc

logger = logging.getLogger(__name__)

#: how this process claims an output directory: ``rnaseq-batch run`` sets these from its options
CLAIM: dict[str, Optional[bool]] = {"wait": False, "shared": None}


#: which scheduler Luigi made for this process's workers ("local" True/False), once it has made one
MADE: dict[str, bool] = {}


def _note_scheduler_kind() -> None:
    """Record which scheduler Luigi's worker factory makes: ``luigi.build(local_scheduler=True)``
    passes the choice to the factory but not to ``luigi.interface.core()``, which reads only the
    command line and the settings."""
    factory = getattr(luigi.interface, "_WorkerSchedulerFactory", None)
    if factory is None or getattr(factory, "_pipeline_noted", False):
        return
    make_local, make_remote = factory.create_local_scheduler, factory.create_remote_scheduler

    def local(self, *args, **kw):
        MADE["local"] = True
        return make_local(self, *args, **kw)

    def remote(self, *args, **kw):
        MADE["local"] = False
        return make_remote(self, *args, **kw)

    factory.create_local_scheduler, factory.create_remote_scheduler = local, remote
    factory._pipeline_noted = True


_note_scheduler_kind()


def central_scheduler() -> bool:
    """Whether this process's workers take their tasks from a central scheduler (luigid)."""
    if CLAIM["shared"] is not None:
        return bool(CLAIM["shared"])
    if "local" in MADE:
        return not MADE["local"]
    return not luigi.interface.core().local_scheduler


def archive_resource(host: str) -> str:
    """The scheduler resource counting connections to one archive host, across all machines."""
    return f"connections@{host}"


#: shared caps this process has told the central scheduler
_PUBLISHED: dict[str, int] = {}


def publish_shared_caps(caps: dict[str, int]) -> None:
    """Tell the central scheduler the caps of resources it does not know from its own settings
    (it would count each as 1), once per process and value."""
    new = {k: v for k, v in caps.items() if _PUBLISHED.get(k) != v}
    if not new:
        return
    _PUBLISHED.update(new)  # once, even if it fails: a scheduler away must not stall every task's scheduling
    try:
        luigi.rpc.RemoteScheduler(scheduler_url()).update_resources(**new)  # type: ignore[attr-defined]
    except Exception as e:  # the scheduler being away shows when the worker asks it for work
        logger.warning("could not tell the scheduler the connection caps %s: %s", new, e)


def scheduler_url() -> str:
    c = luigi.interface.core()
    return c.scheduler_url or f"http://{c.scheduler_host}:{c.scheduler_port}/"


def study_running_elsewhere(output_dir: str, url: str) -> bool:
    """Whether the central scheduler at ``url`` shows a task of this output directory running."""
    key = str(Path(output_dir).resolve())
    try:
        running = luigi.rpc.RemoteScheduler(url).task_list("RUNNING", "")  # type: ignore[attr-defined]
    except Exception:
        return False
    return any(str(Path(t.get("params", {}).get("output_dir", "")).resolve()) == key for t in running.values())
