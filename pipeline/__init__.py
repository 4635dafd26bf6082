"""Batched download -> kallisto -> delete pipeline for public RNA-seq, on Luigi.

``luigi --module pipeline MultiSpecies --local-scheduler`` runs every species in ``config_dir``.
"""

from .tasks import BatchCleanup, BatchDownload, BatchQuant, BuildIndex, MultiSpecies, Species, SplitMetadata

__all__ = ["BatchCleanup", "BatchDownload", "BatchQuant", "BuildIndex", "MultiSpecies", "Species", "SplitMetadata"]
