"""Read run metadata tables, select runs, and explain every run that is not selected.

Four table formats are recognised by their columns (see :func:`detect_format`):

``ena``
    ENA portal ``filereport``/``search`` output with ``result=read_run`` (``run_accession``,
    ``fastq_ftp``/``fastq_md5``/``fastq_bytes`` as aligned ``;``-separated lists, ``sra_ftp`` ...).
``integrate``
    amalgkit's local-files table for private data (``run``, ``read1_path``, ``read2_path``).
``amalgkit``
    amalgkit ``metadata.tsv`` (``run``, ``lib_layout``, ``is_sampled``, ``exclusion``, links).
``runinfo``
    NCBI ``efetch -format runinfo`` CSV (``Run``, ``LibraryLayout``, ``download_path``).

A row becomes a :class:`~pipeline.model.Run` in :mod:`pipeline.inputs.formats` (per-format
parsing, URL normalisation, mate picking); this module reads the table, tells its format, applies
the selection and writes the reports.

:func:`load_runs` is the entry point; it returns the selected :class:`~pipeline.model.Run` records
in file order and a ``(run, reason)`` pair for every row that was not selected. Rows are never
dropped silently: bad input raises :class:`~pipeline.model.InputError` naming the file, run,
column or value.
"""

from __future__ import annotations

import csv
import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

from ..files import atomic_write_text
from ..model import InputError, Run, check_accession, excerpt, has_control, tsv_text

# Defined in formats, re-exported (see __all__) for callers of pipeline.inputs.metadata.
from .formats import (
    _RUN_COLUMN,
    ODP_URL,
    PARSERS,
    _amalgkit_flags,
    _missing,
    _Row,
    normalise_url,
    pick_mates,
)
from .selection import SELECTION_KEYS, check_selection

__all__ = [
    "ODP_URL",
    "SELECTION_COLUMNS",
    "SELECTION_KEYS",
    "Table",
    "detect_format",
    "load_runs",
    "normalise_url",
    "pick_mates",
    "read_table",
    "write_runs_tsv",
    "write_skipped_tsv",
]

log = logging.getLogger(__name__)


#: Column consulted for each selection key, by preference, whatever the format.
SELECTION_COLUMNS = {
    "library_strategy": ("library_strategy", "lib_strategy", "LibraryStrategy"),
    "library_source": ("library_source", "lib_source", "LibrarySource"),
}


# --------------------------------------------------------------------------------------------
# Table reading and format detection
# --------------------------------------------------------------------------------------------


def detect_format(columns: Iterable[str], path=None) -> str:
    """Return ``"ena"``, ``"integrate"``, ``"amalgkit"`` or ``"runinfo"`` from a table's columns.

    ``run_accession`` -> ena; ``run`` + ``read1_path`` -> integrate (checked before amalgkit,
    since integrate tables carry amalgkit columns too); ``run`` + ``lib_layout`` -> amalgkit;
    ``Run`` + ``LibraryLayout`` -> runinfo. Otherwise InputError naming the file and columns.
    """
    cols = [str(c).strip().lstrip("\ufeff") for c in columns]
    names = set(cols)
    if "run_accession" in names:
        return "ena"
    if "run" in names and "read1_path" in names:
        return "integrate"
    if "run" in names and "lib_layout" in names:
        return "amalgkit"
    if "Run" in names and "LibraryLayout" in names:
        return "runinfo"
    shown = ", ".join(map(excerpt, cols[:20])) + (f", ... ({len(cols)} columns)" if len(cols) > 20 else "")
    where = f" of {path}" if path is not None else ""
    raise InputError(
        f"cannot tell the metadata format{where} from its columns [{shown}]: expected "
        "run_accession (ENA read_run), run + read1_path (amalgkit integrate), "
        "run + lib_layout (amalgkit metadata) or Run + LibraryLayout (NCBI runinfo)"
    )


