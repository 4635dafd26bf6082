"""Where a pipeline run stands, read from its markers: progress, pace, disk and failures so far.

    python -m pipeline.status OUTPUT_DIR [--species NAME ...] [--json]

Works while the pipeline runs (from another terminal, with or without ``luigid``) and after it
stopped. It only reads: ``work/markers/*.json``, the batch plan and the sizes under ``fastq/``.
Batches are counted by stage: cleaned (done), quantified, downloaded, and downloading (reads of a
batch without a download marker are on disk). The estimate of the time left is the pace of the
last batches cleaned (up to 10) applied to the batches left.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..files import read_json
from ..model import InputError, check_species
from ..paths import BATCH_STAGES, SPECIES, SPLIT, SpeciesPaths, species_under
from ..plan.sizes import human
from ..plan.space import tree_bytes

PACE_WINDOW = 10  # batches whose pace estimates the time left
SHOW_FAILED = 20


def _markers(layout: SpeciesPaths, stage: str) -> dict[int, dict]:
    return {b: read_json(p) for b, p in layout.batch_markers(stage).items()}


def species_status(output_dir, species: str, now: float | None = None) -> dict:
    """The figures of one species (see the module docstring); ``state`` is one of "not started",
    "planned", "running", "batches done, merge pending", "stopped with failures" or "done"."""
    now = time.time() if now is None else now
    layout = SpeciesPaths(output_dir, species)
    split_path = layout.marker(SPLIT)
    out: dict[str, Any] = {"species": species, "state": "not started"}
    if not split_path.is_file():
        return out
    split = read_json(split_path)
    n = split["batches"]
    downloads, quants, cleanups = (_markers(layout, s) for s in BATCH_STAGES)
    on_disk = {p.name for p in layout.fastq.iterdir() if p.is_dir()} if layout.fastq.is_dir() else set()
    downloading = 0
    for b in range(n):
        if b not in downloads and on_disk and layout.batch_file(b).is_file():
            names = {r["run"] for r in read_json(layout.batch_file(b))["runs"]}
            downloading += bool(names & on_disk)
    failed = [
        {"run": r["run"], "batch": b, "stage": r.get("stage", ""), "reason": r.get("reason", "")}
        for b in sorted(quants)
        for r in quants[b]["runs"]
        if r["status"] == "failed"
    ]
    ok = sum(1 for q in quants.values() for r in q["runs"] if r["status"] == "ok")
    done = sorted(c["finished_at"] for c in cleanups.values() if c.get("finished_at"))
    started = split.get("started_at")
    left = n - len(cleanups)
    eta = None
    if left and len(done) >= 2:
        k = min(PACE_WINDOW, len(done) - 1)
        span = done[-1] - done[-1 - k]
        if span > 0:
            eta = left * span / k
    species_done = layout.marker(SPECIES).is_file()
    finished = read_json(layout.marker(SPECIES)).get("finished_at") if species_done else None
    if species_done:
        state = "done"
    elif n and not left and failed:
        state = "stopped with failures"
    elif n and not left:
        state = "batches done, merge pending"
    elif downloads or downloading:
        state = "running"
    else:
        state = "planned"
    out.update(
        state=state,
        runs=split["runs"],
        skipped=split.get("skipped", 0),
        batches=n,
        batches_cleaned=len(cleanups),
        batches_quantified=len(quants),
        batches_downloaded=len(downloads),
        batches_downloading=downloading,
        runs_quantified=ok,
        runs_failed=len(failed),
        runs_left=max(0, split["runs"] - ok - len(failed)),
        bytes_downloaded=sum(d.get("bytes", 0) for d in downloads.values()),
        bytes_on_disk=tree_bytes(layout.fastq) if layout.fastq.exists() else 0,
        elapsed_s=None if started is None else (finished or now) - started,
        eta_s=eta,
        failed=failed,
        failed_runs_file=str(layout.failed_runs),
        output=str(layout.root),
    )
    return out


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h {m:02d}m" if d else f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def format_status(st: dict, output_dir) -> str:
    """Plain text for one species."""
    lines = [f"{st['species']}: {st['state']}"]
    if st["state"] == "not started":
        return lines[0] + " (no plan yet: SplitMetadata has not run)"
    lines.append(
        f"  runs     {st['runs_quantified']} of {st['runs']} quantified, {st['runs_failed']} failed, "
        f"{st['runs_left']} to go ({st['skipped']} not selected: work/metadata/skipped.tsv)"
    )
    lines.append(
        f"  batches  {st['batches_cleaned']} of {st['batches']} done; in flight: "
        f"{st['batches_quantified'] - st['batches_cleaned']} quantified, "
        f"{st['batches_downloaded'] - st['batches_quantified']} downloaded, "
        f"{st['batches_downloading']} downloading"
    )
    lines.append(
        f"  disk     {human(st['bytes_downloaded'])} downloaded so far; "
        f"{human(st['bytes_on_disk'])} of reads on disk now"
    )
    if st["state"] == "done":
        lines.append(f"  time     {_duration(st['elapsed_s'])} from planning to the merged tables")
    else:
        pace = (
            f"about {_duration(st['eta_s'])} left at the pace of the last batches"
            if st["eta_s"]
            else "time left: not known yet (fewer than 2 batches done)"
            if st["batches_cleaned"] < st["batches"]
            else ""
        )
        lines.append(f"  time     {_duration(st['elapsed_s'])} since planning" + (f"; {pace}" if pace else ""))
    for f in st["failed"][:SHOW_FAILED]:
        lines.append(f"  failed   {f['run']} (batch {f['batch']}, {f['stage'] or '?'}): {f['reason']}")
    if len(st["failed"]) > SHOW_FAILED:
        lines.append(
            f"  ...      {len(st['failed']) - SHOW_FAILED} more; all are in {st['failed_runs_file']} "
            "when the species finishes"
        )
    if st["failed"]:
        lines.append(f"  retry    python -m pipeline.retry {output_dir}  (then the same luigi command again)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.status", description=__doc__.split("\n\n")[0])
    ap.add_argument("output_dir")
    ap.add_argument("--species", action="append", help="only this species (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args(argv)
    root = Path(a.output_dir)
    if not root.is_dir():
        print(f"output directory not found: {a.output_dir}", file=sys.stderr)
        return 2
    names = a.species or species_under(root)
    try:
        for name in a.species or []:
            check_species(name)  # a bad name is said as such, before it is looked for
    except InputError as e:
        print(str(e), file=sys.stderr)
        return 2
    unknown = [n for n in a.species or [] if not (root / n).is_dir()]
    if unknown:
        known = ", ".join(species_under(root)) or "none has started"
        print(
            f"no species {', '.join(map(repr, unknown))} under {a.output_dir} (species there: {known})", file=sys.stderr
        )
        return 2
    if not names:
        print(f"no species under {a.output_dir} has started", file=sys.stderr)
        return 2
    now = time.time()
    try:
        figures = [species_status(root, name, now) for name in names]
    except InputError as e:
        print(str(e), file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(figures, indent=1))
    else:
        print("\n\n".join(format_status(st, a.output_dir) for st in figures))
    return 0
