"""Writing into a FIFO that another process (kallisto) reads: opening it once the reader has,
and passing every byte on.

Opening a FIFO for writing blocks until a reader opens it, and a reader that exits first would
leave that open blocked for good, so the writer polls without blocking instead
(:func:`open_for_writing`). A reader that exits (or closes its end) later makes the next write
fail with ``BrokenPipeError``: Python ignores SIGPIPE, so the writer is told, not killed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Callable, Sequence

#: How often a writer waiting for the reader to open its FIFO looks again (seconds).
OPEN_POLL = 0.02
#: The pipe buffer asked for: larger than a writer's block, so the reader finds the next block
#: already there while the writer makes the one after (the default 64 KiB leaves it waiting).
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; named in Python >= 3.10


class Cancelled(Exception):
    """The writer was stopped from outside (before the reader opened the FIFO, or while writing)."""


class NoReader(Exception):
    """The reader exited before it opened the FIFO."""


def make(folder: Path, names: Sequence[str]) -> list[Path]:
    """FIFOs ``folder/NAME`` for ``names``, made anew."""
    made = [Path(folder) / name for name in names]
    for p in made:
        os.mkfifo(p)
    return made


def open_for_writing(fifo: Path, cancel: threading.Event, reader_alive: Callable[[], bool]) -> int:
    """Open ``fifo`` for writing once a reader has opened it; a blocking descriptor.

    Polled without blocking, so that a reader that never comes (it exited first) or a
    cancellation ends the wait: NoReader, Cancelled."""
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        else:
            os.set_blocking(fd, True)
            return fd
        if cancel.is_set():
            raise Cancelled()
        if not reader_alive():
            raise NoReader(f"{Path(fifo).name}: the reader exited before opening it")
        cancel.wait(OPEN_POLL)


def enlarge(fd: int, size: int = PIPE_BYTES) -> None:
    """Ask for a pipe buffer of ``size`` bytes; the kernel's limit (or another system) leaves it as it is."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass


def write_all(fd: int, block: bytes) -> None:
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view) :]