def _open_text(path: Path):
    """Text stream of a (possibly gzipped) table: BOM stripped, undecodable bytes replaced, and
    ``newline=""`` so that the csv module sees line ends inside quoted fields."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _sniff_separator(path: Path) -> str:
    """Tab if the header line has a tab, else comma."""
    with _open_text(path) as fh:
        for line in fh:
            if line.strip():
                return "\t" if "\t" in line else ","
    raise InputError(f"metadata table {path} is empty")


def _header(cells: list[str], path: Path, line: int) -> list[str]:
    """Column names stripped of blanks and BOM; a blank name becomes ``Unnamed: <index>`` (as
    pandas named it), a repeated name is an InputError: its cells would overwrite each other."""
    columns = [c.strip().lstrip("\ufeff").strip() or f"Unnamed: {i}" for i, c in enumerate(cells)]
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            raise InputError(f"metadata table {path} (line {line}): column {excerpt(c)} appears more than once")
        seen.add(c)
    return columns


class Table(NamedTuple):
    """A metadata table as text: column names, one ``{column: str}`` per data row, format."""

    columns: list[str]
    rows: list[dict[str, str]]
    fmt: str


def read_table(path) -> Table:
    """Read a metadata table with the stdlib csv module (pandas would cost ~0.7 s at start-up).

    Tab-separated if the header line has a tab, else comma-separated; ``"`` quotes fields;
    UTF-8 (BOM stripped, bad bytes replaced), gzipped if the name ends in ``.gz``. Cells are
    str, never stripped. Blank lines and rows whose every cell is missing are dropped, and so
    are the header lines efetch repeats inside runinfo tables; a short row is padded with "".
    A row with more cells than the header (blank trailing cells aside), a repeated column, a
    quote never closed, an empty or header-only table raise InputError naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"metadata table {path} does not exist or is not a file")
    at_eof = []

    def lines(fh):
        yield from fh
        at_eof.append(True)  # a row the reader returns after this ran inside an open quote

    columns: Optional[list[str]] = None
    rows: list[dict[str, str]] = []
    line = 1  # first line of the record being read
    try:
        sep = _sniff_separator(path)
        with _open_text(path) as fh:
            reader = csv.reader(lines(fh), delimiter=sep, quotechar='"')
            for cells in reader:
                if at_eof:
                    raise InputError(
                        f"cannot read metadata table {path}: the quoted field starting on line {line} is never closed"
                    )
                if columns is None:
                    if any(c.strip() for c in cells):
                        columns = _header(cells, path, line)
                elif not all(_missing(c) for c in cells):
                    extra = cells[len(columns) :]
                    if any(c.strip() for c in extra):
                        raise InputError(
                            f"cannot read metadata table {path}: line {line} has {len(cells)} "
                            f"fields but the header has {len(columns)} (quote a value that "
                            f"holds the separator)"
                        )
                    cells = cells[: len(columns)] + [""] * (len(columns) - len(cells))
                    rows.append(dict(zip(columns, cells)))
                line = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"cannot read metadata table {path} (line {line}): {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated .gz
        raise InputError(f"cannot read metadata table {path}: {exc}") from None
    if columns is None:
        raise InputError(f"metadata table {path} is empty")
    fmt = detect_format(columns, path)
    if fmt == "runinfo":
        # efetch concatenates batches with their header lines repeated inside the CSV.
        rows = [r for r in rows if r["Run"].strip() != "Run"]
    if not rows:
        raise InputError(f"metadata table {path} has a header but no rows")
    return Table(columns, rows, fmt)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def _selection_reason(run: Run, attrs: dict, sel: dict) -> Optional[str]:
    if run.run in sel.get("exclude_runs", ()):
        return "exclude_runs lists this run"
    want = sel.get("layout")
    if want and run.layout != want:
        return f"layout={run.layout or '(unknown)'} (selection layout={want})"
    for key in ("library_strategy", "library_source"):
        wanted = sel.get(key)
        if not wanted or key not in attrs:  # key absent: the format has no such column
            continue
        value = attrs[key]
        if value is None or value.lower() not in {w.lower() for w in wanted}:
            shown = value if value is not None else "(blank)"
            return f"{key}={shown} (selection {key}={', '.join(wanted)})"
    return None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def load_runs(path, selection: dict | None = None) -> tuple[list[Run], list[tuple[str, str]]]:
    """Read a metadata table, return (runs in file order, skipped as (run_accession, reason)).

    Every row ends up either as a Run or in ``skipped`` with a reason naming the column or
    selection key that excluded it. Invalid or duplicate accessions, malformed values, an empty
    table, an unknown format or selection key, and (integrate tables) a missing local file of a
    selected run raise InputError.
    """
    sel = check_selection(selection)
    path = Path(path)
    table = read_table(path)
    fmt = table.fmt
    run_col = _RUN_COLUMN[fmt]
    columns = set(table.columns)
    attr_cols = {}
    for key, candidates in SELECTION_COLUMNS.items():
        col = next((c for c in candidates if c in columns), None)
        if col is not None:
            attr_cols[key] = col
        elif key in sel:
            log.warning(
                "%s (%s format) has none of the columns %s: selection %s is not applied",
                path,
                fmt,
                ", ".join(candidates),
                key,
            )

    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    for i, values in enumerate(table.rows, start=1):
        row = _Row(path, i, values)
        raw = values[run_col]  # stripped of blanks only when nothing else is wrong with it
        acc = check_accession(raw if has_control(raw) else raw.strip(), row.where(run_col))
        if acc in seen:
            raise InputError(f"{path}: run {acc} appears more than once (rows {seen[acc]} and {i})")
        seen[acc] = i
        row.run = acc
        attrs = {key: row.get(col) for key, col in attr_cols.items()}
        reason = _amalgkit_flags(row) if fmt in ("amalgkit", "integrate") else None
        run: Optional[Run] = None
        to_check: list[tuple[str, Path]] = []
        if reason is None:
            run, to_check = PARSERS[fmt](row)
            reason = _selection_reason(run, attrs, sel)
        entries.append(_Entry(acc, run, reason, to_check))

    unknown_excludes = sorted(sel.get("exclude_runs", set()) - set(seen))
    if unknown_excludes:
        log.warning("selection exclude_runs names runs not in %s: %s", path, ", ".join(unknown_excludes))

    max_runs = sel.get("max_runs")
    kept = 0
    for entry in entries:
        if entry.reason is None:
            kept += 1
            if max_runs is not None and kept > max_runs:
                entry.reason = f"max_runs={max_runs}"

    runs, skipped = [], []
    for entry in entries:
        if entry.reason is not None or entry.run is None:
            skipped.append((entry.acc, entry.reason or ""))
            continue
        for column, local in entry.to_check:
            try:
                there = local.is_file()
            except OSError as exc:  # a name too long, say
                raise InputError(f"{path}: run {entry.acc}: {column} file {local}: {exc.strerror}") from None
            if not there:
                raise InputError(f"{path}: run {entry.acc}: {column} file {local} does not exist")
        runs.append(entry.run)
    return runs, skipped


