"""Splitting selected runs into batches, stable across re-runs on the same metadata.

Batches are consecutive runs in metadata order, closed by a run count (``batch.size``), a byte
budget (``batch.max_bytes``) or both. Runs are never reordered, so the same metadata and the same
settings always give the same batches, and a resumed pipeline finds its batch files as planned.

The byte budget uses :func:`expected_bytes`: the FASTQ sizes the metadata lists, else an estimate
from ``base_count`` (:data:`DEFAULT_BYTES_PER_BASE`), else the ``.sra`` file size.

When the ``.sra`` route is one of the sources, a batch also keeps room for one conversion
(:func:`sra_excess`): a run that falls back to it briefly holds its ``.sra`` file, fasterq-dump's
plain FASTQ and fasterq-dump's temporary files, far more than its gzipped FASTQ. The batch's
conversions run one at a time (``BatchDownload``), so one excess, the largest, is all it needs.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Optional

from .model import Run
from .util import atomic_write_json, read_json

#: Gzipped FASTQ bytes per sequenced base, used when the metadata has ``base_count`` but no
#: ``fastq_bytes``. Set conservatively (a high percentile, not the mean) so a batch estimated from
#: base counts rarely holds more than its budget.
#:
#: Measured on the 895 rows of ``shared/data/metadata/ena_read_run_1000_from_pysradb.csv`` that
#: have both ``base_count`` > 0 and ``fastq_bytes`` (sum over all listed files / base_count;
#: 972 of 1000 rows Illumina, 17 PAIRED, 263 RNA-Seq):
#:
#: ============  =====  =====  =====  =====  =====  =====  =====  =========
#: rows          mean   p50    p90    p95    p97.5  p99    max    aggregate
#: ============  =====  =====  =====  =====  =====  =====  =====  =========
#: all 895       0.671  0.685  0.902  0.960  1.000  1.040  1.121  0.604
#: RNA-Seq 263   0.727  0.736  0.926  0.979  1.015  1.081  1.121
#: ============  =====  =====  =====  =====  =====  =====  =====  =========
#:
#: By platform: Illumina (867 rows) mean 0.66, ABI_SOLID (24) 0.91, ION_TORRENT (4) 0.92; the
#: highest ratios are Illumina runs. ``pipeline.simulate`` output compresses better than most
#: real runs: 0.40-0.46 bytes/base (random ACGT, constant quality ``I``, gzip level 1; 0.413 for
#: 50,000 pairs of 100 bp, 0.395 for 150 bp, 0.459 for 50 bp single), so the factor
#: overestimates simulated data safely.
#:
#: Chosen: 1.1, above 99.7 % of the real rows (2 of 895 above it, max 1.121) and above the RNA-Seq
#: p99. Overestimating only makes batches smaller; underestimating risks a full disk.
DEFAULT_BYTES_PER_BASE = 1.1

#: Bytes fasterq-dump writes per read besides the bases and qualities: the ``@`` and ``+`` lines
#: each hold the accession, the spot number, the submitter's own read name (whose length the
#: metadata does not give) and ``length=N``, plus four newlines. Two deflines of 80 bytes each
#: cover Illumina-style names; on SRRHOXC (names like ``SRRHOXC.1 1:NM_014620:16:182
#: length=50``, 10,000 pairs of 50 bp) fasterq-dump 3.0.3 wrote 3,927,828 bytes where this gives
#: 5,240,000.
SRA_READ_OVERHEAD = 2 * 80 + 2
#: Plain FASTQ bytes per ``.sra`` byte when the metadata has no ``base_count``; SRRHOXC: 8.9.
SRA_EXPANSION = 10
#: ``.sra`` bytes per gzipped FASTQ byte when the metadata has no ``sra_bytes``: in the 895 real
#: ENA rows of ``shared/data/metadata/ena_read_run_1000_from_pysradb.csv`` with both sizes, the
#: ratio is 0.87 at the median, 1.14 at p90, 1.71 at p99 and 1.84 at most.
SRA_PER_FASTQ_BYTE = 2


def fastq_text_bytes(run: Run) -> Optional[int]:
    """Upper estimate of the plain FASTQ that fasterq-dump writes for ``run``, or None.

    From ``base_count`` (bases and as many quality characters) plus :data:`SRA_READ_OVERHEAD`
    per read: ``read_count`` spots, times two unless the metadata says SINGLE; without a read
    count, one read per 30 bases (shorter reads would be unusual for RNA-seq). Without a base
    count, :data:`SRA_EXPANSION` times the ``.sra`` size.
    """
    if run.base_count:
        mates = 1 if run.layout == "SINGLE" else 2
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


def make_batches(runs: list[Run], size: Optional[int] = None, max_bytes: Optional[int] = None,
                 bytes_per_base: float = DEFAULT_BYTES_PER_BASE, sra_route: bool = False) -> list[list[Run]]:
    """Consecutive groups of runs, in metadata order (so a re-run gives the same batches).

    A batch closes when adding the next run would make it hold more than ``size`` runs or more
    than ``max_bytes`` expected bytes (:func:`expected_bytes`); at least one of the two limits is
    required. Runs are never reordered to fill gaps. A run whose expected size is ``max_bytes`` or
    more gets a batch of its own (see :func:`oversized_runs` to warn about those above it). When
    ``max_bytes`` is set, a run of unknown size counts as ``max_bytes``, so it too is alone in its
    batch: one unknown run at a time is the most the budget can vouch for.

    With ``sra_route`` (the ``.sra`` route is among the sources) a batch's bytes are its runs'
    expected bytes plus the largest :func:`sra_excess` among them, and a run whose conversion
    size is unknown counts as unknown.
    """
    if size is None and max_bytes is None:
        raise ValueError("make_batches needs a batch size, a max_bytes budget or both")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"batch size must be a whole number >= 1, got {size!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"batch max_bytes must be a whole number of bytes >= 1, got {max_bytes!r}")
    if max_bytes is None:
        return [runs[i:i + size] for i in range(0, len(runs), size)]

    out: list[list[Run]] = []
    current: list[Run] = []
    used = room = 0  # expected bytes of the batch so far; the largest conversion excess among them
    for run in runs:
        cost = run_cost(run, sra_route, bytes_per_base)
        if cost is None or cost >= max_bytes:
            if current:
                out.append(current)
            out.append([run])
            current, used, room = [], 0, 0
            continue
        fq = expected_bytes(run, bytes_per_base)
        excess = cost - fq
        if current and ((size is not None and len(current) >= size) or used + fq + max(room, excess) > max_bytes):
            out.append(current)
            current, used, room = [], 0, 0
        current.append(run)
        used += fq
        room = max(room, excess)
    if current:
        out.append(current)
    return out


def oversized_runs(runs: Iterable[Run], max_bytes: int, bytes_per_base: float = DEFAULT_BYTES_PER_BASE,
                   sra_route: bool = False) -> list[tuple[Run, int]]:
    """``(run, bytes)`` for every run expected to be larger than ``max_bytes`` alone
    (:func:`run_cost`: with ``sra_route``, a conversion's peak counts).

    Such a run still gets a batch (of its own), which on its own exceeds the budget: warn.
    Runs of unknown size are not listed here (see :func:`unknown_size_runs`).
    """
    out = []
    for run in runs:
        b = run_cost(run, sra_route, bytes_per_base)
        if b is not None and b > max_bytes:
            out.append((run, b))
    return out


def unknown_size_runs(runs: Iterable[Run], bytes_per_base: float = DEFAULT_BYTES_PER_BASE,
                      sra_route: bool = False) -> list[Run]:
    """Runs whose size nothing in the metadata tells (no fastq_bytes, base_count or sra_bytes;
    with ``sra_route``, also no base_count or sra_bytes to size a conversion by)."""
    return [r for r in runs if run_cost(r, sra_route, bytes_per_base) is None]


def sra_room(runs: Iterable[Run], bytes_per_base: float = DEFAULT_BYTES_PER_BASE) -> int:
    """Room one batch keeps for its one conversion at a time: its runs' largest :func:`sra_excess`."""
    return max((sra_excess(r, bytes_per_base) or 0 for r in runs), default=0)


def batch_bytes(runs: Iterable[Run], bytes_per_base: float = DEFAULT_BYTES_PER_BASE) -> tuple[int, int]:
    """``(sum of the known expected bytes, number of runs of unknown size)`` of one batch."""
    total = unknown = 0
    for run in runs:
        b = expected_bytes(run, bytes_per_base)
        if b is None:
            unknown += 1
        else:
            total += b
    return total, unknown


def write_batch(path, batch: int, runs: list[Run], bytes_per_base: float = DEFAULT_BYTES_PER_BASE) -> None:
    """One batch as JSON: ``batch``, ``runs`` and, for information, ``expected_bytes`` (known
    sizes summed), ``unknown_size`` (runs without any size) and ``sra_room`` (:func:`sra_room`).
    :func:`read_batch` needs ``runs`` only, so files written before these fields existed still read."""
    total, unknown = batch_bytes(runs, bytes_per_base)
    atomic_write_json(path, {"batch": batch, "expected_bytes": total, "unknown_size": unknown,
                             "sra_room": sra_room(runs, bytes_per_base), "runs": [r.to_dict() for r in runs]})


def read_batch(path) -> list[Run]:
    return [Run.from_dict(d) for d in read_json(path)["runs"]]


def extend_plan(kept: list[list[Run]], runs: list[Run], size: Optional[int] = None,
                max_bytes: Optional[int] = None, bytes_per_base: float = DEFAULT_BYTES_PER_BASE,
                sra_route: bool = False) -> list[list[Run]]:
    """Re-plan after the metadata changed, without moving any run of a batch already started.

    ``kept`` are the batches to keep as they are (a prefix of the old plan); the runs of ``runs``
    that are in none of them are packed into new batches after them, in metadata order.
    """
    planned = {r.run for batch in kept for r in batch}
    rest = [r for r in runs if r.run not in planned]
    return list(kept) + (make_batches(rest, size, max_bytes, bytes_per_base, sra_route) if rest else [])
