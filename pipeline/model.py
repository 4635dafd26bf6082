"""The records every room of the pipeline shares: runs, the files they come from, per-run results,
the tools to call, and the name checks that guard them.

Runs travel between tasks as JSON (the batch files, the task markers), so every record converts to
and from a plain dict. Each name rule (accession, species, source) is defined here once.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

PAIRED = "PAIRED"
SINGLE = "SINGLE"
#: Where a run's reads may come from, in the default order of ``download.sources``.
SOURCES = ("ena", "sra")

#: Characters of a bad value quoted in a message.
EXCERPT = 80

_ACCESSION_RE = re.compile(r"[SED]RR[0-9]+")
_SPECIES_RE = re.compile(r"[A-Za-z0-9_.-]+")
SPECIES_RULE = "[A-Za-z0-9_.-]+"


class ExpectedFailure(Exception):
    """A failure the pipeline foresees: bad input, an unreachable host, a full disk, runs that failed.

    Its message says what happened in terms of the user's files, hosts and runs, so it is shown as
    it is, without a traceback. ``reported`` marks one that was already shown in full.
    """

    reported = False


class InputError(ExpectedFailure, ValueError):
    """Bad user input (config or metadata). The message names the file, key, run or value."""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = EXCERPT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2


def excerpt(value: Any) -> str:
    """A bounded ``repr`` of ``value`` (escaped, at most a few levels and items): what a message
    quotes of a bad value, in bounded time whatever the value holds."""
    return _REPR.repr(value)


def is_accession(value: Any) -> bool:
    return isinstance(value, str) and _ACCESSION_RE.fullmatch(value) is not None


def check_accession(value: Any, where: str = "") -> str:
    """Return ``value`` if it is a run accession (SRR/ERR/DRR + digits), else raise InputError."""
    if not is_accession(value):
        suffix = f" in {where}" if where else ""
        raise InputError(f"invalid run accession {excerpt(value)}{suffix}: expected ^[SED]RR[0-9]+$")
    return value


def species_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot name a species' output folder, or None when it can."""
    if not isinstance(value, str) or _SPECIES_RE.fullmatch(value) is None or value in (".", ".."):
        return f"must match {SPECIES_RULE} (it names output folders), got {excerpt(value)}"
    return None


def check_species(value: Any) -> str:
    problem = species_problem(value)
    if problem:
        raise InputError(f"invalid species name: {problem}")
    return value


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
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        return cls(**d)


@dataclass(frozen=True)
class Tools:
    """The external programs, as the settings name them; domain code takes this as an argument."""

    kallisto: str = "kallisto"
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


@dataclass
class RunDownload(_Result):
    """What the download step got for one run (a row of a ``download_NNNNN`` marker).

    ``status`` is ``ok``, ``failed``, or ``quantified`` (skipped: its results already exist).
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