@dataclass
class _Entry:
    """One row of the table on its way to ``runs`` or ``skipped``."""

    acc: str
    run: Optional[Run]
    reason: Optional[str]
    to_check: list[tuple[str, Path]]


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _write_tsv_atomic(path, header: list[str], rows: Iterable[list]) -> None:
    """Write a TSV atomically, every cell by the one rule of :func:`pipeline.model.tsv_text`."""
    atomic_write_text(path, tsv_text(header, rows))


def write_runs_tsv(runs: Iterable[Run], path) -> None:
    """Write the selected runs as a TSV (run, layout, read_count, base_count, n_files,
    fastq_bytes, urls), atomically. ``urls`` lists the FASTQ URLs, or the ``.sra`` candidates
    (``;``-separated) for a run with no FASTQ listed. Cells follow :func:`pipeline.model.tsv_text`
    (a tab or line break in a cell is written ``\\t``, ``\\n``): one line per run, seven fields."""
    rows = (
        [
            r.run,
            r.layout,
            r.read_count,
            r.base_count,
            len(r.files),
            r.fastq_bytes,
            ";".join(f.url for f in r.files) if r.files else ";".join(r.sra_urls),
        ]
        for r in runs
    )
    _write_tsv_atomic(path, ["run", "layout", "read_count", "base_count", "n_files", "fastq_bytes", "urls"], rows)


def write_skipped_tsv(skipped: Iterable[tuple[str, str]], path) -> None:
    """Write (run, reason) pairs as a TSV, atomically; cells follow :func:`pipeline.model.tsv_text`
    (a tab or line break in a reason is written ``\\t``, ``\\n``): one line per run, two fields."""
    _write_tsv_atomic(path, ["run", "reason"], ([run, reason] for run, reason in skipped))
