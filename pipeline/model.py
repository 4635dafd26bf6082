"""The records every room of the pipeline shares: runs, the files they come from, per-run results,
the tools to call, and the name checks that guard them.

Runs travel between tasks as JSON (the batch files, the task markers), so every record converts to
and from a plain dict. Each name rule (accession, species, source, local file name) is defined here
once, and so is the rule every TSV the pipeline writes follows (:func:`tsv_text`). Every rule
matches the whole string: a trailing newline or any control character fails it.
"""

from __future__ import annotations

import csv
import io
import re
import reprlib
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Optional

PAIRED = "PAIRED"
SINGLE = "SINGLE"
#: Where a run's reads may come from, in the default order of ``download.sources``.
SOURCES = ("ena", "sra")
#: ``quant.batch_mode``: ``auto`` (and ``batch``, the same, kept for configs that name it) maps a
#: batch's paired runs after one index load; ``per_run`` runs kallisto quant for each.
BATCH_MODES = ("auto", "batch", "per_run")

#: Characters of a bad value quoted in a message.
EXCERPT = 80

#: Accession digits allowed (real ones have up to 9): a run names folders and files.
ACCESSION_DIGITS = 20
_ACCESSION_RE = re.compile(rf"[SED]RR[0-9]{{1,{ACCESSION_DIGITS}}}")
_SPECIES_RE = re.compile(r"[A-Za-z0-9_.-]+")
SPECIES_RULE = "[A-Za-z0-9_.-]+"
#: Longest species name: it names files such as ``.{species}_eff_length.tsv.{pid}.tmp`` (NAME_MAX 255).
SPECIES_MAX = 200

#: Control characters: C0 (tab, newline, carriage return among them), DEL, C1, and Unicode's line
#: and paragraph separators. No name, path, URL, number or checksum the pipeline reads may hold one.
CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control(value: str) -> bool:
    """True when ``value`` holds a control character (:data:`CONTROL_RE`)."""
    return CONTROL_RE.search(value) is not None


class ExpectedFailure(Exception):
    """A failure the pipeline foresees: bad input, an unreachable host, a full disk, runs that failed.

    Its message says what happened in terms of the user's files, hosts and runs, so it is shown as
    it is, without a traceback. ``reported`` marks one that was already shown in full.
    """

    reported = False


class InputError(ExpectedFailure, ValueError):
    """Bad user input (config or metadata). The message names the file, key, run or value."""


