"""A MultiQC configuration for an output folder, so that a report over it shows the finished runs
under their accessions and nothing else.

MultiQC's kallisto module reads kallisto's log (``quant/RUN/kallisto.log``) and names the sample
after the first FASTQ there (``[quant] will process pair 1: ../../fastq/RUN/RUN_1.fastq.gz``, or
``RUN_1.fastq``: the FIFO that stands for it when the pipeline feeds kallisto), its basename with
``.gz`` and ``.fastq`` cut. The pipeline stages every run's files under names
made from the accession (:func:`pipeline.fetch.sources.staged_names`), so only the mate suffix
``_1`` is left to remove, which :data:`MATE_SUFFIX` does (for the kallisto module alone).

The module takes any file holding kallisto's quant output, and a failed run's log
(``work/logs/RUN.log``) ends with its copy of kallisto's log: each would count as a sample,
under the same name as the run's retried, finished output. So the search is kept to finished runs:
kallisto's reports must be named ``kallisto.log`` (the runs' own logs are ``RUN.log``); the
temporary folders of runs being (or left half) quantified (``quant/.RUN.tmp``) and of any other
step (``.NAME.tmp``) are skipped, and so are the folders of the species' bookkeeping
(``work/logs``, ``work/metadata``, ``work/markers``) and of reads in flight (``fastq/RUN``).

MultiQC 1.35 (read from its source) reads a ``multiqc_config.yaml`` from its *working* folder, not
from the folders it searches, so the report is made with one of::

    multiqc OUTPUT_DIR -c OUTPUT_DIR/multiqc_config.yaml -o OUTPUT_DIR/multiqc
    cd OUTPUT_DIR && multiqc . -o multiqc

Its ``fn_ignore_dirs`` and ``fn_ignore_paths`` replace MultiQC's own lists rather than extend them,
so MultiQC's defaults (1.35) are written out first. The ignore patterns name at least two levels
(``work/logs``, not ``work``): MultiQC matches them against the right-hand end of every folder's
path, the folder it was asked to search included, and an output folder may well be called ``work``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import yaml

from ..files import staged_file

CONFIG_NAME = "multiqc_config.yaml"

#: ``SRR1_1.fastq.gz`` -> ``SRR1.fastq.gz`` (MultiQC's own cleaning then cuts ``.gz`` and ``.fastq``).
MATE_SUFFIX = {"type": "regex", "pattern": r"_[12](?=\.fastq(?:\.gz)?$)", "module": "kallisto"}

#: MultiQC 1.35's defaults (``config_defaults.yaml``), which a list in the config replaces.
MULTIQC_IGNORE_DIRS = ["multiqc_data", ".git", "icarus_viewers", "runs_per_reference", "not_aligned", "contigs_reports"]
MULTIQC_IGNORE_PATHS = [
    "*/work/??/??????????????????????????????",
    "*/.snakemake",
    "*/.singularity",
    "*/__pycache__",
    "*/site-packages/multiqc",
]

#: Folder names never holding a finished run's output: every temporary folder of the pipeline
#: (:func:`pipeline.files.temp_path`), among them ``quant/.RUN.tmp`` of a run not yet quantified.
IGNORE_DIRS = [".*.tmp"]
#: A species' bookkeeping (a failed run's log holds the end of kallisto's log) and reads in flight.
IGNORE_PATHS = ["work/logs", "work/metadata", "work/markers", "fastq/[SED]RR[0-9]*"]


def config() -> dict:
    """The settings :func:`write_config` writes."""
    return {
        "extra_fn_clean_exts": [dict(MATE_SUFFIX)],
        # merged into MultiQC's own kallisto pattern (its "contents" stay): only kallisto.log files
        "sp": {"kallisto": {"fn": "kallisto.log"}},
        "fn_ignore_dirs": MULTIQC_IGNORE_DIRS + IGNORE_DIRS,
        "fn_ignore_paths": MULTIQC_IGNORE_PATHS + IGNORE_PATHS,
    }


def config_text() -> str:
    header = (
        "# MultiQC settings for this output folder, written by rnaseq-batch-pipeline (pipeline/quant/multiqc.py):\n"
        "# samples named by run accession, only finished runs' kallisto logs. Use it with\n"
        f"#   multiqc THIS_FOLDER -c THIS_FOLDER/{CONFIG_NAME} -o THIS_FOLDER/multiqc\n"
        "# (MultiQC reads multiqc_config.yaml from the folder it runs in, not from the folders it searches).\n"
    )
    return header + yaml.safe_dump(config(), sort_keys=False, default_flow_style=False)


def write_config(output_dir) -> Path:
    """Write ``{output_dir}/multiqc_config.yaml`` (atomically; left as it is when it already holds
    these settings, so a finished output is not touched again). Returns its path."""
    path = Path(output_dir) / CONFIG_NAME
    text = config_text()
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    # species finishing at once (in other processes or threads) write the same text under their own temp names
    with staged_file(path, "w", tag=f"{os.getpid()}.{threading.get_ident()}", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path
