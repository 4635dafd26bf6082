"""Species configuration: one YAML file per species, validated strictly before any work starts.

Every key is declared in ``SCHEMA``; an unknown key (a typo such as ``sise``), a wrong type or
an out-of-range value is an error that names the file and the key, and quotes a bounded, escaped
excerpt of the value (:func:`~pipeline.model.excerpt`).

Hostile files are refused in bounded time and memory: :mod:`pipeline.inputs.bounded_yaml` reads
the YAML within fixed limits (size, depth, no merge keys), and aliases, which it allows, are never
expanded: an alias is the same object as its anchor, and no check looks deeper than one level of
list or mapping inside a value, so a "billion laughs" is rejected by the first check of its key.
Strings are checked whole: a control character (a trailing newline too) fails every name, path,
size, URL and source check.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..model import BATCH_MODES, SOURCES, InputError, excerpt, has_control, species_problem
from ..plan.sizes import parse_size
from . import bounded_yaml, selection
from .urls import url_problem

URL_RE = re.compile(r"^(https?|ftp|file)://", re.IGNORECASE)
#: A ``download.mirrors`` prefix, matched whole: a scheme, then no blank or control character.
_PREFIX_RE = re.compile(r"(?:https?|ftp|file)://[^\s\x00-\x1f\x7f-\x9f]*", re.IGNORECASE)
#: Longest path or URL accepted (Linux's PATH_MAX).
MAX_PATH = 4096


class ConfigError(InputError):
    pass


def _int_min(lo):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {excerpt(v)}"
        if v < lo:
            return f"must be >= {lo}, got {excerpt(v)}"

    return check


def _one_of(choices):
    def check(v):
        if not isinstance(v, str) or v not in choices:
            return f"must be one of {', '.join(choices)}, got {excerpt(v)}"

    return check


def _positive_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"must be a number, got {excerpt(v)}"
    if (isinstance(v, float) and not math.isfinite(v)) or v <= 0:
        return f"must be a finite number > 0, got {excerpt(v)}"


def _path(v):
    """A local path or a URL (``reference.transcriptome``, ``metadata.file``)."""
    if not isinstance(v, str) or not v.strip() or has_control(v) or len(v) > MAX_PATH:
        return f"must be a non-empty path without control characters (at most {MAX_PATH}), got {excerpt(v)}"
    problem = url_problem(v) if URL_RE.match(v) else None
    if problem:
        return f"URL {excerpt(v)} {problem}"


def _query(v):
    """Free text: blanks and line breaks are fine, other control characters are not."""
    if not isinstance(v, str) or not v.strip() or has_control(v.translate({9: 32, 10: 32, 13: 32})):
        return f"must be a non-empty string without control characters, got {excerpt(v)}"


def _mirrors(v):
    if not isinstance(v, dict):
        return f"must be a mapping of URL prefix to URL prefix, got {type(v).__name__}"
    for k, w in v.items():
        if not (isinstance(k, str) and _PREFIX_RE.fullmatch(k) and isinstance(w, str) and _PREFIX_RE.fullmatch(w)):
            return (
                "entries must map a URL prefix to a URL prefix (scheme://..., no blanks or control "
                f"characters), got {excerpt(k)}: {excerpt(w)}"
            )
        problem = url_problem(k) or url_problem(w)
        if problem:
            return f"entry {excerpt(k)}: {excerpt(w)}: a prefix {problem}"


def _size(lo):
    def check(v):
        wrong = f"must be a size such as 40G, 500M or a number of bytes, got {excerpt(v)}"
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and has_control(v)):
            return wrong
        try:
            n = parse_size(v)
        except ValueError:
            return wrong
        if n < lo:
            return f"must be at least {lo} byte(s), got {excerpt(v)}"

    return check


def _sources(v):
    if (
        not isinstance(v, list)
        or not v
        or not all(isinstance(x, str) and x in SOURCES for x in v)
        or len(set(v)) != len(v)
    ):
        return f"must be a non-empty list drawn from [{', '.join(SOURCES)}] without repeats, got {excerpt(v)}"


# section -> key -> (required, default, checker)
SCHEMA: dict[str, Any] = {
    "species": (True, None, species_problem),
    "reference": {
        "transcriptome": (True, None, _path),
        "tx2gene": (False, None, _path),  # a GTF, GFF3 or transcript<TAB>gene table
    },
    "metadata": {
        "file": (False, None, _path),  # exactly one of file and query
        "query": (False, None, _query),
        "library_strategy": (False, None, selection.CHECKS["library_strategy"]),
        "library_source": (False, None, selection.CHECKS["library_source"]),
        "layout": (False, None, selection.CHECKS["layout"]),
        "max_runs": (False, None, selection.CHECKS["max_runs"]),
        "exclude_runs": (False, [], selection.CHECKS["exclude_runs"]),
    },
    "batch": {
        "size": (False, 8, _int_min(1)),
        "prefetch": (False, 1, _int_min(0)),
        "max_bytes": (False, None, _size(1)),
    },
    "disk": {
        "min_free": (False, "1G", _size(0)),
        "wait_seconds": (False, 600, _positive_number),
    },
    "download": {
        "parallel": (False, 4, _int_min(1)),
        "mirrors": (False, {}, _mirrors),
        "sources": (False, list(SOURCES), _sources),
        "stall_seconds": (False, None, _positive_number),
        "max_bp": (False, None, _int_min(1)),
    },
    "quant": {
        "threads": (False, 1, _int_min(1)),
        "fragment_length": (False, 200, _positive_number),
        "fragment_sd": (False, 20, _positive_number),
        "batch_mode": (False, "auto", _one_of(BATCH_MODES)),
    },
}


@dataclass
class SpeciesConfig:
    path: Path  # the YAML file
    species: str
    transcriptome: str  # an absolute local path or a URL
    metadata_file: Optional[Path]  # a local table, or None when metadata comes from an ENA query
    metadata_query: Optional[str] = None
    selection: dict = field(default_factory=dict)
    batch_size: int = 8
    prefetch: int = 1  # batches that may download while an earlier one is quantified
    max_bytes: Optional[int] = None  # byte budget of one batch's reads
    min_free: int = 1 << 30  # free space to leave on the output's file system
    disk_wait_seconds: float = 600
    download_parallel: int = 4
    mirrors: dict = field(default_factory=dict)
    sources: list = field(default_factory=lambda: list(SOURCES))
    stall_seconds: Optional[float] = None  # overrides [pipeline] stall_seconds
    max_bp: Optional[int] = None
    threads: int = 1
    fragment_length: float = 200
    fragment_sd: float = 20
    batch_mode: str = "auto"  # quant.batch_mode: auto (one index load per batch) or per_run

    tx2gene: Optional[str] = None  # reference.tx2gene, an absolute path (else genes come from the headers)

    @property
    def transcriptome_is_url(self) -> bool:
        return bool(URL_RE.match(self.transcriptome))


def _file_problem(p: Path) -> Optional[str]:
    """Why ``p`` is not a regular file we can read, or None."""
    try:
        if p.is_file():
            return None
        return "not a regular file" if p.exists() else "file not found"
    except OSError as e:
        return f"cannot be looked at ({e.strerror})"


def _validate(doc: Any, schema: dict, where: str, errors: list, prefix: str = "") -> dict:
    out = {}
    if not isinstance(doc, dict):
        errors.append(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {type(doc).__name__}")
        doc, errors = {}, []  # fill in defaults below, reporting the shape once rather than each key
    for key in doc:
        if key not in schema:
            known = ", ".join(sorted(schema))
            shown = excerpt(f"{prefix}{key}") if isinstance(key, str) else f"{excerpt(key)} in '{prefix[:-1]}'"
            errors.append(f"{where}: unknown key {shown} (known here: {known})")
    for key, spec in schema.items():
        if isinstance(spec, dict):
            sub = doc.get(key, {})
            if sub is None:
                sub = {}
            out[key] = _validate(sub, spec, where, errors, f"{prefix}{key}.")
            continue
        required, default, check = spec
        if key not in doc or doc[key] is None:
            if required:
                errors.append(f"{where}: missing required key '{prefix}{key}'")
            out[key] = default
            continue
        problem = check(doc[key])
        if problem:
            if not problem.startswith("must"):
                problem = "is invalid: " + problem
            errors.append(f"{where}: key '{prefix}{key}' {problem}")
        out[key] = doc[key]
    return out


def load_species_config(path) -> SpeciesConfig:
    """Read and validate one species YAML. Raise ConfigError listing every problem found."""
    path = Path(path).resolve()
    where = str(path)
    try:
        doc = bounded_yaml.read_yaml(path, [k for k, spec in SCHEMA.items() if isinstance(spec, dict)])
    except bounded_yaml.YamlError as e:
        raise ConfigError(str(e)) from None
    if doc is None:
        raise ConfigError(
            f"{where}: the file is empty (a species config needs at least 'species', "
            "'reference.transcriptome' and 'metadata')"
        )
    errors: list[str] = []
    v = _validate(doc, SCHEMA, where, errors)
    if not isinstance(doc, dict):
        raise ConfigError("\n".join(errors))

    # file checks run even when keys are wrong, so one message lists every problem
    base = path.parent
    transcriptome = v["reference"]["transcriptome"]
    if transcriptome is None or _path(transcriptome):
        pass  # already reported
    elif not URL_RE.match(transcriptome):
        tpath = (base / transcriptome).resolve()
        problem = _file_problem(tpath)
        if problem:
            errors.append(f"{where}: key 'reference.transcriptome': {problem}: {tpath}")
        elif not re.search(r"\.(fa|fasta|fna)(\.gz)?$", tpath.name):
            errors.append(f"{where}: key 'reference.transcriptome': expected a .fa or .fa.gz file, got {tpath.name}")
        transcriptome = str(tpath)
    tx2gene_file = None
    if v["reference"]["tx2gene"] is not None and not _path(v["reference"]["tx2gene"]):
        tx2gene_file = (base / v["reference"]["tx2gene"]).resolve()
        problem = _file_problem(tx2gene_file)
        if problem:
            errors.append(f"{where}: key 'reference.tx2gene': {problem}: {tx2gene_file}")
    mfile = None
    if v["metadata"]["file"] is not None and _path(v["metadata"]["file"]):
        pass  # already reported
    elif (v["metadata"]["file"] is None) == (v["metadata"]["query"] is None):
        errors.append(
            f"{where}: give exactly one of 'metadata.file' (a local table) and 'metadata.query' (an ENA portal search)"
        )
    elif v["metadata"]["file"] is not None:
        mfile = (base / v["metadata"]["file"]).resolve()
        problem = _file_problem(mfile)
        if problem:
            errors.append(f"{where}: key 'metadata.file': {problem}: {mfile}")
    if errors:
        raise ConfigError("\n".join(errors))

    chosen = selection.check_selection({k: v["metadata"][k] for k in selection.SELECTION_KEYS})
    return SpeciesConfig(
        path=path,
        species=v["species"],
        transcriptome=transcriptome,
        tx2gene=None if tx2gene_file is None else str(tx2gene_file),
        metadata_file=mfile,
        metadata_query=v["metadata"]["query"],
        selection=chosen,
        batch_size=v["batch"]["size"],
        prefetch=v["batch"]["prefetch"],
        max_bytes=None if v["batch"]["max_bytes"] is None else parse_size(v["batch"]["max_bytes"]),
        min_free=parse_size(v["disk"]["min_free"]),
        disk_wait_seconds=v["disk"]["wait_seconds"],
        download_parallel=v["download"]["parallel"],
        mirrors=dict(v["download"]["mirrors"]),
        sources=list(v["download"]["sources"]),
        stall_seconds=v["download"]["stall_seconds"],
        max_bp=v["download"]["max_bp"],
        threads=v["quant"]["threads"],
        fragment_length=v["quant"]["fragment_length"],
        fragment_sd=v["quant"]["fragment_sd"],
        batch_mode=v["quant"]["batch_mode"],
    )


def find_species_configs(config_dir) -> list[Path]:
    d = Path(config_dir)
    if not d.is_dir():
        raise ConfigError(f"config directory not found: {d.resolve()}")
    paths = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not paths:
        raise ConfigError(f"no species configs (*.yaml) in {d.resolve()}")
    return paths


def load_all(config_dir, caps: Optional[dict[str, int]] = None) -> list[SpeciesConfig]:
    """Validate every species config in ``config_dir``; raise one ConfigError listing all problems.

    ``caps`` are the scheduler's resources (``[resources] cpu`` and ``download``): a species whose
    tasks need more than a cap could never be scheduled, and Luigi would skip them silently, so it
    is an error here.
    """
    errors: list[str] = []
    configs: list[SpeciesConfig] = []
    seen: dict[str, Path] = {}
    for p in find_species_configs(config_dir):
        try:
            c = load_species_config(p)
        except ConfigError as e:
            errors.append(str(e))
            continue
        if c.species in seen:
            errors.append(f"{p.resolve()}: species '{c.species}' is also configured in {seen[c.species]}")
            continue
        seen[c.species] = p.resolve()
        short = _short_of_caps(c, caps or {})
        if short:
            errors.extend(short)
            continue
        configs.append(c)
    if errors:
        raise ConfigError("\n".join(errors))
    return configs


def _short_of_caps(c: SpeciesConfig, caps: dict[str, int]) -> list[str]:
    """What species ``c`` needs of the scheduler's resources beyond ``caps``, said per setting."""
    out = []
    if "cpu" in caps and c.threads > caps["cpu"]:
        out.append(
            f"{c.path}: species {c.species}: key 'quant.threads' is {c.threads} but [resources] cpu allows "
            f"{caps['cpu']}: lower quant.threads or raise [resources] cpu (in luigi.cfg)"
        )
    if "download" in caps and caps["download"] < 1:
        out.append(
            f"{c.path}: species {c.species}: [resources] download is {caps['download']}, so no batch could "
            "ever download: set it to 1 or more (in luigi.cfg)"
        )
    return out
