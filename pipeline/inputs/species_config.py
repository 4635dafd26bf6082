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

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..fetch.segments import DEFAULT_CONNECTIONS, MAX_CONNECTIONS, MIN_SEGMENT, MIN_SEGMENT_FLOOR
from ..model import BATCH_MODES, SOURCES, InputError, excerpt, species_problem
from ..plan.sizes import parse_size
from ..quant.quantifier import STRAND_SAMPLE, TOOLS
from ..quant.strand import STRANDEDNESS
from . import bounded_yaml, selection
from .checks import (
    URL_RE,
    _bool,
    _int_min,
    _int_range,
    _mirrors,
    _one_of,
    _path,
    _positive_number,
    _query,
    _size,
    _sources,
)


class ConfigError(InputError):
    pass


#: ``download.mode``: ``file`` fetches reads to disk before kallisto, ``stream`` feeds them to it
DOWNLOAD_MODES = ("file", "stream")
#: ``download.stream_fallback``: what a streamed run that failed does next
STREAM_FALLBACKS = ("file", "fail")

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
        "connections": (False, DEFAULT_CONNECTIONS, _int_range(1, MAX_CONNECTIONS)),
        "min_segment": (False, MIN_SEGMENT, _size(MIN_SEGMENT_FLOOR)),
        "mirrors": (False, {}, _mirrors),
        "sources": (False, list(SOURCES), _sources),
        "stall_seconds": (False, None, _positive_number),
        "max_bp": (False, None, _int_min(1)),
        "mode": (False, DOWNLOAD_MODES[0], _one_of(*DOWNLOAD_MODES)),  # stream: reads never touch the disk
        "stream_fallback": (False, STREAM_FALLBACKS[0], _one_of(*STREAM_FALLBACKS)),
    },
    "quant": {
        "threads": (False, 1, _int_min(1)),
        "fragment_length": (False, 200, _positive_number),
        "fragment_sd": (False, 20, _positive_number),
        "tool": (False, TOOLS[0], _one_of(*TOOLS)),  # the quantifier: kallisto or salmon
        "strandedness": (False, STRANDEDNESS[0], _one_of(*STRANDEDNESS)),  # auto: found per run
        "strand_sample": (False, STRAND_SAMPLE, _int_min(1)),  # spots read to find it and the qualities
        "batch_mode": (False, BATCH_MODES[0], _one_of(*BATCH_MODES)),  # auto: one index load per batch
    },
    "merge": {
        "h5ad": (False, True, _bool),  # the merged tables' columnar copy, merged/SPECIES.h5ad
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
    download_connections: int = DEFAULT_CONNECTIONS  # HTTP connections per large file
    min_segment: int = MIN_SEGMENT  # bytes; a file is cut into segments no smaller
    mirrors: dict = field(default_factory=dict)
    sources: list = field(default_factory=lambda: list(SOURCES))
    stall_seconds: Optional[float] = None  # overrides [pipeline] stall_seconds
    max_bp: Optional[int] = None
    download_mode: str = DOWNLOAD_MODES[0]  # download.mode
    stream_fallback: str = STREAM_FALLBACKS[0]  # download.stream_fallback
    threads: int = 1
    fragment_length: float = 200
    fragment_sd: float = 20
    quant_tool: str = TOOLS[0]
    strandedness: str = STRANDEDNESS[0]
    strand_sample: int = STRAND_SAMPLE
    batch_mode: str = "auto"  # quant.batch_mode: auto (one index load per batch) or per_run
    h5ad: bool = True  # merge.h5ad: write merged/SPECIES.h5ad beside the TSVs

    tx2gene: Optional[str] = None  # reference.tx2gene, an absolute path (else genes come from the headers)

    @property
    def quant_options(self) -> dict:
        """``quant.threads``, ``quant.fragment_length`` and ``quant.fragment_sd``, as keywords."""
        return {"threads": self.threads, "fragment_length": self.fragment_length, "fragment_sd": self.fragment_sd}

    @property
    def streams(self) -> bool:
        """``download.mode: stream``: runs that can be are streamed into kallisto."""
        return self.download_mode == DOWNLOAD_MODES[1]

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
    if v["download"].get("mode") == DOWNLOAD_MODES[1] and (
        v["quant"].get("tool") != TOOLS[0] or v["quant"].get("strandedness") == STRANDEDNESS[0]
    ):
        errors.append(
            f"{where}: key 'download.mode' is stream, which feeds kallisto as the reads arrive: it needs "
            "quant.tool kallisto and quant.strandedness fr, rf or unstranded (auto samples the reads "
            "from files on disk)"
        )
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
        download_connections=v["download"]["connections"],
        min_segment=parse_size(v["download"]["min_segment"]),
        mirrors=dict(v["download"]["mirrors"]),
        sources=list(v["download"]["sources"]),
        stall_seconds=v["download"]["stall_seconds"],
        max_bp=v["download"]["max_bp"],
        download_mode=v["download"]["mode"],
        stream_fallback=v["download"]["stream_fallback"],
        threads=v["quant"]["threads"],
        fragment_length=v["quant"]["fragment_length"],
        fragment_sd=v["quant"]["fragment_sd"],
        quant_tool=v["quant"]["tool"],
        strandedness=v["quant"]["strandedness"],
        strand_sample=v["quant"]["strand_sample"],
        batch_mode=v["quant"]["batch_mode"],
        h5ad=v["merge"]["h5ad"],
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
