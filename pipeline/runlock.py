"""One writer per output directory.

A run on a local scheduler holds an exclusive lock on ``OUTPUT/.rnaseq-batch/lock`` for as long
as it lives; workers of one central scheduler (luigid) hold it shared, since the scheduler already
gives each task to one of them. A second run that does not share the scheduler is refused with the
holder's pid, host and start time, or waits for it when asked to. The kernel drops the lock of a
process that dies (kill -9, a crash), so a lock never outlives its holder on one machine; the
heartbeat (:mod:`pipeline.heartbeat`) tells the same across machines.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Optional

from .heartbeat import FOLDER, liveness
from .model import ExpectedFailure


class LockRefused(ExpectedFailure):
    """Another run holds the output directory. The message names it and what to do."""


def lock_path(output_dir) -> Path:
    return Path(output_dir) / FOLDER / "lock"


def _holder(output_dir) -> str:
    live = liveness(output_dir)
    if live["state"] == "unknown":
        return "another run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(live.get("started_at") or 0)))
    return f"the run of pid {live.get('pid')} on {live.get('host')}, started {started}"


class RunLock:
    """``RunLock(out, shared=False).acquire(wait=False)``: held until the process ends."""

    def __init__(self, output_dir, shared: bool = False):
        self.output_dir = Path(output_dir)
        self.shared = shared
        self.fd: Optional[int] = None

    def acquire(self, wait: bool = False, say: Callable[[str], None] = lambda m: None) -> None:
        path = lock_path(self.output_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self.output_dir)
            if not wait:
                os.close(fd)
                raise LockRefused(
                    f"{self.output_dir} is in use by {holder}: two runs that do not share a scheduler "
                    "would write the same files. Wait for it to end, or start this one with --wait-for-lock"
                ) from None
            say(f"waiting for {holder} to finish with {self.output_dir}")
            fcntl.flock(fd, mode)
            say(f"{self.output_dir} is free: starting")
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
