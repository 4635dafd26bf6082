"""Reading FASTQ files to their end: counting spots, and checking that mates agree."""

from __future__ import annotations

from . import gz


class FastqError(Exception):
    """A FASTQ file is unreadable, truncated, or disagrees with its mate. The message names it."""


def count_fastq_records(path) -> int:
    """Count FASTQ records, reading a gzip stream to its end: a truncated file raises FastqError."""
    lines = 0
    try:
        with gz.open_read(path) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                lines += block.count(b"\n")
    except gz.READ_ERRORS as e:
        raise FastqError(f"{path}: unreadable or truncated FASTQ: {e}") from None
    return lines // 4


def count_checked(fastqs: list) -> int:
    """Spots in files no md5 vouches for: each read to its end, mates must agree. Raises FastqError."""
    counts = [count_fastq_records(f) for f in fastqs]
    if len(counts) == 2 and counts[0] != counts[1]:
        raise FastqError(f"mates differ in read count: {counts[0]} vs {counts[1]}")
    return counts[0]
