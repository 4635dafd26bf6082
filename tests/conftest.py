"""Shared fixtures: paths to the real data beside the project, and a loopback file server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def need_shared(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: the real-data files live in ../shared/data beside the project")
    return p


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        if os.environ.get("CI"):
            pytest.fail(f"{name} not on PATH in CI: `make test` should have installed it")
        pytest.skip(f"{name} not on PATH: `make test` installs it (apt-get install kallisto salmon sra-toolkit)")
    return path
