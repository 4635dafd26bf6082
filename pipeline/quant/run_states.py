"""What became of each run of a species, from its records: for amalgkit's metadata and layout."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import read_json
from ..paths import QUANT, SpeciesPaths
from . import kallisto
from .quantify import RUN_RECORD, is_quantified

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    status: str  # what the pipeline made of the run: quantified, failed or skipped
    detail: str = ""
    mapping_rate: Any = None  # kallisto's p_pseudoaligned, percent
    layout: str = ""  # PAIRED or SINGLE, from the files
    backend: str = "kallisto"  # the quantifier (quant.tool) that made its results


def run_states(paths: SpeciesPaths) -> dict[str, RunState]:
    """Each run's fate from the species' records: runs.tsv, skipped.tsv, the quant markers, quant/."""
    states = {r.get("run", ""): RunState("skipped", r.get("reason", "")) for r in read_tsv(paths.skipped_table)}
    failed: dict[str, dict] = {}
    for marker in paths.batch_markers(QUANT).values():
        failed |= {r.get("run"): r for r in read_json(marker).get("runs", []) if r.get("status") == "failed"}
    for row in read_tsv(paths.runs_table):
        run = row.get("run", "")
        if is_quantified(paths.quant, run):
            try:
                rate = kallisto.read_run_info(paths.run_quant(run)).get("p_pseudoaligned")
            except (OSError, ValueError) as e:
                logger.warning("%s: run %s: no mapping_rate: %s", paths.species, run, e)
                rate = None
            record = paths.run_quant(run) / RUN_RECORD
            rec = read_json(record) if record.is_file() else {}
            layout, backend = str(rec.get("layout") or row.get("layout", "")), str(rec.get("quant_tool") or "kallisto")
            states[run] = RunState("quantified", mapping_rate=rate, layout=layout, backend=backend)
        else:
            f = failed.get(run, {"reason": "no kallisto output"})
            states[run] = RunState("failed", f"{f.get('stage') or 'quant'}: {f.get('reason', '')}")
    states.pop("", None)
    return states


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a TSV the pipeline wrote, cells unescaped (a backslash there only starts an escape)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [{k: _unescape(v or "") for k, v in r.items()} for r in rows]


def _unescape(cell: str) -> str:
    try:  # tsv_cell's escapes are Python's: \\, \t, \n, \r, \xNN, \uNNNN
        return cell.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:  # a backslash that starts no escape: not written by tsv_cell
        return cell
