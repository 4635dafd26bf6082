"""What a running species tells the person watching: a line when each batch starts downloading,
when its download ends (MB and MB/s) and when it is done (runs so far and the time left for the
species), and the live status message and percentage of each task in the scheduler's web view."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from . import eta
from .files import read_json
from .paths import QUANT, SPLIT, SpeciesPaths

logger = logging.getLogger(__name__)

Status = Callable[[str, Optional[float]], None]


def no_status(message: str, percent: Optional[float] = None) -> None:
    """A :data:`Status` that shows nothing (a step run outside Luigi)."""


def batch_label(paths: SpeciesPaths, batch: int) -> str:
    """``Camponotus_floridanus batch 3/12`` (batch numbers from 1 for people)."""
    try:
        n = read_json(paths.marker(SPLIT))["batches"]
    except (OSError, ValueError, KeyError):
        return f"{paths.species} batch {batch + 1}"
    return f"{paths.species} batch {batch + 1}/{n}"


def duration(seconds: Optional[float]) -> str:
    """``42.0 s``, ``3m 05s``, ``2h 03m``, ``1d 2h 03m``: how the terminal, status and the report
    say a time span."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h {m:02d}m" if d else f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def time_left_text(paths: SpeciesPaths) -> str:
    """``about 3 min left`` for the species, from the measured rates (see :mod:`pipeline.eta`)."""
    try:
        left = eta.estimate(paths).get("seconds_left")
    except Exception as e:  # an estimate must never fail the work it describes
        logger.debug("no time-left estimate for %s: %s", paths.species, e)
        left = None
    return "time left not known yet" if left is None else f"about {duration(left)} left"


def say_batch_done(paths: SpeciesPaths, batch: int) -> None:
    """The line for a batch whose reads are quantified and deleted, with the species' totals."""
    ok = failed = 0
    for p in paths.batch_markers(QUANT).values():
        for r in read_json(p)["runs"]:
            ok += r["status"] == "ok"
            failed += r["status"] == "failed"
    try:
        total = read_json(paths.marker(SPLIT))["runs"]
    except (OSError, ValueError, KeyError):
        total = ok + failed
    failures = f", {failed} failed" if failed else ""
    left = "no runs left" if ok + failed >= total else time_left_text(paths)
    logger.info(
        "%s done: %d/%d runs of the species quantified%s; %s",
        batch_label(paths, batch),
        ok,
        total,
        failures,
        left,
    )


class BatchProgress:
    """Bytes and runs of one downloading batch: told to ``status`` at most once a second, and to
    the terminal when the batch starts and when its download ends."""

    def __init__(self, label: str, runs: int, expected_bytes: int, status: Status):
        self.label, self.runs, self.expected = label, runs, max(1, expected_bytes)
        self.status = status
        self.done = self.bytes = 0
        self.active: list[str] = []
        self._t0 = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def rate(self) -> float:
        return self.bytes / max(1e-9, time.monotonic() - self._t0)

    def message(self) -> str:
        now = f"{', '.join(self.active[:3])}{' ...' if len(self.active) > 3 else ''}: " if self.active else ""
        return (
            f"{self.label}: {now}{self.done}/{self.runs} runs, {self.bytes / 1e6:.1f} of "
            f"{self.expected / 1e6:.1f} MB, {self.rate() / 1e6:.1f} MB/s"
        )

    def started(self) -> None:
        self._t0 = time.monotonic()
        logger.info("%s: downloading %d run(s), %.1f MB expected", self.label, self.runs, self.expected / 1e6)

    def run_started(self, run: str) -> None:
        with self._lock:
            self.active.append(run)
        self.status(self.message(), None)

    def received(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            now = time.monotonic()
            if now - self._last < 1.0:
                return
            self._last = now
        self.status(self.message(), min(99, 100 * self.bytes / self.expected))

    def run_done(self, run: str, how: str) -> None:
        with self._lock:
            self.done += 1
            if run in self.active:
                self.active.remove(run)
        self.status(self.message(), None)

    def finished(self, ok: int, nbytes: int) -> None:
        took = time.monotonic() - self._t0
        logger.info(
            "%s: downloaded %d/%d run(s), %.1f MB in %s (%.1f MB/s)",
            self.label,
            ok,
            self.runs,
            nbytes / 1e6,
            duration(took),
            nbytes / 1e6 / max(took, 1e-9),
        )


def download_done(paths: SpeciesPaths, batch: int, figures: dict) -> str:
    secs = max(float(figures.get("seconds") or 0), 1e-9)
    mb = figures.get("bytes", 0) / 1e6
    return (
        f"{batch_label(paths, batch)}: downloaded {figures.get('ok', 0)}/{len(figures.get('runs', []))} "
        f"run(s), {mb:.1f} MB, {mb / secs:.1f} MB/s"
    )


def quant_done(paths: SpeciesPaths, batch: int, figures: dict) -> str:
    runs = [r["run"] for r in figures.get("runs", [])]
    shown = ", ".join(runs[:4]) + (" ..." if len(runs) > 4 else "")
    return f"{batch_label(paths, batch)}: kallisto done on {figures.get('ok', 0)}/{len(runs)} run(s) ({shown})"
