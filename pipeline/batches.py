"""Splitting selected runs into batches, stable across re-runs on the same metadata."""
from __future__ import annotations

from pathlib import Path

from .model import Run
from .util import atomic_write_json, read_json


def make_batches(runs: list[Run], size: int) -> list[list[Run]]:
    """Consecutive groups of ``size`` runs, in metadata order (so a re-run gives the same batches)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    return [runs[i:i + size] for i in range(0, len(runs), size)]


def write_batch(path, batch: int, runs: list[Run]) -> None:
    atomic_write_json(path, {"batch": batch, "runs": [r.to_dict() for r in runs]})


def read_batch(path) -> list[Run]:
    return [Run.from_dict(d) for d in read_json(path)["runs"]]
