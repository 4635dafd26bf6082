"""Caps that belong to one machine: its cores (``cpu``) and its link (``download``).

Luigi's ``[resources]`` are counted by the scheduler. On a local scheduler that is one machine,
and Luigi's own count is the machine's. Under a central scheduler (luigid) serving workers on
several hosts it would be one count for all of them, so there the tasks claim no ``cpu`` or
``download`` from the scheduler; each machine's worker holds them instead, from its own
``[resources]`` settings, in :class:`HostCaps`: a counting semaphore per name, made before
Luigi forks its worker processes and shared by them. A task that would exceed its machine's cap
waits inside its worker until a task on the same machine releases what it holds.
"""

from __future__ import annotations

import multiprocessing
from contextlib import contextmanager
from typing import Callable, Iterator, Optional


class HostCaps:
    """``HostCaps({"cpu": 8, "download": 2}).hold({"cpu": 4})`` around the work of one task."""

    def __init__(self, caps: dict[str, int]):
        ctx = multiprocessing.get_context("fork")  # shared with the worker processes Luigi forks
        self.caps = {k: max(1, int(v)) for k, v in caps.items()}
        self._units = {k: ctx.Semaphore(v) for k, v in self.caps.items()}
        self._gate = ctx.Lock()

    def claim(self, wanted: dict[str, int]) -> dict[str, int]:
        """What holding ``wanted`` takes: names this machine caps, each at most its cap."""
        return {k: min(int(n), self.caps[k]) for k, n in wanted.items() if k in self.caps and int(n) > 0}

    @contextmanager
    def hold(self, wanted: dict[str, int], waiting: Optional[Callable[[str], None]] = None) -> Iterator[dict]:
        """Take every unit of ``wanted`` (see :meth:`claim`), run the block, give them back.

        One claim takes its units under one gate, so two claims never each hold a part of what
        the other needs; ``waiting`` is told once when the units are not free at once.
        """
        claim = self.claim(wanted)
        taken: list[str] = []
        try:
            with self._gate:
                for name, n in claim.items():
                    for _ in range(n):
                        if not self._units[name].acquire(block=False):
                            if waiting is not None:
                                waiting(f"waiting for this machine's {name} ({n} of {self.caps[name]})")
                                waiting = None
                            self._units[name].acquire()
                        taken.append(name)
            yield claim
        finally:
            for name in taken:
                self._units[name].release()
