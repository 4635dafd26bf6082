"""How one row of each metadata table format becomes a :class:`~pipeline.model.Run`.

:mod:`pipeline.inputs.metadata` reads the table, tells its format and calls the parser for each row;
this module holds the per-format parsing and the rules it shares: which cells count as missing,
how a URL or path is normalised and which FASTQ files make up a run (:mod:`pipeline.inputs.urls`),
and where a run's ``.sra`` file may be fetched from.

``ena``
    ``fastq_ftp``, ``fastq_md5`` and ``fastq_bytes`` are aligned ``;``-separated lists; the
    files of the run are chosen by :func:`pick_mates` (none when the mates cannot be told apart:
    the run then uses its ``.sra`` file). The first ``sra_ftp`` entry, with ``sra_md5`` and
    ``sra_bytes``, is the first ``.sra`` candidate. Also ``library_layout``, ``read_count``,
    ``base_count``.
``integrate``
    ``read1_path`` (required) and ``read2_path`` (optional; amalgkit writes ``unavailable``) are
    local paths, relative to the table's folder, or URLs; the layout follows the number of files.
    Also ``read_count``/``total_spots``, ``base_count``/``total_bases``. The local files are
    returned for the caller to check, so that only selected runs need them.
``amalgkit``
    ``lib_layout``, ``total_spots``, ``total_bases``; ``AWS_Link`` and ``NCBI_Link`` are
    ``.sra`` candidates.
``runinfo``
    ``LibraryLayout``, ``spots``, ``bases``; ``download_path`` is the ``.sra`` candidate.

Every run's ``.sra`` candidates end with the AWS Open Data copy (:data:`~pipeline.inputs.urls.ODP_URL`). Rows of
``amalgkit`` and ``integrate`` tables are used only with ``is_sampled=yes`` and ``exclusion=no``
(when those columns exist). Errors raise :class:`~pipeline.model.InputError` naming the file,
row, run and column, and quoting a bounded, escaped excerpt of the value.

Every cell the pipeline uses is checked whole: one holding a control character (a newline, a tab
in a CSV, a NUL) is an error, never stripped into something valid. Every URL must pass
:func:`~pipeline.inputs.urls.url_problem` (no ``..`` segment, no ``%2F``/``%5C``), and every local
file name taken from one must pass :func:`~pipeline.model.file_name_problem` (not ``.``, ``..`` or
empty, no ``/`` or control character): such values are rejected here, not renamed at download.
"""

from __future__ import annotations

import logging
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ..model import PAIRED, SINGLE, InputError, RemoteFile, Run, excerpt, file_name_problem, has_control
from .urls import ODP_URL, SCHEME_RE, normalise_url, pick_mates, url_basename

log = logging.getLogger(__name__)


#: Cell values that mean "no value" (compared case-insensitively after stripping blanks).
MISSING_VALUES = frozenset({"", "<na>", "na", "nan"})

_THOUSANDS_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3}){1,10}")  # 1,234,567 as a spreadsheet writes it
#: A whole number as tables write it: 123, 123.0 (pandas), 1.2e+07 (R); digits and exponent are
#: bounded, so that no cell can make a number of a billion digits (or one str() refuses).
_NUMBER_RE = re.compile(r"[0-9]{1,30}(?:\.[0-9]{0,30})?(?:[eE][+-]?[0-9]{1,2})?")


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def _missing(value: Optional[str]) -> bool:
    """True for None (absent column) and for cells in :data:`MISSING_VALUES`."""
    return value is None or value.strip().lower() in MISSING_VALUES


def _clean(value: Optional[str]) -> Optional[str]:
    """The stripped string, or None when the cell is missing."""
    if value is None or _missing(value):
        return None
    return value.strip()


def _layout(value: Optional[str]) -> str:
    if value is None:
        return ""
    v = value.strip().upper()
    if v.startswith("PAIR"):
        return PAIRED
    if v.startswith("SINGLE"):
        return SINGLE
    return ""


def _split_list(value: Optional[str]) -> list[str]:
    if value is None:
        return []
    return [part.strip() for part in value.split(";")]


# --------------------------------------------------------------------------------------------
# Row parsing
# --------------------------------------------------------------------------------------------


