"""``{output_dir}/report.html``: one self-contained page on a pipeline run, finished or not.

    rnaseq-batch report OUTPUT_DIR [--config-dir DIR]      (or: python -m pipeline.report OUTPUT_DIR)

:func:`write_report` reads the markers, the plan, the merged tables and the disk samples
(:mod:`pipeline.report.data`), and writes the page (:mod:`pipeline.report.page`) under a
temporary name renamed into place. It never changes a result.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

from ..files import staged_file
from .data import collect
from .page import render

REPORT = "report.html"


def report_path(output_dir) -> Path:
    return Path(output_dir) / REPORT


def write_report(output_dir, config_dir=None, now: Optional[float] = None) -> Path:
    """Write ``{output_dir}/report.html`` and return its path.

    ``config_dir`` (the species YAMLs) gives ``batch.max_bytes`` and ``disk.min_free`` for the disk
    section; by default it is the ``--config-dir`` of the last run's heartbeat, when it names one."""
    root = Path(output_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"output directory not found: {output_dir}")
    text = render(collect(root, config_dir=config_dir, now=now))
    dest = report_path(root)
    # a tag of its own: two species finishing at once in two workers each write the page
    with staged_file(dest, "w", tag=f"{os.getpid()}.{threading.get_ident()}", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return dest
