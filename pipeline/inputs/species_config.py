"""Species configuration: one YAML file per species, validated strictly before any work starts.

Every key is declared in ``SCHEMA``; an unknown key (a typo such as ``sise``), a wrong type or
an out-of-range value is an error that names the file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..model import SOURCES, InputError, excerpt, species_problem
from ..plan.sizes import parse_size
from . import selection

URL_RE = re.compile(r"^(https?|ftp|file)://", re.IGNORECASE)


class ConfigError(InputError):
    pass


def _int_min(lo):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {excerpt(v)}"
        if v < lo:
            return f"must be >= {lo}, got {v}"

    return check


def _positive_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"must be a number, got {excerpt(v)}"
    if v <= 0:
        return f"must be > 0, got {v}"


def _string(v):
    if not isinstance(v, str) or not v.strip():
        return f"must be a non-empty string, got {excerpt(v)}"


def _mirrors(v):
    if not isinstance(v, dict):
        return f"must be a mapping of URL prefix to URL prefix, got {type(v).__name__}"
    for k, w in v.items():
        if not isinstance(k, str) or not isinstance(w, str) or not URL_RE.match(k) or not URL_RE.match(w):
            return f"entries must map a URL prefix to a URL prefix (scheme://...), got {excerpt(k)}: {excerpt(w)}"


def _size(lo):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return f"must be a size such as 40G, 500M or a number of bytes, got {excerpt(v)}"
        try:
            n = parse_size(v)
        except ValueError as e:
            return str(e)
        if n < lo:
            return f"must be at least {lo} byte(s), got {excerpt(v)}"

    return check


def _sources(v):
    if not isinstance(v, list) or not v or any(x not in SOURCES for x in v) or len(set(v)) != len(v):
        return f"must be a non-empty list drawn from [{', '.join(SOURCES)}] without repeats, got {excerpt(v)}"


# section -> key -> (required, default, checker)
SCHEMA: dict[str, Any] = {
    "species": (True, None, species_problem),
    "reference": {
        "transcriptome": (True, None, _string),
    },
    "metadata": {
        "file": (False, None, _string),  # exactly one of file and query
        "query": (False, None, _string),
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

    @property
    def transcriptome_is_url(self) -> bool:
        return bool(URL_RE.match(self.transcriptome))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _validate(doc: Any, schema: dict, where: str, errors: list, prefix: str = "") -> dict:
    out = {}
    if not isinstance(doc, dict):
        errors.append(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {type(doc).__name__}")
        doc, errors = {}, []  # fill in defaults below, reporting the shape once rather than each key
    for key in doc:
        if key not in schema:
            known = ", ".join(sorted(schema))
            errors.append(f"{where}: unknown key '{prefix}{key}' (known here: {known})")
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
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{where}: cannot read species config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start}): {e.reason}") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML{at}: {what}") from None
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
    if not isinstance(transcriptome, str) or not transcriptome.strip():
        pass  # already reported
    elif not URL_RE.match(transcriptome):
        tpath = (base / transcriptome).resolve()
        if tpath.exists() and not tpath.is_file():
            errors.append(f"{where}: key 'reference.transcriptome': not a regular file: {tpath}")
        elif not tpath.is_file():
            errors.append(f"{where}: key 'reference.transcriptome': file not found: {tpath}")
        elif not re.search(r"\.(fa|fasta|fna)(\.gz)?$", tpath.name):
            errors.append(f"{where}: key 'reference.transcriptome': expected a .fa or .fa.gz file, got {tpath.name}")
        transcriptome = str(tpath)
    mfile = None
    if not isinstance(v["metadata"]["file"] or "", str):
        pass  # already reported
    elif (v["metadata"]["file"] is None) == (v["metadata"]["query"] is None):
        errors.append(
            f"{where}: give exactly one of 'metadata.file' (a local table) and 'metadata.query' (an ENA portal search)"
        )
    elif v["metadata"]["file"] is not None:
        mfile = (base / v["metadata"]["file"]).resolve()
        if mfile.exists() and not mfile.is_file():
            errors.append(f"{where}: key 'metadata.file': not a regular file: {mfile}")
        elif not mfile.is_file():
            errors.append(f"{where}: key 'metadata.file': file not found: {mfile}")
    if errors:
        raise ConfigError("\n".join(errors))

    chosen = selection.check_selection({k: v["metadata"][k] for k in selection.SELECTION_KEYS})
    return SpeciesConfig(
        path=path,
        species=v["species"],
        transcriptome=transcriptome,
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
