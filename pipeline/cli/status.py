"""Where a pipeline run stands, read from its markers: progress, time left, disk, failures, liveness.

    python -m pipeline.status OUTPUT_DIR [--species NAME ...] [--json]

Works while the pipeline runs (from another terminal, with or without ``luigid``) and after it
stopped. It only reads: ``work/markers/*.json``, the batch plan, the sizes under ``fastq/`` and
the run's heartbeat (``OUTPUT/.rnaseq-batch/heartbeat.json``, :mod:`pipeline.heartbeat`).
Batches are counted by stage: cleaned (done), quantified, downloaded, and downloading (reads of a
batch without a download marker are on disk). A species is "running" only while the heartbeat
says its run is alive; otherwise it is "stopped", with when and why. The time left is
:func:`pipeline.eta.estimate`: bytes to download at the measured download rate and reads to
quantify at the measured kallisto rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .. import eta
from ..files import read_json
from ..heartbeat import liveness
from ..model import InputError, check_species
from ..paths import BATCH_STAGES, SPECIES, SPLIT, SpeciesPaths, species_under
from ..plan.sizes import human
from ..plan.space import tree_bytes
from ..progress import duration

SHOW_FAILED = 20
#: figures of :func:`pipeline.eta.estimate` copied into a species' status
ETA_FIELDS = (
    "seconds_left",
    "download_seconds_left",
    "quant_seconds_left",
    "bytes_left",
    "reads_left",
    "download_bytes_per_s",
    "quant_reads_per_s",
    "prefetch",
    "overlap",
    "share_to_disk",
    "finishes_at",
    "measured_at",
)
#: fields of :func:`pipeline.heartbeat.liveness` kept under ``liveness``
LIVENESS_FIELDS = ("state", "why", "pid", "host", "started_at", "updated_at", "stopped_at", "exit_code", "command")
RETRY_COMMAND = "rnaseq-batch retry"


def _markers(layout: SpeciesPaths, stage: str) -> dict[int, dict]:
    return {b: read_json(p) for b, p in layout.batch_markers(stage).items()}


def species_status(output_dir, species: str, now: float | None = None, live: dict | None = None) -> dict:
    """The figures of one species (see the module docstring); ``state`` is one of "not started",
    "planned", "running", "batches done, merge pending", "stopped", "stopped with failures" or
    "done". ``live`` is :func:`pipeline.heartbeat.liveness` of ``output_dir`` (read when None):
    a species not done is "running" (or "planned", "batches done, merge pending") only while
    the run's heartbeat says it is alive; otherwise it is "stopped"."""
    now = time.time() if now is None else now
    layout = SpeciesPaths(output_dir, species)
    split_path = layout.marker(SPLIT)
    out: dict[str, Any] = {"species": species, "state": "not started"}
    if not split_path.is_file():
        return out
    live = liveness(output_dir, now) if live is None else live
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
    started = split.get("started_at")
    left = n - len(cleanups)
    species_done = layout.marker(SPECIES).is_file()
    finished = read_json(layout.marker(SPECIES)).get("finished_at") if species_done else None
    alive = live.get("state") == "alive"
    if species_done:
        state = "done"
    elif not alive:
        state = "stopped with failures" if n and not left and failed else "stopped"
    elif n and not left:
        state = "batches done, merge pending"
    elif downloads or downloading:
        state = "running"
    else:
        state = "planned"
    est = eta.estimate(layout, now)
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
        # the batches' work left; None once every batch is done (the merge is not estimated)
        eta_s=est["seconds_left"] if left > 0 and not species_done else None,
        **{k: est[k] for k in ETA_FIELDS},
        liveness={k: live.get(k) for k in LIVENESS_FIELDS},
        failed=failed,
        failed_runs_file=str(layout.failed_runs),
        output=str(layout.root),
    )
    return out


def _when(t: float | None, now: float) -> str:
    if t is None:
        return "at an unknown time"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"{duration(max(0.0, now - t))} ago ({stamp})"


