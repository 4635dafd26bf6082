"""Where everything of one species lives below the output directory."""
from __future__ import annotations

from pathlib import Path

from .model import InputError, SPECIES_RE


class SpeciesLayout:
    """``{output_dir}/{species}/`` with fastq/, quant/, merged/, genome/, work/{metadata,logs,markers}/."""

    def __init__(self, output_dir, species: str):
        if not SPECIES_RE.match(species) or species in (".", ".."):
            raise InputError(f"invalid species name {species!r}: must match [A-Za-z0-9_.-]+")
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

    def batch_file(self, batch: int) -> Path:
        return self.metadata / "batches" / f"batch_{batch:05d}.json"

    def marker(self, name: str) -> Path:
        return self.markers / f"{name}.json"

    def run_log(self, run: str) -> Path:
        return self.logs / f"{run}.log"

    @property
    def ena_search(self) -> Path:
        """The saved answer of ``metadata.query``: planning reads it, refresh replaces it."""
        return self.metadata / "ena_search.tsv"

    @property
    def failed_runs(self) -> Path:
        return self.metadata / "failed_runs.tsv"

    @property
    def index(self) -> Path:
        return self.genome / "transcriptome.idx"
