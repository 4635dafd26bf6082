"""The merge made incremental: a species' merged tables rebuilt from columns kept under ``work/``.

:func:`merge_incremental` writes the same bytes as :func:`pipeline.quant.merge.merge_species`, but
keeps what it parsed in a store folder (``work/merge_store/``), so that a later merge reads the
``abundance.tsv`` of new or re-quantified runs only. The store holds

- ``targets``: the target_id column, a line per transcript;
- segments ``segNNNNNN.{est_counts,tpm,eff_length}``: the columns of a group of runs, row-major
  as the tables hold them (``v1\\tv2...\\n`` per transcript), kallisto's text verbatim;
- ``manifest.json``: the segments in column order, each run's key (size and mtime of its
  ``abundance.tsv``: a re-quantified run has a new file, so it is read again) and the size and
  mtime the tables had when written.

A merge keeps every segment whose runs stand side by side, in order and unchanged, in the new
column order; the other runs go to new segments of at most ``block`` runs, made from the
``abundance.tsv`` of runs that are new or changed and from the kept text of the others (a segment
broken up by a removed, failed, moved or re-quantified run; a small segment beside new runs is
folded into theirs, so repeated small additions do not leave a segment each). The tables are then
pasted from the target_id column and the segments, a line at a time: parsing grows with the new
runs, writing the tables with all of them (they are row-major, rewritten whole). When no segment
changed and the tables are as the manifest says, they are left as they are. Memory is bounded by
one segment being made (``block`` runs), as in the plain merge.

A store that cannot be read (damaged, another format) is set aside with a warning and the merge
starts again from the ``abundance.tsv`` files.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from ..files import atomic_write_text, read_json, staged_file
from . import columnar, merge
from .merge import MEASURES

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST, TARGETS = "manifest.json", "targets"
_SEGMENT_RE = re.compile(r"seg[0-9]{6,}\.(" + "|".join(MEASURES) + ")")


class StoreDamaged(ValueError):
    """The store does not hold what its manifest says."""


@dataclass
class Segment:
    name: str
    runs: list[tuple[str, int, int]]  # run, size and mtime_ns of its abundance.tsv when read

    @property
    def run_names(self) -> list[str]:
        return [r for r, _, _ in self.runs]


#: where a run's column comes from when a segment is made: its abundance.tsv (None) or a kept
#: segment and the column's place in it
Source = Optional[tuple[Segment, int]]


def run_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _load(store: Path) -> tuple[list[Segment], Optional[list[bytes]], dict]:
    """Segments, target ids and the manifest (the tables' recorded stats, the next segment
    number, the columnar copy's record); an empty store when there is none."""
    if not (store / MANIFEST).is_file():
        return [], None, {"next": 0}
    try:
        m = read_json(store / MANIFEST)
        if m.get("format") != FORMAT:
            raise StoreDamaged(f"format {m.get('format')!r}, expected {FORMAT}")
        segments = [Segment(s["name"], [(r, int(z), int(t)) for r, z, t in s["runs"]]) for s in m["segments"]]
        targets = None
        if segments:
            with open(store / TARGETS, "rb") as fh:
                targets = [line[:-1] for line in fh]
            if len(targets) != m["rows"]:
                raise StoreDamaged(f"{TARGETS} has {len(targets)} lines, the manifest says {m['rows']}")
        lost = [f"{s.name}.{x}" for s in segments for x in MEASURES if not (store / f"{s.name}.{x}").is_file()]
        if lost:
            raise StoreDamaged(f"{len(lost)} segment file(s) missing, such as {lost[0]}")
        return segments, targets, m
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreDamaged(f"{store}: {e}") from None


def _save(store: Path, segments: list[Segment], n_rows: int, next_number: int, tables: dict, h5ad=None) -> None:
    runs = [[list(r) for r in s.runs] for s in segments]
    manifest = {"format": FORMAT, "rows": n_rows, "next": next_number, "tables": tables, "h5ad": h5ad}
    manifest |= {"segments": [{"name": s.name, "runs": r} for s, r in zip(segments, runs)]}
    atomic_write_text(store / MANIFEST, json.dumps(manifest, separators=(",", ":")) + "\n")  # 100k runs: a few MB


def plan(present: list[str], keys: dict[str, tuple[int, int]], segments: list[Segment], block: int):
    """The new column order as a list of kept :class:`Segment` and of lists of ``(run, Source)``
    (each to be a new segment of at most ``block`` runs)."""
    where: dict[str, tuple[Segment, int]] = {}
    for seg in segments:
        for col, (run, size, mtime) in enumerate(seg.runs):
            if keys.get(run) == (size, mtime):
                where.setdefault(run, (seg, col))
    items: list[Union[Segment, list[str]]] = []
    used: set[str] = set()
    i = 0
    while i < len(present):
        loc = where.get(present[i])
        if loc and loc[1] == 0 and loc[0].name not in used:
            seg = loc[0]
            k = len(seg.runs)
            if all(where.get(r) == (seg, j) for j, r in enumerate(present[i : i + k])) and i + k <= len(present):
                items.append(seg)
                used.add(seg.name)
                i += k
                continue
        if items and isinstance(items[-1], list):
            items[-1].append(present[i])
        else:
            items.append([present[i]])
        i += 1
    # A kept segment beside new runs, no wider than they are, joins them (its text is re-read,
    # not its abundance files): repeated small additions merge like a binary counter, so a run's
    # text is re-read a few times at most and segments stay few.
    for n, item in enumerate(items):
        if not isinstance(item, list) or not item:
            continue
        nb = n - 1
        while nb >= 0 and (isinstance(items[nb], list) or _joins(items[nb], item, block)):
            prior = items[nb]
            item[:0] = prior if isinstance(prior, list) else prior.run_names
            items[nb] = []
            nb -= 1
        after = items[n + 1] if n + 1 < len(items) else None
        if isinstance(after, Segment) and _joins(after, item, block):
            item.extend(after.run_names)
            items[n + 1] = []
    out: list[Union[Segment, list[tuple[str, Source]]]] = []
    loose: list[tuple[str, Source]] = []
    ends: list[Union[Segment, list[str], None]] = [*items, None]
    for entry in ends:
        if isinstance(entry, list):
            loose.extend((r, where.get(r)) for r in entry)
            continue
        out.extend(loose[s : s + block] for s in range(0, len(loose), block))
        loose = []
        if isinstance(entry, Segment):
            out.append(entry)
    return out


def _joins(seg, loose: list[str], block: int) -> bool:
    return isinstance(seg, Segment) and len(seg.runs) <= len(loose) and len(seg.runs) + len(loose) <= block


def _make_segment(
    store: Path,
    name: str,
    entries: list[tuple[str, Source]],
    quant_dir: Path,
    targets: Optional[list[bytes]],
    species: str,
    read: Callable,
) -> list[bytes]:
    """Write segment ``name`` from ``entries``; return the target ids (those of the first run read
    when ``targets`` is None)."""
    packed: dict[str, dict[str, list[bytes]]] = {}
    for run, src in entries:
        if src is None and run not in packed:
            f = quant_dir / run / "abundance.tsv"
            ids, cols = read(f)
            targets = merge.same_targets(f, ids, targets, species)
            packed[run] = {m: merge._pack(cols[m], b"\n") for m in MEASURES}
            del ids, cols
    assert targets is not None
    n_rows, sources = len(targets), {src[0].name: src[0] for _, src in entries if src is not None}
    for m in MEASURES:
        with ExitStack() as stack:
            ins = {s: stack.enter_context(open(store / f"{s}.{m}", "rb")) for s in sources}
            out = stack.enter_context(staged_file(store / f"{name}.{m}", "wb"))
            for k, start in enumerate(range(0, n_rows, merge.ROWS)):
                count = min(merge.ROWS, n_rows - start)
                rows = {s: _rows(fh, count, len(sources[s].runs), store / f"{s}.{m}") for s, fh in ins.items()}
                columns = [
                    packed[run][m][k].split(b"\n") if src is None else [row[src[1]] for row in rows[src[0].name]]
                    for run, src in entries
                ]
                out.write(b"\n".join(map(b"\t".join, zip(*columns))) + b"\n")
    return targets


def _rows(fh, count: int, width: int, path: Path) -> list[list[bytes]]:
    lines = [fh.readline() for _ in range(count)]
    rows = [line[:-1].split(b"\t") for line in lines]
    if any(len(row) != width for row in rows) or not lines[-1].endswith(b"\n"):
        raise StoreDamaged(f"{path}: a line without {width} fields")
    return rows


def _paste(dest: Path, m: str, runs: list[str], store: Path, segments: list[Segment], n_rows: int) -> None:
    """The table of measure ``m``: header, then the target id and every segment's line, per row."""
    with ExitStack() as stack:
        ins = [stack.enter_context(open(store / f"{s.name}.{m}", "rb")) for s in segments]
        out = stack.enter_context(staged_file(dest, "wb"))
        out.write("\t".join(["target_id", *runs]).encode("utf-8") + b"\n")
        if not segments:
            return
        ins.insert(0, stack.enter_context(open(store / TARGETS, "rb")))
        n, lines = 0, (b"\n",)
        for lines in zip(*ins):
            out.write(b"\t".join([line[:-1] for line in lines]) + b"\n")
            n += 1
        if n != n_rows or any(fh.read(1) for fh in ins) or not all(line.endswith(b"\n") for line in lines):
            raise StoreDamaged(f"{store}: a segment of {m} does not have {n_rows} lines")


def _stats(paths: dict[str, Path]) -> dict:
    return {m: list(run_key(p)) for m, p in paths.items() if p.is_file()}


def merge_incremental(
    species: str,
    quant_dir,
    runs: list[str],
    merged_dir,
    store_dir,
    qc_extra: dict | None = None,
    block: int = merge.BLOCK,
    read: Callable = merge.read_abundance_bytes,
    h5ad_copy: bool = True,
) -> dict:
    """:func:`pipeline.quant.merge.merge_species` (same arguments, same files, same bytes), keeping
    the parsed columns in ``store_dir`` and reusing those of runs whose ``abundance.tsv`` is as it
    was. ``read`` parses one ``abundance.tsv``. ``h5ad_copy``: also write (or keep) the columnar
    copy (:mod:`pipeline.quant.columnar`). Returns the runs, files, and what was read and kept."""
    quant_dir, merged_dir, store = Path(quant_dir), Path(merged_dir), Path(store_dir)
    try:
        return _merge(species, quant_dir, runs, merged_dir, store, qc_extra, block, read, h5ad_copy)
    except StoreDamaged as e:
        logger.warning("[%s] merge store set aside, every run is read again: %s", species, e)
        (store / MANIFEST).unlink(missing_ok=True)
        return _merge(species, quant_dir, runs, merged_dir, store, qc_extra, block, read, h5ad_copy)


def _merge(species, quant_dir: Path, runs, merged_dir: Path, store: Path, qc_extra, block, read, h5ad_copy) -> dict:
    merged_dir.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    present = [r for r in runs if (quant_dir / r / "abundance.tsv").is_file()]
    keys = {r: run_key(quant_dir / r / "abundance.tsv") for r in present}
    old, targets, manifest = _load(store)
    tables, number, h5ad = manifest.get("tables", {}), int(manifest["next"]), manifest.get("h5ad")
    layout = plan(present, keys, old, block)
    if not any(isinstance(item, Segment) or any(src for _, src in item) for item in layout):
        targets = None  # nothing of the store is used: the first run read gives the target ids
    segments: list[Segment] = []
    made = parsed = 0
    for item in layout:
        if isinstance(item, Segment):
            segments.append(item)
            continue
        name = f"seg{number:06d}"
        number += 1
        first = targets is None
        targets = _make_segment(store, name, item, quant_dir, targets, species, read)
        if first:
            with staged_file(store / TARGETS, "wb") as fh:
                fh.writelines(t + b"\n" for t in targets)
        segments.append(Segment(name, [(r, *keys[r]) for r, _ in item]))
        made += 1
        parsed += sum(src is None for _, src in item)
    n_rows = len(targets) if targets is not None else 0
    dest = {m: merged_dir / f"{species}_{m}.tsv" for m in MEASURES}
    unchanged = made == 0 and [s.name for s in segments] == [s.name for s in old]
    unchanged = unchanged and len(tables) == len(MEASURES) and tables == _stats(dest)
    if not unchanged:
        _save(store, segments, n_rows, number, {}, h5ad)  # the tables are about to change
        for m in MEASURES:
            _paste(dest[m], m, present, store, segments, n_rows)
    copy = columnar.path_for(species, merged_dir)
    if h5ad_copy:
        rows = [r for s in segments for r in s.runs]
        fits = h5ad and copy.is_file() and list(run_key(copy)) == h5ad["stat"]
        previous = [(str(r), int(z), int(t)) for r, z, t in h5ad["rows"]] if h5ad and fits else None
        if previous != rows:
            _save(store, segments, n_rows, number, _stats(dest))  # the copy is about to change
            files = [({m: store / f"{s.name}.{m}" for m in MEASURES}, len(s.runs)) for s in segments]
            columnar.write_h5ad(copy, rows, targets or [], files, previous)
        h5ad = {"stat": list(run_key(copy)), "rows": [list(r) for r in rows]}
    else:
        copy.unlink(missing_ok=True)
        h5ad = None
    _save(store, segments, n_rows, number, _stats(dest), h5ad)
    keep = {f"{s.name}.{m}" for s in segments for m in MEASURES}
    for p in store.iterdir():
        if (_SEGMENT_RE.fullmatch(p.name) and p.name not in keep) or (p.name.startswith(".") and p.is_file()):
            p.unlink()
    qc = merged_dir / f"{species}_qc.tsv"
    atomic_write_text(qc, merge.qc_text([merge.qc_row(quant_dir, r, qc_extra) for r in present]))
    return {
        "runs": present,
        "files": {**{m: str(p) for m, p in dest.items()}, "qc": str(qc), **({"h5ad": str(copy)} if h5ad_copy else {})},
        "incremental": {
            "read": parsed,
            "segments_kept": len(segments) - made,
            "segments_made": made,
            "tables_rewritten": not unchanged,
        },
    }
