"""Reading and writing gzipped FASTQ: the one place the pipeline opens reads.

ISA-L's gzip (python-isal) reads the same streams as Python's ``gzip`` module and writes standard
gzip that every reader takes. On one simulated mate of 85.9 MB it read to the end 2.06 × as fast and
wrote level 1 4.35 × as fast, into a file 3 % smaller (``bench/gzip_bench.py``; docs/measurements.md).
Output depends only on the data (no file name, mtime 0), so the same reads give the same bytes.
Each ``write`` is one compress call: write blocks, not lines.
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager
from typing import IO, BinaryIO, Iterator

from isal import igzip, isal_zlib

_ISAL_ERROR: type[BaseException] = isal_zlib.error  # type: ignore[assignment]  # its stub calls the class an instance
#: What reading a broken gzip stream raises: truncation (EOFError), a bad header or CRC
#: (``gzip.BadGzipFile``, an OSError), corrupt deflate data (either library's error).
READ_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, _ISAL_ERROR)

#: ISA-L's levels are 0-3; 1 is its fast level, and smaller than zlib's level 1 on FASTQ.
LEVEL = 1


def is_gz(path) -> bool:
    return str(path).endswith(".gz")


def open_read(path) -> BinaryIO:
    """``path`` for reading bytes, decompressed when its name ends in ``.gz``."""
    return igzip.open(path, "rb") if is_gz(path) else open(path, "rb")


def writer(raw: IO[bytes], level: int = LEVEL) -> BinaryIO:
    """A gzip writer into the open binary file ``raw`` (closing it leaves ``raw`` open)."""
    return igzip.IGzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0)  # type: ignore[return-value]


@contextmanager
def open_write(path, level: int = LEVEL) -> Iterator[BinaryIO]:
    """``path`` created (or truncated) as a gzip file to write bytes into."""
    with open(path, "wb") as raw, writer(raw, level) as out:
        yield out