class _Row:
    """One table row with helpers that name the file, row and run in their errors."""

    def __init__(self, path: Path, number: int, values: dict, run: str = ""):
        self.path = path
        self.number = number  # 1-based data row (the header is row 0)
        self.values = values
        self.run = run

    def where(self, column: str = "") -> str:
        col = f", column {column}" if column else ""
        run = f", run {self.run}" if self.run else ""
        return f"{self.path} (row {self.number}{run}{col})"

    def get(self, *columns: str) -> Optional[str]:
        """First non-missing value among ``columns`` (absent columns count as missing), stripped
        of blanks; InputError when that cell holds a control character anywhere."""
        for c in columns:
            raw = self.values.get(c)
            v = _clean(raw)
            if v is not None:
                if raw is not None and has_control(raw):
                    raise InputError(f"{self.where(c)}: control character in {excerpt(raw)}")
                return v
        return None

    def first_present(self, *columns: str) -> Optional[str]:
        """Name of the first of ``columns`` with a non-missing value."""
        for c in columns:
            if _clean(self.values.get(c)) is not None:
                return c
        return None

    def to_int(self, value: Optional[str], column: str) -> Optional[int]:
        if value is None:
            return None
        d = None
        if _THOUSANDS_RE.fullmatch(value) or _NUMBER_RE.fullmatch(value):
            try:
                d = Decimal(value.replace(",", ""))
            except InvalidOperation:
                d = None
        if d is None or d != d.to_integral_value():
            raise InputError(f"{self.where(column)}: expected a whole number, got {excerpt(value)}")
        return int(d)

    def int_of(self, *columns: str) -> Optional[int]:
        col = self.first_present(*columns)
        return None if col is None else self.to_int(self.get(col), col)

    def url(self, value: str, column: str) -> str:
        """``value`` of ``column`` as an absolute URL whose path and file name pass the rules (see
        the module docstring); InputError naming the table, row, run and column otherwise."""
        try:
            url = normalise_url(value)
        except InputError as exc:
            raise InputError(f"{self.where(column)}: {exc}") from None
        self.file_name(url, column, value)
        return url

    def file_name(self, url: str, column: str, value: str) -> str:
        """The local name of the file at ``url`` (from ``value`` of ``column``); InputError when
        :func:`~pipeline.model.file_name_problem` refuses it."""
        name = url_basename(url)
        problem = file_name_problem(name)
        if problem:
            raise InputError(f"{self.where(column)}: the file name {excerpt(name)} of {excerpt(value)} {problem}")
        return name


def _sra_candidates(run: str, urls: Iterable[str]) -> list[str]:
    out: list[str] = []
    for u in list(urls) + [ODP_URL.format(run=run)]:
        if u and u not in out:
            out.append(u)
    return out


MD5_RE = re.compile(r"[0-9a-fA-F]{32}")


def _md5_of(row: _Row, raw: Optional[str], column: str):
    """A checksum from the table, or None; a malformed one is an error before any download."""
    value = _clean(raw)
    if not value:
        return None
    if not MD5_RE.fullmatch(value):
        raise InputError(
            f"{row.where(column)}: malformed md5 {excerpt(value)} for run {row.run} (expected 32 hexadecimal digits)"
        )
    return value.lower()


def _parse_ena(row: _Row) -> Run:
    run = row.run
    ftp = _split_list(row.get("fastq_ftp"))
    n = len(ftp)
    lists = {}
    for column in ("fastq_md5", "fastq_bytes"):
        values = _split_list(row.get(column))
        if values and len(values) != n:
            raise InputError(
                f"{row.where(column)}: lists {len(values)} value(s) but fastq_ftp lists {n} file(s) for run {run}"
            )
        lists[column] = values or [""] * n
    files = []
    if n:
        if any(not u for u in ftp):
            raise InputError(f"{row.where('fastq_ftp')}: empty entry in {excerpt(row.get('fastq_ftp'))}")
        urls = [row.url(u, "fastq_ftp") for u in ftp]
        chosen = pick_mates(urls)
        if not chosen:
            log.warning(
                "%s: cannot tell the mates apart among %s; run %s will use its .sra file",
                row.where("fastq_ftp"),
                ", ".join(url_basename(u) for u in urls),
                run,
            )
        for i in chosen:
            name = row.file_name(urls[i], "fastq_ftp", ftp[i])
            files.append(
                RemoteFile(
                    url=urls[i],
                    name=name,
                    md5=_md5_of(row, lists["fastq_md5"][i], "fastq_md5"),
                    bytes=row.to_int(_clean(lists["fastq_bytes"][i]), "fastq_bytes"),
                )
            )
    sra_urls, sra_md5, sra_bytes = [], None, None
    sra_ftp = [u for u in _split_list(row.get("sra_ftp")) if u]
    if sra_ftp:
        sra_urls.append(row.url(sra_ftp[0], "sra_ftp"))
        md5s = _split_list(row.get("sra_md5"))
        sizes = _split_list(row.get("sra_bytes"))
        sra_md5 = _md5_of(row, md5s[0], "sra_md5") if md5s else None
        sra_bytes = row.to_int(_clean(sizes[0]), "sra_bytes") if sizes else None
    return Run(
        run=run,
        layout=_layout(row.get("library_layout")),
        read_count=row.int_of("read_count"),
        base_count=row.int_of("base_count"),
        files=files,
        sra_urls=_sra_candidates(run, sra_urls),
        sra_md5=sra_md5,
        sra_bytes=sra_bytes,
    )


