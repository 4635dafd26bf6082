"""Splitting selected runs into batches, stable across re-runs on the same metadata.

Batches are consecutive runs in metadata order, closed by a run count (``batch.size``), a byte
budget (``batch.max_bytes``) or both. Runs are never reordered, so the same metadata and the same
settings always give the same batches, and a resumed pipeline finds its batch files as planned.
When the ``.sra`` route is one of the sources, a batch also keeps room for one conversion
(:func:`~pipeline.plan.sizes.sra_excess`); a batch's conversions take turns, so one is enough.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from ..files import atomic_write_text, read_json
from ..model import Run
from .sizes import DEFAULT_BYTES_PER_BASE, expected_bytes, run_cost, sra_excess


def make_batches(
    runs: list[Run],
    size: Optional[int] = None,
    max_bytes: Optional[int] = None,
    bytes_per_base: float = DEFAULT_BYTES_PER_BASE,
    sra_route: bool = False,
) -> list[list[Run]]:
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
        assert size is not None
        return [runs[i : i + size] for i in range(0, len(runs), size)]

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
        assert fq is not None  # a run with a cost has expected bytes
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


def oversized_runs(
    runs: Iterable[Run], max_bytes: int, bytes_per_base: float = DEFAULT_BYTES_PER_BASE, sra_route: bool = False
) -> list[tuple[Run, int]]:
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


def unknown_size_runs(
    runs: Iterable[Run], bytes_per_base: float = DEFAULT_BYTES_PER_BASE, sra_route: bool = False
) -> list[Run]:
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


def write_batch(
    path, batch: int, runs: list[Run], bytes_per_base: float = DEFAULT_BYTES_PER_BASE, sync: bool = True
) -> None:
    """One batch as JSON: ``batch``, ``runs`` and, for information, ``expected_bytes`` (known
    sizes summed), ``unknown_size`` (runs without any size) and ``sra_room`` (:func:`sra_room`).
    :func:`read_batch` needs ``runs`` only, so files written before these fields existed still read.
    ``sync=False``: the caller flushes the plan once (:func:`~pipeline.files.sync_filesystem`)."""
    total, unknown = batch_bytes(runs, bytes_per_base)
    record = {
        "batch": batch,
        "expected_bytes": total,
        "unknown_size": unknown,
        "sra_room": sra_room(runs, bytes_per_base),
        "runs": [r.to_dict() for r in runs],
    }
    # one line, not indented: json's C encoder then writes it, 10x faster, for plans of 10,000+ batches
    atomic_write_text(path, json.dumps(record, separators=(",", ":")) + "\n", sync=sync)


def read_batch(path) -> list[Run]:
    return [Run.from_dict(d) for d in read_json(path)["runs"]]


def extend_plan(kept: list[list[Run]], runs: list[Run], **packing: Any) -> list[list[Run]]:
    """Re-plan after the metadata changed, without moving any run of a batch already started.

    ``kept`` are the batches to keep as they are (a prefix of the old plan); the runs of ``runs``
    that are in none of them are packed into new batches after them, in metadata order, by
    :func:`make_batches` with the ``packing`` keywords (``size``, ``max_bytes``, ``sra_route``).
    """
    planned = {r.run for batch in kept for r in batch}
    rest = [r for r in runs if r.run not in planned]
    return list(kept) + (make_batches(rest, **packing) if rest else [])
