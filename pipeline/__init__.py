"""Batched download -> kallisto -> delete pipeline for public RNA-seq, on Luigi.

``luigi --module pipeline MultiSpecies --local-scheduler`` runs every species in ``config_dir``.
"""
from .tasks import (BatchCleanup, BatchDownload, BatchQuant, BuildIndex, MultiSpecies, Species,  # noqa: F401
                    SplitMetadata, pipeline)
from .kallisto import kallisto  # noqa: F401
from .sra import fasterq_dump  # noqa: F401