def _local_file(row: _Row, column: str, value: str) -> tuple[str, Optional[Path]]:
    """(URL, local path to check or None) for an integrate ``read*_path`` cell."""
    if SCHEME_RE.match(value):
        url = row.url(value, column)
        if url.startswith("file://"):
            return url, Path(url2pathname(urlsplit(url).path))
        return url, None
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = row.path.parent / p
    p = Path(os.path.abspath(p))
    return p.as_uri(), p


def _parse_integrate(row: _Row) -> tuple[Run, list[tuple[str, Path]]]:
    run = row.run
    files: list[RemoteFile] = []
    to_check: list[tuple[str, Path]] = []
    for column in ("read1_path", "read2_path"):
        value = row.get(column)
        if value is None or value.lower() == "unavailable":  # amalgkit writes 'unavailable'
            if column == "read1_path":
                raise InputError(f"{row.where(column)}: no read1_path for run {run}")
            continue
        url, local = _local_file(row, column, value)
        name = row.file_name(url, column, value)
        if files and files[0].name == name:
            raise InputError(f"{row.where(column)}: read1_path and read2_path have the same file name {excerpt(name)}")
        files.append(RemoteFile(url=url, name=name))
        if local is not None:
            to_check.append((column, local))
    r = Run(
        run=run,
        layout=PAIRED if len(files) == 2 else SINGLE,
        read_count=row.int_of("read_count", "total_spots"),
        base_count=row.int_of("base_count", "total_bases"),
        files=files,
    )
    return r, to_check


def _parse_amalgkit(row: _Row) -> Run:
    links = [row.url(v, c) for c in ("AWS_Link", "NCBI_Link") if (v := row.get(c))]
    return Run(
        run=row.run,
        layout=_layout(row.get("lib_layout")),
        read_count=row.int_of("total_spots"),
        base_count=row.int_of("total_bases"),
        sra_urls=_sra_candidates(row.run, links),
    )


def _parse_runinfo(row: _Row) -> Run:
    link = row.get("download_path")
    return Run(
        run=row.run,
        layout=_layout(row.get("LibraryLayout")),
        read_count=row.int_of("spots"),
        base_count=row.int_of("bases"),
        sra_urls=_sra_candidates(row.run, [row.url(link, "download_path")] if link else []),
    )


_RUN_COLUMN = {"ena": "run_accession", "integrate": "run", "amalgkit": "run", "runinfo": "Run"}


def _no_files(parse: Callable[[_Row], Run]) -> Callable[[_Row], tuple[Run, list[tuple[str, Path]]]]:
    return lambda row: (parse(row), [])


#: format -> the parser of one row: ``(Run, [(column, local file to check), ...])``
PARSERS: dict[str, Callable[[_Row], tuple[Run, list[tuple[str, Path]]]]] = {
    "ena": _no_files(_parse_ena),
    "integrate": _parse_integrate,
    "amalgkit": _no_files(_parse_amalgkit),
    "runinfo": _no_files(_parse_runinfo),
}


def _amalgkit_flags(row: _Row) -> Optional[str]:
    """Reason a row of an amalgkit-style table is not sampled, or None."""
    if "is_sampled" in row.values:
        v = row.get("is_sampled")
        if (v or "").lower() != "yes":
            return f"is_sampled={v if v is not None else '(blank)'}"
    if "exclusion" in row.values:
        v = row.get("exclusion")
        if (v or "").lower() != "no":
            return f"exclusion={v if v is not None else '(blank)'}"
    return None
