"""Samples the bytes under some folders in a thread, to find the peak (tests and benchmarks)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterable, Optional, Union

from ..plan.space import tree_bytes

PathLike = Union[str, "os.PathLike[str]"]


class DiskSampler:
    """Sample ``tree_bytes`` of some paths in a thread every ``interval`` s, to find the peak.

    ::

        with DiskSampler([layout.fastq], interval=0.05) as s:
            run_pipeline()
        assert s.peak <= budget

    ``samples`` is ``[(seconds since start, bytes), ...]`` (one taken on entry, one on exit);
    ``peak`` is the largest and ``peak_at`` its time. Sampling can miss a peak shorter than
    ``interval``, so ``peak`` is a lower bound of the true peak; :meth:`sample` forces one.
    """

    def __init__(self, paths: Union[PathLike, Iterable[PathLike]], interval: float = 0.05):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.peak = 0
        self.peak_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0.0

    def sample(self) -> int:
        """Take one sample now; return its bytes."""
        b = sum(tree_bytes(p) for p in self.paths)
        t = time.monotonic() - self._t0
        with self._lock:
            self.samples.append((t, b))
            if b > self.peak or len(self.samples) == 1:
                self.peak, self.peak_at = b, t
        return b

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> DiskSampler:
        self._t0 = time.monotonic()
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="DiskSampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample()
