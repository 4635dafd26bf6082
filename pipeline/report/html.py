"""Small pieces every section of the report page uses: escaping, number and time formats, the
colours, and the collector of plot specs (:class:`Figures`)."""

from __future__ import annotations

import html
import json
import math
import time
from typing import Any, Optional

HEATMAP_FLOAT_MAX = 150
COLORS = {"download": "#1f77b4", "quant": "#2ca02c", "cleanup": "#9467bd", "index": "#8c564b", "idle": "#d62728"}

SECTIONS = ("overview", "qc", "expression", "timeline", "disk", "throughput", "failures")
TITLES = {
    "overview": "Overview",
    "qc": "Per-run QC",
    "expression": "Expression QC",
    "timeline": "Timeline",
    "disk": "Disk",
    "throughput": "Throughput",
    "failures": "Failures",
}


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _when(t: Optional[float]) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _clean(v: Any) -> Any:
    """Floats that JSON can hold (NaN/inf become None), recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class Figures:
    """Plot placeholders and their plotly specs, numbered in page order."""

    def __init__(self) -> None:
        self.specs: list[dict] = []

    def add(self, data: list[dict], layout: dict, height: int = 360) -> str:
        pid = f"plot-{len(self.specs)}"
        base = {"height": height, "margin": {"l": 70, "r": 20, "t": 40, "b": 50}, "hovermode": "closest"}
        self.specs.append({"id": pid, "data": _clean(data), "layout": base | layout})
        return f'<div class="plot" id="{pid}" style="height:{height}px"></div>'


def _kv(rows: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


# -- sections ------------------------------------------------------------------------------------


def median_of(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")
