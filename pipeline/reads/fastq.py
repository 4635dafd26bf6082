"""Reading FASTQ files to their end: counting spots, checking that mates agree, and passing the
reads on, decompressed, to a reader of a FIFO on the way."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Optional

from .. import fifo
from . import gz

#: Bytes of decompressed FASTQ taken at a time: smaller than the FIFO's buffer (see fifo.PIPE_BYTES).
BLOCK = 1 << 17


class FastqError(Exception):
    """A FASTQ file is unreadable, truncated, or disagrees with its mate. The message names it."""


def count_fastq_records(path, sink: Optional[Callable[[bytes], None]] = None) -> int:
    """Count FASTQ records, reading a gzip stream to its end: a truncated file raises FastqError.
    Each block read, decompressed, is handed to ``sink`` when one is given."""
    lines = 0
    try:
        with gz.open_read(path) as fh:
            for block in iter(lambda: fh.read(BLOCK), b""):
                lines += block.count(b"\n")
                if sink is not None:
                    sink(block)
    except gz.READ_ERRORS as e:
        raise FastqError(f"{path}: unreadable or truncated FASTQ: {e}") from None
    return lines // 4


def mates_agree(counts: list[int]) -> int:
    """The spots of a run whose files hold ``counts`` records; FastqError when two mates differ."""
    if len(counts) == 2 and counts[0] != counts[1]:
        raise FastqError(f"mates differ in read count: {counts[0]} vs {counts[1]}")
    return counts[0]


class FifoSink:
    """Blocks written into a FIFO for its reader. A reader that exits before it opens the FIFO, or
    closes it before the end, only ends the writing: the file is still read (and counted) to its end."""

    def __init__(self, path: Path, reader_alive: Callable[[], bool]) -> None:
        self.path, self.reader_alive = Path(path), reader_alive
        self.fd: Optional[int] = None
        self.gone = False  # the reader will take no more

    def open(self) -> None:
        """Wait for the reader to open the FIFO (once); a reader that exited first ends the writing."""
        if self.fd is None and not self.gone:
            try:
                self.fd = fifo.open_for_writing(self.path, threading.Event(), self.reader_alive)
            except fifo.NoReader:
                self.gone = True
            else:
                fifo.enlarge(self.fd)

    def __call__(self, block: bytes) -> None:
        self.open()
        if self.fd is None:
            return
        try:
            fifo.write_all(self.fd, block)
        except BrokenPipeError:
            self.gone = True
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def feed_fastq(path, into: Path, reader_alive: Callable[[], bool]) -> int:
    """Count ``path``'s records as :func:`count_fastq_records` does while its decompressed bytes go
    into the FIFO ``into``; the FIFO is closed at the end, or where the file turns out to be broken,
    so its reader sees the end of the stream there. Raises FastqError."""
    sink = FifoSink(into, reader_alive)
    try:
        return count_fastq_records(path, sink)
    finally:
        sink.open()  # when nothing was sent (an empty or unreadable file) the reader still waits for it
        sink.close()