class _Excerpt(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        # str() of an int beyond 4,300 digits raises ValueError, and is slow long before that
        if x.bit_length() > 1024:
            return f"<{'negative ' if x < 0 else ''}integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _Excerpt()
_REPR.maxstring = _REPR.maxother = EXCERPT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxdeque = _REPR.maxarray = 4
_REPR.maxlevel = 2


def excerpt(value: Any) -> str:
    """A bounded ``repr`` of ``value`` (escaped, at most two levels and four items a level, 80
    characters of a string): what a message quotes of a bad value, in bounded time and size
    whatever the value holds (a YAML alias bomb is never walked beyond those items)."""
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose own repr fails must not turn a message into a crash
        return f"<{type(value).__name__}>"


def is_accession(value: Any) -> bool:
    return isinstance(value, str) and _ACCESSION_RE.fullmatch(value) is not None


def check_accession(value: Any, where: str = "") -> str:
    """Return ``value`` if it is a run accession (SRR/ERR/DRR + digits), else raise InputError."""
    if not is_accession(value):
        suffix = f" in {where}" if where else ""
        raise InputError(
            f"invalid run accession {excerpt(value)}{suffix}: expected ^[SED]RR[0-9]+$ "
            f"(at most {ACCESSION_DIGITS} digits)"
        )
    return value


#: names of the output folder's own subfolders, which no species may take
RESERVED_NAMES = frozenset({"merge", "multiqc", "luigid"})


def run_file_stems(run: str, n: int) -> list[str]:
    """The names of a run's ``n`` read files without their suffix: ``RUN_1`` and ``RUN_2`` for a
    pair (``RUN_N`` for the N-th of any other number), ``RUN`` for one file. The pipeline stages
    files under them, and MultiQC names a kallisto sample after them (less the mate suffix)."""
    return [run] if n == 1 else [f"{run}_{i}" for i in range(1, n + 1)]


def species_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot name a species' output folder, or None when it can."""
    if (
        not isinstance(value, str)
        or _SPECIES_RE.fullmatch(value) is None
        or value in (".", "..")
        or len(value) > SPECIES_MAX
    ):
        return f"must match {SPECIES_RULE} (it names output folders; at most {SPECIES_MAX}), got {excerpt(value)}"
    if value in RESERVED_NAMES:
        return f"must not be {value!r}: the output folder holds a folder of that name for every species"
    return None


def file_name_problem(name: Any) -> Optional[str]:
    """Why ``name`` cannot be the local name of a file of a run, or None when it can.

    A local name must be a non-empty string, not ``.`` or ``..``, with no ``/`` or ``\\`` and no
    control character: anything else could leave the run's folder, clobber another file or break
    a line of a log. (Names that pass but are unusual, with spaces or non-ASCII letters, are
    renamed when written: :func:`pipeline.fetch.transfer.safe_name`.)
    """
    if not isinstance(name, str) or not name:
        return "is empty"
    if name in (".", ".."):
        return "is a folder reference ('.' or '..')"
    if "/" in name or "\\" in name:
        return "holds a path separator ('/' or '\\')"
    if has_control(name):
        return "holds a control character"
    return None


def check_species(value: Any) -> str:
    problem = species_problem(value)
    if problem:
        raise InputError(f"invalid species name: {problem}")
    return value


#: What a cell of a written TSV shows for each character that would break its line or its fields.
_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_TSV_SPECIAL_RE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _tsv_escape(m: re.Match) -> str:
    c = m.group()
    return _TSV_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def tsv_cell(value: Any) -> str:
    """One cell of a TSV the pipeline writes: ``str(value)``, ``""`` for None, escaped by the rule
    of :func:`tsv_text`."""
    return _TSV_SPECIAL_RE.sub(_tsv_escape, "" if value is None else str(value))


def tsv_text(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """The text of a TSV the pipeline writes (``runs.tsv``, ``skipped.tsv``, ``failed_runs.tsv``).

    The one rule: every cell is ``str(value)`` (None is empty) in which a backslash is written
    ``\\\\``, a tab ``\\t``, a newline ``\\n``, a carriage return ``\\r`` and any other control
    character ``\\xNN`` (``\\uNNNN`` for U+2028/U+2029), so a cell never holds a tab or a line
    break and the escapes read back unambiguously. Cells are separated by one tab, rows end with
    ``\\n``; a cell holding ``"`` is quoted as ``csv`` writes it (``QUOTE_MINIMAL``), so that
    ``csv.reader(delimiter="\\t")`` and ``pandas.read_csv(sep="\\t")`` read back every cell as
    written here, one line per row, every row as many fields as the header.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow([tsv_cell(h) for h in header])
    writer.writerows([tsv_cell(v) for v in row] for row in rows)
    return buf.getvalue()


@dataclass
class RemoteFile:
    """One file to fetch: where from, what to call it locally, and how to verify it."""

    url: str  # absolute URL with scheme: http(s)://, ftp:// or file://
    name: str  # local file name, e.g. SRR123_1.fastq.gz (no directories)
    md5: Optional[str] = None
    bytes: Optional[int] = None

    @classmethod
    def from_dict(cls, d: dict) -> RemoteFile:
        return cls(url=d["url"], name=d["name"], md5=d.get("md5"), bytes=d.get("bytes"))


@dataclass
class Run:
    """One sequencing run as the pipeline needs it.

    ``files`` are the FASTQ files (1 = single-end, 2 = paired, mate 1 first). ``sra_urls`` are
    candidate URLs of the run's ``.sra`` file, in order of preference. ``layout`` is what the
    metadata says; the layout used for quantification is decided from the files obtained.
    """

    run: str
    layout: str = ""  # PAIRED, SINGLE or "" when unknown
    read_count: Optional[int] = None  # spots (pairs for paired runs)
    base_count: Optional[int] = None
    files: list = field(default_factory=list)  # list[RemoteFile]
    sra_urls: list = field(default_factory=list)  # list[str]
    sra_md5: Optional[str] = None
    sra_bytes: Optional[int] = None

    def __post_init__(self):
        check_accession(self.run)
        self.files = [f if isinstance(f, RemoteFile) else RemoteFile.from_dict(f) for f in self.files]

    @property
    def fastq_bytes(self) -> Optional[int]:
        """Total size of the listed FASTQ files, or None when any size is unknown."""
        if not self.files or any(f.bytes is None for f in self.files):
            return None
        return sum(f.bytes for f in self.files)

    def to_dict(self) -> dict:
        """The fields as plain JSON values (as ``dataclasses.asdict``, at a tenth of its cost,
        which counts when a 100,000-run plan is written)."""
        return vars(self) | {"files": [dict(vars(f)) for f in self.files], "sra_urls": list(self.sra_urls)}

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        return cls(**d)


def yes_no(flag: bool) -> str:
    """Booleans in the tables the pipeline writes: ``yes``/``no``, as amalgkit spells them."""
    return "yes" if flag else "no"


@dataclass(frozen=True)
class Tools:
    """The external programs, as the settings name them; domain code takes this as an argument."""

    kallisto: str = "kallisto"
    salmon: str = "salmon"
    fasterq_dump: str = "fasterq-dump"
    gzip_fastq: bool = True  # gzip fasterq-dump's output (level 1) before kallisto


class _Result:
    """A per-run result that is written into a task marker: ``to_dict`` leaves out unset extras."""

    _always: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is not None or f.name in self._always:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})


#: ``RunDownload.status`` of a run the quant step streams (``download.mode: stream``); also its source.
STREAMED = "stream"


@dataclass
class RunDownload(_Result):
    """What the download step got for one run (a row of a ``download_NNNNN`` marker).

    ``status`` is ``ok``, ``failed``, ``quantified`` (skipped: its results already exist) or
    :data:`STREAMED` (left to the quant step, which streams the reads into kallisto).
    """

    run: str
    status: str = "failed"
    source: str = ""
    files: list = field(default_factory=list)  # names in fastq/RUN/
    bytes: int = 0
    seconds: float = 0.0
    reason: str = ""
    expected_reads: Optional[int] = None  # what kallisto's n_processed must equal
    verified: Optional[bool] = None  # an md5 (or a read-through) vouches for the files
    capped_bases: Optional[int] = None  # download.max_bp kept this many bases

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class RunQuant(_Result):
    """What the quant step made of one run (a row of a ``quant_NNNNN`` marker).

    ``status`` is ``ok`` or ``failed``; ``stage`` says where a failed run failed.
    """

    run: str
    status: str = "failed"
    reason: str = ""
    stage: Optional[str] = None  # download or quant, for a failed run
    layout: Optional[str] = None
    n_processed: Optional[int] = None
    n_pseudoaligned: Optional[int] = None
    p_pseudoaligned: Optional[float] = None
    layout_note: Optional[str] = None
    seconds: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"
