"""The report's plotted sections: per-run QC, expression QC and the timeline."""

from __future__ import annotations

import base64
from typing import Any, Optional

from ..progress import duration
from .html import COLORS, HEATMAP_FLOAT_MAX, Figures, _fmt, _when, esc


def _qc(sp: dict, figs: Figures) -> str:
    runs = sp["runs"]
    st = sp["qc_stats"]
    ok = [r for r in runs if r["status"] == "ok" and r["n_processed"] is not None]
    parts = []
    if ok:
        normal = [r for r in ok if not r["outlier"]]
        odd = [r for r in ok if r["outlier"]]
        data = []
        for rs, name, color in ((normal, "run", "#1f77b4"), (odd, "outlier", "#d62728")):
            if rs:
                data.append(
                    {
                        "type": "scatter",
                        "mode": "markers",
                        "name": name,
                        "x": [r["n_processed"] for r in rs],
                        "y": [r["p_pseudoaligned"] for r in rs],
                        "text": [r["run"] + ("<br>" + "<br>".join(r["flags"]) if r["flags"] else "") for r in rs],
                        "hovertemplate": "%{text}<br>%{x:,} reads, %{y:.2f}% pseudoaligned<extra></extra>",
                        "marker": {"color": color, "size": 7},
                    }
                )
        xs = [r["n_processed"] for r in ok]
        for y, label, dash in (
            (st["median_p_pseudoaligned"], "median", "dot"),
            (st["low_p_pseudoaligned"], "outlier below", "dash"),
        ):
            if y is not None:
                data.append(
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": label,
                        "x": [min(xs), max(xs)],
                        "y": [y, y],
                        "line": {"dash": dash, "color": "#888"},
                        "hoverinfo": "skip",
                    }
                )
        parts.append(
            figs.add(
                data,
                {
                    "title": {"text": "Reads processed and % pseudoaligned per run"},
                    "xaxis": {
                        "title": {"text": "reads processed (kallisto n_processed)"},
                        "type": "log" if max(xs) > 100 * max(1, min(xs)) else "linear",
                    },
                    "yaxis": {"title": {"text": "% pseudoaligned"}},
                },
            )
        )
    else:
        parts.append('<p class="note">no run quantified yet</p>')
    med, low = st["median_p_pseudoaligned"], st["low_p_pseudoaligned"]
    if med is not None:
        parts.append(
            f"<p>Median mapping rate {med:.2f}%; a run below {low:.2f}% (the larger of half the median and "
            f"median − 3 × 1.4826 × MAD) or whose read count is more than 10% off the metadata's "
            f"<code>read_count</code> (capped runs excepted) is flagged.</p>"
        )
    cols = [
        ("run", "run"),
        ("batch", "batch"),
        ("status", "status"),
        ("source", "source"),
        ("layout", "layout"),
        ("capped", "capped"),
        ("quant_tool", "quantifier"),
        ("strand", "strandedness"),
        ("lite_qualities", "lite qualities"),
        ("n_processed", "reads processed"),
        ("n_pseudoaligned", "pseudoaligned"),
        ("p_pseudoaligned", "% pseudoaligned"),
        ("read_count", "metadata read_count"),
        ("flags", "flags"),
    ]
    head = "".join(f'<th data-col="{k}">{esc(t)}</th>' for k, t in cols)
    body = []
    for r in runs:
        cells = []
        for k, _ in cols:
            v = r.get(k)
            if k == "flags":
                cells.append(f'<td class="flag">{esc("; ".join(v))}</td>')
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f'<td class="n" data-v="{v!r}">{esc(_fmt(v))}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        cls = "outlier" if r["outlier"] else "failed" if r["status"] == "failed" else ""
        body.append(f'<tr class="{cls}" data-run="{esc(r["run"])}">{"".join(cells)}</tr>')
    n_out = sum(r["outlier"] for r in runs)
    parts.append(f"<p>{len(runs)} runs planned, {n_out} flagged. Click a column heading to sort.</p>")
    parts.append(
        f'<div class="scroll"><table class="sortable qc" id="qc-{esc(sp["species"])}"><thead><tr>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
    return "".join(parts)


def _heatmap_z(corr: list[list[Optional[float]]]) -> tuple[Any, dict]:
    """The heatmap's z and colour range: the range of the off-diagonal values (the diagonal's 1s
    would squash it), as floats up to HEATMAP_FLOAT_MAX runs, else one byte per cell."""
    vals = [v for i, row in enumerate(corr) for j, v in enumerate(row) if v is not None and i != j]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-3:
        lo = hi - 1e-3
    if len(corr) <= HEATMAP_FLOAT_MAX:
        floats = [[None if v is None else round(v, 4) for v in row] for row in corr]
        return floats, {"zmin": lo, "zmax": hi}
    span = hi - lo
    q = bytes(0 if v is None else max(0, min(255, round((v - lo) / span * 255))) for row in corr for v in row)
    n = len(corr)
    z: dict[str, Any] = {"dtype": "u1", "bdata": base64.b64encode(q).decode("ascii"), "shape": f"{n}, {n}"}
    ticks = [0, 64, 128, 191, 255]
    return z, {
        "zmin": 0,
        "zmax": 255,
        "colorbar": {"tickvals": ticks, "ticktext": [f"{lo + t / 255 * span:.3f}" for t in ticks]},
    }


def _expression(sp: dict, figs: Figures) -> str:
    e = sp["expression"]
    if not e["available"]:
        return f'<p class="note">{esc(e["note"])}</p>'
    runs = e["runs"]
    parts = [
        f"<p>{len(runs)} runs, {e['n_transcripts']:,} transcripts that vary between runs (log1p TPM)."
        + (f' <span class="note">{esc(e["note"])}</span>' if e["note"] else "")
        + "</p>"
    ]
    z, extra = _heatmap_z(e["corr"])
    size = max(360, min(900, 200 + 6 * len(runs)))
    show_ticks = len(runs) <= 60
    parts.append(
        figs.add(
            [
                {
                    "type": "heatmap",
                    "z": z,
                    "x": runs,
                    "y": runs,
                    "colorscale": "Viridis",
                    "hovertemplate": "%{y} vs %{x}: %{z}<extra></extra>",
                    **extra,
                }
            ],
            {
                "title": {
                    "text": "Run-to-run Pearson correlation of log1p(TPM)"
                    + (" (256 levels)" if "colorbar" in extra else "")
                },
                "xaxis": {"showticklabels": show_ticks, "type": "category"},
                "yaxis": {"showticklabels": show_ticks, "type": "category", "autorange": "reversed"},
            },
            height=size,
        )
    )
    if e["pcs"]:
        pc1 = e["pcs"][0]
        pc2 = e["pcs"][1] if len(e["pcs"]) > 1 else [0.0] * len(pc1)
        ex = e["explained"]
        parts.append(
            figs.add(
                [
                    {
                        "type": "scatter",
                        "mode": "markers+text" if len(runs) <= 30 else "markers",
                        "x": pc1,
                        "y": pc2,
                        "text": runs,
                        "textposition": "top center",
                        "hovertemplate": "%{text}<extra></extra>",
                        "marker": {"size": 8},
                    }
                ],
                {
                    "title": {"text": "PCA of the runs (log1p TPM)"},
                    "xaxis": {"title": {"text": f"PC1 ({ex[0] * 100:.1f}%)"}},
                    "yaxis": {"title": {"text": f"PC2 ({ex[1] * 100:.1f}%)" if len(ex) > 1 else "PC2 (none)"}},
                },
            )
        )
    return "".join(parts)


def _timeline(sp: dict, figs: Figures) -> str:
    t = sp["timeline"]
    if t["t0"] is None:
        return '<p class="note">no task has finished yet</p>'
    t0 = t["t0"]
    data = []
    for stage in ("index", "download", "quant", "cleanup"):
        bars = [b for b in t["bars"] if b["stage"] == stage]
        if not bars:
            continue
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": stage,
                "marker": {"color": COLORS[stage]},
                "y": ["index" if b["batch"] is None else f"batch {b['batch']:05d}" for b in bars],
                "base": [b["start"] - t0 for b in bars],
                "x": [max(b["end"] - b["start"], 1e-3) for b in bars],
                "hovertemplate": "%{y} " + stage + ": %{base:.1f} s + %{x:.2f} s<extra></extra>",
            }
        )
    if t["gaps"]:
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": "idle",
                "marker": {"color": COLORS["idle"]},
                "y": ["idle"] * len(t["gaps"]),
                "base": [g["start"] - t0 for g in t["gaps"]],
                "x": [g["seconds"] for g in t["gaps"]],
                "hovertemplate": "idle %{base:.1f} s + %{x:.1f} s<extra></extra>",
            }
        )
    n_rows = len({b["batch"] for b in t["bars"]}) + 1
    parts = [
        f"<p>Wall time {esc(duration(t['wall_s']))} from the first task ({esc(_when(t0))}): "
        f'kallisto running <b data-k="quant_share">{(t["quant_share"] or 0) * 100:.1f}%</b> of it, '
        f'a download running <b data-k="download_share">{(t["download_share"] or 0) * 100:.1f}%</b>, '
        f"nothing running {esc(duration(t['idle_s']))} in {len(t['gaps'])} gap(s) of {1.0:.0f} s or more.</p>"
    ]
    parts.append(
        figs.add(
            data,
            {
                "title": {"text": "Batches: download, quantification, cleanup"},
                "barmode": "overlay",
                "xaxis": {"title": {"text": "seconds since the first task"}},
                "yaxis": {"type": "category", "autorange": "reversed", "showticklabels": n_rows <= 80},
            },
            height=max(300, min(1400, 120 + 14 * n_rows)),
        )
    )
    if t["gaps"]:
        longest = sorted(t["gaps"], key=lambda g: -g["seconds"])[:10]
        parts.append(
            "<p>Longest idle gaps: "
            + ", ".join(f"{esc(duration(g['seconds']))} at +{g['start'] - t0:.0f} s" for g in longest)
            + "</p>"
        )
    return "".join(parts)
