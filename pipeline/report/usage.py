"""The report's sections on how the machine was used: reads on disk over time, and throughput."""

from __future__ import annotations

from ..plan.sizes import human
from .html import Figures, esc, median_of


def _over_time(figs: Figures, title: str, data: list, xs: list, limit, limit_name: str) -> str:
    """A GB-over-time plot of ``data`` with ``limit`` (bytes, or None) as a dashed line."""
    if limit:
        data = data + [
            {
                "type": "scatter",
                "mode": "lines",
                "name": limit_name,
                "x": [xs[0], xs[-1]],
                "y": [limit / 1e9] * 2,
                "line": {"dash": "dash", "color": "#d62728"},
            }
        ]
    layout = {
        "title": {"text": title},
        "xaxis": {"title": {"text": "seconds since the first task"}},
        "yaxis": {"title": {"text": "GB"}, "rangemode": "tozero"},
    }
    return figs.add(data, layout)


def _disk(sp: dict, figs: Figures) -> str:
    d = sp["disk"]
    t0 = sp["timeline"]["t0"]
    samples = d["samples"]
    if not samples:
        return '<p class="note">no disk sample and no download marker yet</p>'
    t0 = t0 if t0 is not None else samples[0][0]
    xs = [s[0] - t0 for s in samples]
    src = (
        "disk samples (.rnaseq-batch/disk.tsv)"
        if d["source"] == "disk.tsv"
        else "the batch edges in the markers (a batch's reads counted from its download's end to its cleanup's end)"
    )
    budget = d["budget_bytes"]
    parts = [
        f"<p>From {esc(src)}. Budget: "
        + (
            f"(prefetch {d['prefetch']} + 1) × max_bytes {esc(human(d['max_bytes']))} = {esc(human(budget))}"
            if budget
            else "none (no batch.max_bytes)"
        )
        + (f"; disk.min_free {esc(human(d['min_free']))}" if d["min_free"] is not None else "")
        + ".</p>"
    ]
    shape = "hv" if d["source"] == "markers" else "linear"
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "reads on disk",
            "x": xs,
            "y": [None if s[1] is None else s[1] / 1e9 for s in samples],
            "line": {"shape": shape},
        }
    ]
    parts.append(_over_time(figs, "Reads on disk", data, xs, budget, "budget"))
    free = [(x, s[2]) for x, s in zip(xs, samples) if s[2] is not None]
    if free:
        data = [
            {
                "type": "scatter",
                "mode": "lines+markers" if len(free) < 50 else "lines",
                "name": "free space",
                "x": [f[0] for f in free],
                "y": [f[1] / 1e9 for f in free],
            }
        ]
        parts.append(
            _over_time(figs, "Free space on the output's file system", data, xs, d["min_free"], "disk.min_free")
        )
    return "".join(parts)


def _throughput(sp: dict, figs: Figures) -> str:
    runs = [r for r in sp["runs"] if r["download_mb_s"] is not None]
    parts = []
    if runs:
        by_source: dict[str, list[dict]] = {}
        for r in runs:
            by_source.setdefault(r["source"] or "?", []).append(r)
        data = [
            {
                "type": "box",
                "name": s,
                "y": [r["download_mb_s"] for r in rs],
                "text": [r["run"] for r in rs],
                "boxpoints": "all",
                "jitter": 0.4,
                "pointpos": 0,
                "hovertemplate": "%{text}: %{y:.2f} MB/s<extra></extra>",
            }
            for s, rs in sorted(by_source.items())
        ]
        parts.append(
            figs.add(
                data,
                {
                    "title": {"text": "Download rate per run, by source"},
                    "yaxis": {"title": {"text": "MB/s"}, "rangemode": "tozero"},
                    "showlegend": False,
                },
            )
        )
        means = "; ".join(
            f"{esc(s)}: {len(rs)} runs, median {median_of([r['download_mb_s'] for r in rs]):.2f} MB/s"
            for s, rs in sorted(by_source.items())
        )
        parts.append(f"<p>{means}</p>")
    else:
        parts.append('<p class="note">no run downloaded yet</p>')
    q = [r for r in sp["runs"] if r["reads_per_s"] is not None]
    if q:
        parts.append(
            figs.add(
                [
                    {
                        "type": "scatter",
                        "mode": "markers",
                        "x": [r["n_processed"] for r in q],
                        "y": [r["reads_per_s"] for r in q],
                        "text": [r["run"] for r in q],
                        "hovertemplate": "%{text}: %{y:,.0f} reads/s<extra></extra>",
                    }
                ],
                {
                    "title": {"text": "kallisto rate per run"},
                    "xaxis": {"title": {"text": "reads processed"}},
                    "yaxis": {"title": {"text": "reads/s"}, "rangemode": "tozero"},
                },
            )
        )
        parts.append(
            f"<p>kallisto: median {median_of([r['reads_per_s'] for r in q]):,.0f} reads/s over {len(q)} runs.</p>"
        )
    return "".join(parts)
