"""What produced a result: the versions of the tools as they report them, and the reference
(md5 of the transcriptome and of the index) every run was quantified against."""

from __future__ import annotations

import subprocess
from typing import Callable, Optional, Sequence

from .fetch import sra
from .fetch.transfer import md5_file
from .model import Tools
from .quant import kallisto


def _version(args: list[str], parse: Callable[[str], Optional[str]]) -> Optional[str]:
    """Run a tool's version command; its version as ``parse`` reads it, or None when it cannot run."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse(out.stdout + out.stderr)


def tool_versions(tools: Tools, sources: Sequence[str]) -> dict:
    """The versions of the tools a species uses, as they report them (None when unknown)."""
    out = {"kallisto": _version(kallisto.version_args(tools.kallisto), kallisto.parse_version)}
    if "sra" in sources:
        out["fasterq-dump"] = _version(sra.version_args(tools.fasterq_dump), sra.parse_version)
    return out


def reference_record(fasta, index, tools: Tools) -> dict:
    """What each run quantified against this index records: md5s of both files, kallisto's version."""
    return {
        "transcriptome_md5": md5_file(fasta),
        "index_md5": md5_file(index),
        "kallisto_version": _version(kallisto.version_args(tools.kallisto), kallisto.parse_version),
    }


def reference_groups(records: dict[str, dict]) -> dict[str, list[str]]:
    """``{index md5: [runs]}`` of the runs whose record names their index (older records do not)."""
    groups: dict[str, list[str]] = {}
    for run, rec in records.items():
        if rec.get("index_md5"):
            groups.setdefault(rec["index_md5"], []).append(run)
    return groups
