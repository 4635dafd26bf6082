"""How many bytes a run will take on disk, and sizes as people write them (``40G``, ``1.5 TiB``).

:func:`expected_bytes` is the gzipped FASTQ a run puts on disk; :func:`sra_excess` what its
``.sra`` conversion holds beyond that. The factors below are upper estimates, chosen from real ENA
rows and real fasterq-dump output; ``docs/measurements.md`` keeps the figures behind them.
"""

from __future__ import annotations

import math
import re
from typing import Optional

from ..model import SINGLE, Run

#: Gzipped FASTQ bytes per sequenced base when the metadata has ``base_count`` but no
#: ``fastq_bytes``: above 99.7 % of 895 real ENA rows (overestimating only makes batches smaller).
DEFAULT_BYTES_PER_BASE = 1.1
#: Bytes fasterq-dump writes per read besides bases and qualities: two deflines of up to 80 bytes
#: (accession, spot number, the submitter's read name, ``length=N``) and four newlines.
SRA_READ_OVERHEAD = 2 * 80 + 2
#: Plain FASTQ bytes per ``.sra`` byte when the metadata has no ``base_count``.
SRA_EXPANSION = 10
#: ``.sra`` bytes per gzipped FASTQ byte when the metadata has no ``sra_bytes`` (real p99: 1.71).
SRA_PER_FASTQ_BYTE = 2


def expected_bytes(run: Run, bytes_per_base: float = DEFAULT_BYTES_PER_BASE) -> Optional[int]:
    """Bytes the run is expected to put on disk as gzipped FASTQ, or None when nothing tells.

    In order: the listed FASTQ sizes (``run.fastq_bytes``, all files known); else
    ``base_count * bytes_per_base`` (rounded up; a base_count of 0 counts as unknown); else the
    ``.sra`` file size; else None.
    """
    fq = run.fastq_bytes
    if fq is not None:
        return fq
    if run.base_count:
        return math.ceil(run.base_count * bytes_per_base)
    if run.sra_bytes is not None:
        return run.sra_bytes
    return None


def fastq_text_bytes(run: Run) -> Optional[int]:
    """Upper estimate of the plain FASTQ that fasterq-dump writes for ``run``, or None.

    From ``base_count`` (bases and as many quality characters) plus :data:`SRA_READ_OVERHEAD`
    per read: ``read_count`` spots, times two unless the metadata says SINGLE; without a read
    count, one read per 30 bases (shorter reads would be unusual for RNA-seq). Without a base
    count, :data:`SRA_EXPANSION` times the ``.sra`` size.
    """
    if run.base_count:
        mates = 1 if run.layout == SINGLE else 2
        reads = run.read_count * mates if run.read_count else math.ceil(run.base_count / 30)
        return 2 * run.base_count + reads * SRA_READ_OVERHEAD
    if run.sra_bytes:
        return SRA_EXPANSION * run.sra_bytes
    return None


def sra_peak_bytes(run: Run, bytes_per_base: float = DEFAULT_BYTES_PER_BASE) -> Optional[int]:
    """Bytes the ``.sra`` route holds at its peak for ``run``, or None when nothing tells.

    The ``.sra`` file (its size, else :data:`SRA_PER_FASTQ_BYTE` times the expected FASTQ bytes),
    fasterq-dump's plain output, and its temporary files, which its readme puts at about the
    output's size: ``sra + 2 x plain``. Gzipping afterwards holds less (the temporary files are
    gone by then, and each plain mate is deleted once compressed).
    """
    text = fastq_text_bytes(run)
    sra: Optional[int]
    if run.sra_bytes is not None:
        sra = run.sra_bytes
    else:
        fq = expected_bytes(run, bytes_per_base)
        sra = None if fq is None else SRA_PER_FASTQ_BYTE * fq
    if text is None or sra is None:
        return None
    return sra + 2 * text


def sra_excess(run: Run, bytes_per_base: float = DEFAULT_BYTES_PER_BASE) -> Optional[int]:
    """What converting ``run`` from ``.sra`` holds beyond its expected FASTQ bytes, or None when
    it cannot be sized; 0 for a run with no ``.sra`` URL (local files, say)."""
    if not run.sra_urls:
        return 0
    peak, fq = sra_peak_bytes(run, bytes_per_base), expected_bytes(run, bytes_per_base)
    if peak is None or fq is None:
        return None
    return max(0, peak - fq)


def run_cost(run: Run, sra_route: bool, bytes_per_base: float = DEFAULT_BYTES_PER_BASE) -> Optional[int]:
    """A run's bytes alone in a batch: its FASTQ, plus its conversion excess with the .sra route."""
    fq = expected_bytes(run, bytes_per_base)
    if not sra_route or fq is None:
        return fq
    excess = sra_excess(run, bytes_per_base)
    return None if excess is None else fq + excess


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:([KMGTP])(?:I?B)?|B)?\s*$", re.IGNORECASE)


def parse_size(text) -> int:
    """Bytes from ``"40G"``, ``"500M"``, ``"1.5T"``, ``"123"``, ``"10GB"``, ``"10GiB"``, ``"4 k"``.

    Units are binary whatever the spelling (``G`` = ``GB`` = ``GiB`` = 2**30), case-insensitive;
    ``B`` alone means bytes. A whole int (not bool) is taken as bytes. Fractions of a byte round
    up. Anything else (negative, empty, unknown unit, NaN) raises ValueError naming the value.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid size {text!r}: expected a number of bytes or e.g. 40G, 500M, 1.5T, 10GiB")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text!r}: must not be negative")
        return text
    if isinstance(text, float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"invalid size {text!r}: must be a finite number >= 0")
        return math.ceil(text)
    m = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"invalid size {text!r}: expected a number of bytes or e.g. 40G, 500M, 1.5T, 10GiB")
    number, unit = m.groups()
    factor = _UNITS[(unit or "").upper()]
    if "." in number:
        # exact decimal arithmetic: "1.5T" is exactly 1.5 * 2**40
        whole, _, frac = number.partition(".")
        num = int(whole or "0") * 10 ** len(frac) + int(frac or "0")
        return -(-num * factor // 10 ** len(frac))  # ceiling division
    return int(number) * factor


_HUMAN_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human(n) -> str:
    """``512 B``, ``1.5 KiB``, ``40.0 GiB``: binary units, one decimal above bytes."""
    n = int(n)
    if n < 0:
        return "-" + human(-n)
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _HUMAN_UNITS[1:]:
        value /= 1024.0
        if value < 1024.0 or unit == _HUMAN_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
