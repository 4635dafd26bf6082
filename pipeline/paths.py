"""Every folder, file and marker name of one species below the output directory, in one place.

``{output_dir}/{species}/`` holds ``fastq/`` (reads in flight), ``quant/{run}/``, ``merged/``,
``genome/`` and ``work/{metadata,logs,markers}/``. Marker names are built and parsed here only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Optional

from .model import check_species

#: Markers of a whole species, and markers of one batch (``STAGE_NNNNN.json``).
SPLIT, INDEX, SPECIES = "split", "index", "species"
DOWNLOAD, QUANT, CLEANUP = "download", "quant", "cleanup"
BATCH_STAGES = (DOWNLOAD, QUANT, CLEANUP)
_BATCH_MARKER_RE = re.compile(r"(download|quant|cleanup)_([0-9]{5,})")
#: A safety stop for walks over numbered batch files (no species has this many batches).
MAX_BATCHES = 10_000_000


def batch_marker_name(stage: str, batch: int) -> str:
    if stage not in BATCH_STAGES:
        raise ValueError(f"unknown batch stage {stage!r}: expected one of {', '.join(BATCH_STAGES)}")
    return f"{stage}_{batch:05d}"


def parse_batch_marker(name: str) -> Optional[tuple[str, int]]:
    """``("quant", 7)`` for ``quant_00007`` (or ``quant_00007.json``); None for any other name."""
    m = _BATCH_MARKER_RE.fullmatch(name[:-5] if name.endswith(".json") else name)
    return (m.group(1), int(m.group(2))) if m else None


class SpeciesPaths:
    """Where everything of one species lives: ``SpeciesPaths(output_dir, species).quant`` etc."""

    def __init__(self, output_dir, species: str):
        check_species(species)
        self.output_dir = Path(output_dir).resolve()
        self.root = self.output_dir / species
        self.species = species

    fastq = property(lambda self: self.root / "fastq")
    quant = property(lambda self: self.root / "quant")
    merged = property(lambda self: self.root / "merged")
    genome = property(lambda self: self.root / "genome")
    work = property(lambda self: self.root / "work")
    metadata = property(lambda self: self.root / "work" / "metadata")
    logs = property(lambda self: self.root / "work" / "logs")
    markers = property(lambda self: self.root / "work" / "markers")
    #: the merged runs' columns, kept so that a later merge reads only new or changed runs
    merge_store = property(lambda self: self.root / "work" / "merge_store")

    # -- markers -------------------------------------------------------------------------------
    def marker(self, name: str) -> Path:
        """A species-wide marker: ``split``, ``index`` or ``species``."""
        return self.markers / f"{name}.json"

    def batch_marker(self, stage: str, batch: int) -> Path:
        return self.markers / f"{batch_marker_name(stage, batch)}.json"

    def batch_markers(self, stage: str) -> dict[int, Path]:
        """``{batch: path}`` of every existing marker of ``stage``."""
        out = {}
        for p in self.markers.glob(f"{stage}_*.json"):
            parsed = parse_batch_marker(p.name)
            if parsed and parsed[0] == stage:
                out[parsed[1]] = p
        return out

    def unfinished_batches(self, n: int, limit: Optional[int] = None) -> list[int]:
        """The first ``limit`` (all when None) of batches ``0..n-1`` without a cleanup marker,
        in order, from one listing of the markers folder."""
        done = set(self.batch_markers(CLEANUP))
        out = []
        for i in range(n):
            if i not in done:
                out.append(i)
                if limit is not None and len(out) >= limit:
                    break
        return out

    # -- the plan ------------------------------------------------------------------------------
    def batch_file(self, batch: int) -> Path:
        return self.metadata / "batches" / f"batch_{batch:05d}.json"

    def batch_files(self) -> Iterator[tuple[int, Path]]:
        """``(n, path)`` of the planned batch files, 0, 1, ... up to the first one missing."""
        for i in range(MAX_BATCHES):
            p = self.batch_file(i)
            if not p.exists():
                return
            yield i, p

    runs_table = property(lambda self: self.metadata / "runs.tsv")
    skipped_table = property(lambda self: self.metadata / "skipped.tsv")
    summary = property(lambda self: self.metadata / "summary.json")
    failed_runs = property(lambda self: self.metadata / "failed_runs.tsv")
    #: the saved answer of ``metadata.query``: planning reads it, refresh replaces it
    ena_search = property(lambda self: self.metadata / "ena_search.tsv")

    # -- per run -------------------------------------------------------------------------------
    def run_fastq(self, run: str) -> Path:
        """``fastq/RUN/``: a run's reads while its batch is in flight."""
        return self.fastq / run

    def run_quant(self, run: str) -> Path:
        return self.quant / run

    def run_log(self, run: str) -> Path:
        return self.logs / f"{run}.log"

    # -- logs and the index --------------------------------------------------------------------
    index_log = property(lambda self: self.logs / "index.log")
    disk_log = property(lambda self: self.logs / "disk.log")
    metadata_log = property(lambda self: self.logs / "metadata.log")
    index = property(lambda self: self.genome / "transcriptome.idx")
    #: salmon's index, a folder (``quant.tool: salmon``)
    salmon_index = property(lambda self: self.genome / "salmon_index")

    def quant_index(self, tool: str) -> Path:
        """The index ``quant.tool`` quantifies against: kallisto's file or salmon's folder."""
        return {"kallisto": self.index, "salmon": self.salmon_index}[tool]

    #: the transcript-to-gene map the gene tables were made with (from reference.tx2gene or the headers)
    tx2gene = property(lambda self: self.genome / "tx2gene.tsv")


def species_under(output_dir) -> list[str]:
    """Names of the species that have started under ``output_dir`` (they have a markers folder)."""
    root = Path(output_dir)
    return sorted(p.name for p in root.iterdir() if (p / "work" / "markers").is_dir())
