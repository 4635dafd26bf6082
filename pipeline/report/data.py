"""Reading what a pipeline run left, for the report: markers, the plan, the merged tables, disk samples.

Read-only. Works on a finished species (``summary.json``, ``merged/``), on one in progress or
stopped (markers only), and on one that has only planned. Every figure is plain JSON-able data
(:func:`collect`), which :mod:`pipeline.report.page` turns into HTML.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from statistics import median
from typing import Any, Optional

import yaml

from ..eta import covered_seconds
from ..files import read_json
from ..heartbeat import FOLDER, liveness
from ..paths import CLEANUP, DOWNLOAD, INDEX, QUANT, SPECIES, SPLIT, SpeciesPaths, species_under
from ..plan.sizes import parse_size
from ..quant.quantifier import strand_text
from . import expr

DISK_TSV = "disk.tsv"
#: a run's mapping rate is an outlier below ``median - MAD_K * 1.4826 * MAD`` or half the median
MAD_K = 3.0
#: a read count off by more than this fraction of the metadata's read_count is flagged (not for capped runs)
READ_COUNT_TOLERANCE = 0.10
#: idle stretches shorter than this (seconds) are not listed
MIN_GAP_S = 1.0
RETRY = "rnaseq-batch retry"


def _json(path: Path) -> Optional[dict]:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _tsv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except OSError:
        return []


def _num(v: Any) -> Optional[float]:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> Optional[int]:
    x = _num(v)
    return None if x is None else int(x)


def _span(d: Optional[dict]) -> Optional[tuple[float, float]]:
    if not d or d.get("started_at") is None or d.get("finished_at") is None:
        return None
    a, b = float(d["started_at"]), float(d["finished_at"])
    return (a, b) if b >= a else None


# -- the species config, for the disk budget ------------------------------------------------------


def _config_dir_from_heartbeat(output_dir: Path) -> Optional[Path]:
    hb = _json(output_dir / FOLDER / "heartbeat.json") or {}
    cmd = hb.get("command")
    if isinstance(cmd, list):
        for i, a in enumerate(cmd):
            if a == "--config-dir" and i + 1 < len(cmd):
                return Path(cmd[i + 1])
            if isinstance(a, str) and a.startswith("--config-dir="):
                return Path(a.split("=", 1)[1])
    return None


def species_settings(config_dir: Optional[Path], species: str) -> dict:
    """``{"max_bytes", "min_free", "config"}`` from the species' YAML in ``config_dir`` (None: unknown).

    The YAML is read as plain YAML (no validation: its reference files may be gone by now)."""
    out: dict[str, Any] = {"max_bytes": None, "min_free": None, "config": None}
    if config_dir is None or not config_dir.is_dir():
        return out
    for p in sorted(config_dir.glob("*.y*ml")):
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if not isinstance(doc, dict) or doc.get("species") != species:
            continue
        batch, disk = doc.get("batch") or {}, doc.get("disk") or {}
        try:
            out["max_bytes"] = None if batch.get("max_bytes") is None else parse_size(batch["max_bytes"])
        except (ValueError, TypeError):
            pass
        try:
            out["min_free"] = parse_size(disk.get("min_free", "1G"))
        except (ValueError, TypeError):
            pass
        out["config"] = str(p)
        return out
    return out


# -- one species ---------------------------------------------------------------------------------


def _markers(paths: SpeciesPaths, stage: str) -> dict[int, dict]:
    out = {}
    for b, p in sorted(paths.batch_markers(stage).items()):
        d = _json(p)
        if d is not None:
            out[b] = d
    return out


def _plan(paths: SpeciesPaths) -> list[tuple[int, dict]]:
    """``(batch, run record)`` of every planned run, in plan order."""
    out: list[tuple[int, dict]] = []
    for b, p in paths.batch_files():
        d = _json(p) or {}
        out.extend((b, r) for r in d.get("runs", []))
    return out


def _outliers(runs: list[dict]) -> dict:
    rates = [r["p_pseudoaligned"] for r in runs if r["status"] == "ok" and r["p_pseudoaligned"] is not None]
    med = median(rates) if rates else None
    mad = median(abs(x - med) for x in rates) if rates and med is not None else None
    low = None
    if med is not None and mad is not None:
        low = max(med / 2, med - MAD_K * 1.4826 * mad) if mad > 0 else med / 2
    for r in runs:
        flags = []
        p = r["p_pseudoaligned"]
        if r["status"] == "ok" and p is not None and low is not None and p < low:
            flags.append(f"mapping {p:.1f}% < {low:.1f}% (median {med:.1f}%)")
        n, want = r["n_processed"], r["read_count"]
        if r["status"] == "ok" and n is not None and want and r.get("capped") not in ("yes", "True", "true"):
            if abs(n - want) > READ_COUNT_TOLERANCE * want:
                flags.append(f"{n:,} reads, metadata says {want:,}")
        r["flags"] = flags
        r["outlier"] = bool(flags)
    return {"median_p_pseudoaligned": med, "mad_p_pseudoaligned": mad, "low_p_pseudoaligned": low}


def _timeline(downloads: dict, quants: dict, cleanups: dict, index: Optional[dict], t_end: float) -> dict:
    bars = []
    for stage, ms in ((DOWNLOAD, downloads), (QUANT, quants), (CLEANUP, cleanups)):
        for b, d in ms.items():
            s = _span(d)
            if s:
                bars.append({"batch": b, "stage": stage, "start": s[0], "end": s[1]})
    idx = _span(index)
    if idx:
        bars.append({"batch": None, "stage": INDEX, "start": idx[0], "end": idx[1]})
    starts = [x["start"] for x in bars]
    t0 = min(starts) if starts else None
    out: dict[str, Any] = {"bars": sorted(bars, key=lambda x: x["start"]), "t0": t0, "wall_s": None}
    if t0 is None:
        return out
    end = max([t_end, *(x["end"] for x in bars)])
    wall = end - t0
    dl = covered_seconds([(x["start"], x["end"]) for x in bars if x["stage"] == DOWNLOAD])
    qu = covered_seconds([(x["start"], x["end"]) for x in bars if x["stage"] == QUANT])
    busy = sorted((x["start"], x["end"]) for x in bars)
    gaps, cursor = [], t0
    for a, b in busy:
        if a - cursor >= MIN_GAP_S:
            gaps.append({"start": cursor, "end": a, "seconds": a - cursor})
        cursor = max(cursor, b)
    if end - cursor >= MIN_GAP_S:
        gaps.append({"start": cursor, "end": end, "seconds": end - cursor})
    out.update(
        t_end=end,
        wall_s=wall,
        download_s=dl,
        quant_s=qu,
        download_share=dl / wall if wall > 0 else None,
        quant_share=qu / wall if wall > 0 else None,
        idle_s=sum(g["seconds"] for g in gaps),
        gaps=gaps,
    )
    return out


def _disk(output_dir: Path, species: str, downloads: dict, cleanups: dict, split: dict, settings: dict) -> dict:
    max_bytes = split.get("max_bytes") or settings.get("max_bytes")
    prefetch = split.get("prefetch")
    budget = (int(prefetch) + 1) * int(max_bytes) if max_bytes and prefetch is not None else None
    out: dict[str, Any] = {
        "max_bytes": max_bytes,
        "prefetch": prefetch,
        "budget_bytes": budget,
        "min_free": settings.get("min_free"),
        "source": None,
        "samples": [],
    }
    rows = [r for r in _tsv(output_dir / FOLDER / DISK_TSV) if r.get("species") in (species, "", None)]
    samples: list[list[Any]] = []
    for r in rows:
        t = _num(r.get("time"))
        if t is not None:
            samples.append([t, _int(r.get("fastq_bytes")), _int(r.get("free_bytes"))])
    if samples:
        out.update(source=DISK_TSV, samples=sorted(samples, key=lambda s: s[0]))
        return out
    # no samples: the batch edges: a batch's reads arrive by its download's end, leave at its cleanup's end
    events: list[tuple[float, int, Optional[int]]] = []
    for b, d in downloads.items():
        s = _span(d)
        if s:
            events.append((s[0], 0, _int(d.get("free_at_start"))))
            events.append((s[1], int(d.get("bytes", 0) or 0), None))
            c = _span(cleanups.get(b))
            if c:
                events.append((c[1], -int(d.get("bytes", 0) or 0), None))
    level, free = 0, None
    for t, delta, f in sorted(events, key=lambda e: e[0]):
        level += delta
        free = f if f is not None else free
        samples.append([t, level, f])
    out.update(source="markers" if samples else None, samples=samples)
    return out


def _wall_end(paths: SpeciesPaths, live: dict, now: float, timeline_end: Optional[float]) -> float:
    sp = _json(paths.marker(SPECIES))
    if sp and sp.get("finished_at"):
        return float(sp["finished_at"])
    if live.get("state") == "alive":
        return now
    return timeline_end if timeline_end is not None else now


def species_report(output_dir: Path, species: str, config_dir: Optional[Path], live: dict, now: float) -> dict:
    paths = SpeciesPaths(output_dir, species)
    split = _json(paths.marker(SPLIT))
    out: dict[str, Any] = {"species": species, "planned": split is not None}
    if split is None:
        out["overview"] = {"state": "not started"}
        return out
    index = _json(paths.marker(INDEX))
    summary = _json(paths.summary)
    species_done = _json(paths.marker(SPECIES))
    downloads, quants, cleanups = (_markers(paths, s) for s in (DOWNLOAD, QUANT, CLEANUP))
    plan = _plan(paths)
    meta = {r.get("run"): r for r in _tsv(paths.runs_table)}
    qc_rows = {r["run"]: r for r in _tsv(paths.merged / f"{species}_qc.tsv")} if paths.merged.is_dir() else {}
    dl_runs = {r["run"]: r for d in downloads.values() for r in d.get("runs", [])}
    q_runs: dict[str, tuple[Optional[int], dict]] = {
        r["run"]: (b, r) for b, d in quants.items() for r in d.get("runs", [])
    }

    runs: list[dict] = []
    failures: list[dict] = []
    for b, planned in plan:
        name = str(planned.get("run"))
        dl: dict = dl_runs.get(name, {})
        qb, q = q_runs.get(name, (None, {}))
        qc: dict = qc_rows.get(name, {})
        status = q.get("status") or ("failed" if dl.get("status") == "failed" else "pending")
        if not q and (paths.run_quant(name) / "abundance.tsv").is_file() and name in qc_rows:
            status = "ok"
        rec = _json(paths.run_quant(name) / "pipeline_run.json") or {}
        m = meta.get(name, {})
        n_proc = _int(qc.get("n_processed", q.get("n_processed")))
        dl_bytes, dl_s = _int(dl.get("bytes")), _num(dl.get("seconds"))
        q_s = _num(q.get("seconds"))
        run = {
            "run": name,
            "batch": b,
            "status": status,
            "layout": qc.get("layout") or q.get("layout") or rec.get("layout") or planned.get("layout") or "",
            "source": qc.get("source") or rec.get("source") or dl.get("source") or "",
            "capped": qc.get("capped") or rec.get("capped") or "",
            "quant_tool": qc.get("quant_tool") or rec.get("quant_tool") or "",
            "strand": strand_text(qc if qc.get("strandedness") else rec),
            "lite_qualities": qc.get("lite_qualities") or rec.get("lite_qualities") or "",
            "n_processed": n_proc,
            "n_pseudoaligned": _int(qc.get("n_pseudoaligned", q.get("n_pseudoaligned"))),
            "p_pseudoaligned": _num(qc.get("p_pseudoaligned", q.get("p_pseudoaligned"))),
            "read_count": _int(m.get("read_count")) or _int(planned.get("read_count")),
            "download_bytes": dl_bytes,
            "download_s": dl_s,
            "download_mb_s": dl_bytes / dl_s / 1e6 if dl_bytes and dl_s else None,
            "quant_s": q_s,
            "reads_per_s": n_proc / q_s if n_proc and q_s else None,
        }
        runs.append(run)
        if status == "failed":
            reason = q.get("reason") or dl.get("reason") or ""
            log = paths.run_log(name)
            failures.append(
                {
                    "run": name,
                    "batch": qb if qb is not None else b,
                    "stage": q.get("stage") or (DOWNLOAD if dl.get("status") == "failed" else ""),
                    "reason": reason,
                    "log": str(log),
                    "log_exists": log.is_file(),
                }
            )
    qc_stats = _outliers(runs)

    timeline = _timeline(downloads, quants, cleanups, index, t_end=0.0)
    wall_end = _wall_end(paths, live, now, timeline.get("t_end"))
    started = split.get("started_at")
    if timeline["t0"] is not None:
        timeline = _timeline(downloads, quants, cleanups, index, t_end=wall_end)
    n_ok = sum(r["status"] == "ok" for r in runs)
    n_failed = sum(r["status"] == "failed" for r in runs)
    n_runs = int(split.get("runs", len(runs)))
    versions = (summary or {}).get("tool_versions")
    if not versions and index and index.get("kallisto_version"):
        versions = {"kallisto": index["kallisto_version"]}
    if species_done:
        state = "done"
    elif summary is not None and len(cleanups) >= int(split.get("batches", 0)):
        state = "finished with failures" if n_failed else "done"
    elif live.get("state") == "alive":
        state = "running"
    else:
        state = "stopped"
    settings = species_settings(config_dir, species)
    out.update(
        overview={
            "state": state,
            "runs": n_runs,
            "quantified": n_ok,
            "failed": n_failed,
            "to_go": max(0, n_runs - n_ok - n_failed),
            "batches": int(split.get("batches", 0)),
            "batches_done": len(cleanups),
            "batches_downloaded": len(downloads),
            "batches_quantified": len(quants),
            "bytes_downloaded": sum(int(d.get("bytes", 0) or 0) for d in downloads.values()),
            "wall_s": None if started is None else max(0.0, wall_end - float(started)),
            "started_at": started,
            "finished_at": species_done.get("finished_at") if species_done else None,
            "retry_command": f"{RETRY} {output_dir}",
            "tool_versions": versions or {},
            "summary": summary is not None,
            "config": settings.get("config"),
        },
        runs=runs,
        qc_stats=qc_stats,
        failures=failures,
        timeline=timeline,
        disk=_disk(output_dir, species, downloads, cleanups, split, settings),
        expression=expr.expression(paths.merged / f"{species}_tpm.tsv"),
    )
    return out


def collect(output_dir, config_dir=None, now: Optional[float] = None) -> dict:
    """Everything the report shows, for every species under ``output_dir``."""
    root = Path(output_dir).resolve()
    now = time.time() if now is None else now
    live = liveness(root, now)
    cfg = Path(config_dir) if config_dir is not None else _config_dir_from_heartbeat(root)
    names = species_under(root) if root.is_dir() else []
    return {
        "output_dir": str(root),
        "generated_at": now,
        "host": os.uname().nodename if hasattr(os, "uname") else "",
        "liveness": {k: live.get(k) for k in ("state", "why", "pid", "host", "started_at", "updated_at")},
        "species": [species_report(root, n, cfg, live, now) for n in names],
    }
