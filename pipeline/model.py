"""Plain data records shared by the domain modules: a run and the files it is fetched from.

Runs travel between tasks as JSON (the batch files under ``work/metadata/batches/``), so every
record converts to and from a plain dict.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Optional

ACCESSION_RE = re.compile(r"^[SED]RR[0-9]+$")
SPECIES_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

PAIRED = "PAIRED"
SINGLE = "SINGLE"


class InputError(ValueError):
    """Bad user input (config or metadata). The message names the file, key, run or value."""


def check_accession(value: str, where: str = "") -> str:
    """Return ``value`` if it is a run accession (SRR/ERR/DRR + digits), else raise InputError."""
    if not isinstance(value, str) or not ACCESSION_RE.match(value):
        suffix = f" in {where}" if where else ""
        raise InputError(f"invalid run accession {value!r}{suffix}: expected ^[SED]RR[0-9]+$")
    return value


@dataclass
class RemoteFile:
    """One file to fetch: where from, what to call it locally, and how to verify it."""

    url: str  # absolute URL with scheme: http(s)://, ftp:// or file://
    name: str  # local file name, e.g. SRR123_1.fastq.gz (no directories)
    md5: Optional[str] = None
    bytes: Optional[int] = None

    @classmethod
    def from_dict(cls, d: dict) -> "RemoteFile":
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
    def from_dict(cls, d: dict) -> "Run":
        return cls(**d)
