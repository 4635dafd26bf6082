"""What produced a result: the versions of the tools, as they report them."""

from __future__ import annotations

import subprocess
from typing import Callable, Optional, Sequence

from .fetch import sra
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
