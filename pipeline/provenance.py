"""What produced a result: the versions of the tools as they report them, and the reference
(md5 of the transcriptome and of the index) every run was quantified against."""

from __future__ import annotations

import subprocess
from typing import Callable, Optional, Sequence

from .fetch import sra
from .fetch.transfer import md5_file
from .model import Tools
from .quant import kallisto, salmon
from .quant.salmon_quant import index_md5


def _version(args: list[str], parse: Callable[[str], Optional[str]]) -> Optional[str]:
    """Run a tool's version command; its version as ``parse`` reads it, or None when it cannot run."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse(out.stdout + out.stderr)


def quantifier_version(tools: Tools, tool: str = "kallisto") -> Optional[str]:
    """The version of the quantifier ``tool`` (kallisto or salmon), as it reports it."""
    if tool == "salmon":
        return _version(salmon.version_args(tools.salmon), salmon.parse_version)
    return _version(kallisto.version_args(tools.kallisto), kallisto.parse_version)


def tool_versions(tools: Tools, sources: Sequence[str], quant_tool: str = "kallisto") -> dict:
    """The versions of the tools a species uses, as they report them (None when unknown)."""
    out = {quant_tool: quantifier_version(tools, quant_tool)}
    if "sra" in sources:
        out["fasterq-dump"] = _version(sra.version_args(tools.fasterq_dump), sra.parse_version)
    return out


def reference_record(fasta, index, tools: Tools, tool: str = "kallisto") -> dict:
    """What each run quantified against this index records: md5s of the transcriptome and the
    index (salmon's folder: :func:`~pipeline.quant.salmon_quant.index_md5`), the tool and its version."""
    return {
        "transcriptome_md5": md5_file(fasta),
        "index_md5": index_md5(index) if tool == "salmon" else md5_file(index),
        "quant_tool": tool,
        f"{tool}_version": quantifier_version(tools, tool),
    }


#: What a run copies from its reference record (the index marker) into its own.
REFERENCE_KEYS = ("transcriptome_md5", "index_md5", "quant_tool", "kallisto_version", "salmon_version")


def tool_groups(records: dict[str, dict]) -> dict[str, list[str]]:
    """``{quantifier: [runs]}``; a record naming none was made by kallisto (the only one before)."""
    groups: dict[str, list[str]] = {}
    for run, rec in records.items():
        groups.setdefault(rec.get("quant_tool") or "kallisto", []).append(run)
    return groups


def reference_groups(records: dict[str, dict]) -> dict[str, list[str]]:
    """``{index md5: [runs]}`` of the runs whose record names their index (older records do not)."""
    groups: dict[str, list[str]] = {}
    for run, rec in records.items():
        if rec.get("index_md5"):
            groups.setdefault(rec["index_md5"], []).append(run)
    return groups