def _liveness_line(live: dict, now: float) -> str:
    if live.get("state") == "alive":
        beat = live.get("updated_at")
        seen = f", heartbeat {duration(max(0.0, now - beat))} ago" if beat is not None else ""
        return f"  run      alive: pid {live.get('pid')} on {live.get('host')}{seen}"
    if live.get("state") == "stopped":
        who = f" (pid {live.get('pid')} on {live.get('host')})" if live.get("pid") is not None else ""
        return f"  run      stopped {_when(live.get('stopped_at'), now)}: {live.get('why')}{who}"
    return f"  run      stopped as far as can be told: {live.get('why')}; none is known to be alive"


def _again(live: dict) -> str:
    command = live.get("command")
    if isinstance(command, list) and command:
        return "the same command again: " + " ".join(map(str, command))
    return "the same command again (rnaseq-batch run ...)"


def _time_left(st: dict) -> list[str]:
    """What is left of the batches (lines after ``left``), and what the figure is made of."""
    if st["eta_s"] is None:
        if st["download_bytes_per_s"] is None and st["bytes_left"]:
            return ["not known yet (no batch downloaded yet: the download rate is not measured)"]
        if st["quant_reads_per_s"] is None and st["reads_left"]:
            return ["not known yet (no run quantified yet: the kallisto rate is not measured)"]
        return ["not known (a batch file is missing or unreadable, or no run has a size or read count)"]
    if st.get("share_to_disk") == 0.0:
        how = "stream mode: the reads are fetched while they are quantified"
    elif st["overlap"]:
        how = f"downloads overlap quantification with prefetch {st['prefetch']}, so the longer counts"
    else:
        how = "with prefetch 0 downloads and quantification take turns, so both count"
    when = " once resumed" if st["state"].startswith("stopped") else ""
    parts = []
    if st["bytes_left"]:
        parts.append(
            f"{human(st['bytes_left'])} to download at {human(st['download_bytes_per_s'])}/s: "
            f"{duration(st['download_seconds_left'])}"
        )
    if st["reads_left"]:
        parts.append(
            f"{st['reads_left']:,} reads to quantify at {st['quant_reads_per_s']:,.0f} reads/s: "
            f"{duration(st['quant_seconds_left'])}"
        )
    return [f"about {duration(st['eta_s'])} left{when} ({how})", "; ".join(parts)] if parts else ["none"]


def format_status(st: dict, output_dir, now: float | None = None) -> str:
    """Plain text for one species."""
    now = time.time() if now is None else now
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
        lines.append(f"  time     {duration(st['elapsed_s'])} from planning to the merged tables")
    else:
        lines.append(f"  time     {duration(st['elapsed_s'])} since planning")
        if st["batches_cleaned"] < st["batches"]:
            first, *more = _time_left(st)
            lines.append(f"  left     {first}")
            lines.extend(f"           {line}" for line in more)
        elif st["state"] == "stopped with failures":
            lines.append("  left     every batch is done; the runs that failed are left (see retry below)")
        else:
            lines.append("  left     every batch is done; the merge is what is left")
    lines.append(_liveness_line(st["liveness"], now))
    if st["state"] == "stopped":
        lines.append(f"  resume   {_again(st['liveness'])}; finished batches are skipped")
    for f in st["failed"][:SHOW_FAILED]:
        lines.append(f"  failed   {f['run']} (batch {f['batch']}, {f['stage'] or '?'}): {f['reason']}")
    if len(st["failed"]) > SHOW_FAILED:
        lines.append(
            f"  ...      {len(st['failed']) - SHOW_FAILED} more; all are in {st['failed_runs_file']} "
            "when the species finishes"
        )
    if st["failed"]:
        lines.append(f"  retry    {RETRY_COMMAND} {output_dir}  (then {_again(st['liveness'])})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rnaseq-batch status", description=__doc__.split("\n\n")[0])
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
    live = liveness(root, now)
    try:
        figures = [species_status(root, name, now, live) for name in names]
    except InputError as e:
        print(str(e), file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(figures, indent=1))
    else:
        print("\n\n".join(format_status(st, a.output_dir, now) for st in figures))
    return 0
