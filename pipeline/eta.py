"""How long a species has left, from its plan and its task markers: :func:`estimate`.

The time left is two remainders, each at a rate measured on this species' own finished batches:

* **download**: the expected bytes of the batches without a download marker (a run of unknown
  size counts as the mean known size), less the bytes already under ``fastq/`` for those runs,
  at the measured download rate: the download markers' bytes over the wall time they cover (the
  union of their ``started_at``-``finished_at`` spans, which is the sum of their ``seconds`` when
  no two batches downloaded at once; when they did, as with several workers, the union counts the
  shared time once, so the rate is the throughput the pipeline got, not half of it);
* **quantification**: the ``read_count`` of the runs of batches without a quant marker (unknown
  counts as the mean), at the measured kallisto rate: ``n_processed`` over the per-run
  ``seconds`` of the ok runs in the quant markers, times how many quant batches ran at once on
  average (their summed ``seconds`` over the union of their spans; 1 when they never overlapped).

In stream mode (``download.mode: stream``) a streamed run is fetched by its quantification, so
its time is in the kallisto rate and its bytes are not a download remainder: the download
remainder counts only the share of runs that the download markers so far fetched to disk
(all of them in file mode, none when every run streams, so the time left is then the
quantification's alone). When no run of the plan has a size (or a read count), the mean is what the downloaded runs
brought (what kallisto processed) instead. Runs already quantified (``quant/RUN/abundance.tsv``,
e.g. after a retry) count neither bytes nor reads; a run a download marker says failed counts no
reads. A batch file that is missing or unreadable makes the remainder unknown (None). With ``batch.prefetch`` >= 1 (from the
split marker) downloads and quantification overlap, so the time left is
``max(download_left, quant_left)``; with ``prefetch`` 0 they take turns, so it is their sum. Either
remainder is None until its rate is measurable, and so then is the total: before the first
download marker (or, with reads to quantify, the first quant marker with a measured run) the time
left is not known. Cleanups, the merge and process start-up are not counted.

The pipeline calls this after every batch, so what does not change between calls is cached in
the process: each batch file's per-run sizes and read counts, and each marker's figures, keyed
by path and (mtime, size, inode). A call then costs a listing of ``work/markers/``,
``work/metadata/batches/``, ``fastq/`` and ``quant/`` plus the walk of the runs still on disk.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .files import read_json
from .inputs.species_config import SpeciesConfig
from .model import STREAMED, Run
from .paths import DOWNLOAD, QUANT, SPLIT, SpeciesPaths, parse_batch_marker
from .plan.sizes import expected_bytes
from .plan.space import tree_bytes

logger = logging.getLogger(__name__)

#: A plan recorded before the split marker held ``prefetch`` ran with the species default.
DEFAULT_PREFETCH = SpeciesConfig.prefetch
#: Cached file summaries kept at most (a 10,000-run species needs about 5,000).
CACHE_LIMIT = 200_000

T = TypeVar("T")
_MEASURED = (f"{DOWNLOAD}_", f"{QUANT}_")  # the markers read here (cleanups are not)


@dataclass(frozen=True)
class BatchPlan:
    """What one batch file says of its runs: names, expected bytes and read counts (None: unknown)."""

    runs: tuple[str, ...]
    bytes: tuple[Optional[int], ...]
    reads: tuple[Optional[int], ...]
    known_bytes: int
    n_known_bytes: int
    known_reads: int
    n_known_reads: int


@dataclass(frozen=True)
class DownloadFigures:
    bytes: int
    span: Optional[tuple[float, float]]  # (started_at, finished_at)
    failed: frozenset[str]
    ok_bytes: int  # bytes of the ok runs, and how many: a fallback mean size
    n_ok: int
    n_runs: int  # the batch's runs, and how many of them the quant step streams
    n_streamed: int


@dataclass(frozen=True)
class QuantFigures:
    reads: int  # n_processed of the ok runs that were measured
    runs: int  # how many
    seconds: float  # their per-run seconds
    span: Optional[tuple[float, float]]


class _FileCache:
    """``path -> (stat key, summary)``; a file replaced or touched is read again."""

    def __init__(self) -> None:
        self._d: dict[str, tuple[tuple[int, int, int], Any]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, path: str, st: os.stat_result, load: Callable[[str], T]) -> T:
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            got = self._d.get(path)
            if got is not None and got[0] == key:
                self.hits += 1
                return got[1]
        value = load(path)
        with self._lock:
            self.misses += 1
            if len(self._d) >= CACHE_LIMIT:
                self._d.clear()
            self._d[path] = (key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.hits = self.misses = 0


_CACHE = _FileCache()


def cache_info() -> dict:
    """``{"hits", "misses", "size"}`` of the file cache (for tests and benchmarks)."""
    return {"hits": _CACHE.hits, "misses": _CACHE.misses, "size": len(_CACHE._d)}


def clear_cache() -> None:
    _CACHE.clear()


# -- reading one file ------------------------------------------------------------------------------


def _span(d: dict) -> Optional[tuple[float, float]]:
    a, b = d.get("started_at"), d.get("finished_at")
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    return (a, b) if b >= a else None


def _load_batch(path: str) -> BatchPlan:
    runs = [Run.from_dict(d) for d in read_json(path)["runs"]]
    sizes = tuple(expected_bytes(r) for r in runs)
    reads = tuple(r.read_count if r.read_count else None for r in runs)
    known_b = [b for b in sizes if b is not None]
    known_r = [n for n in reads if n is not None]
    return BatchPlan(
        runs=tuple(r.run for r in runs),
        bytes=sizes,
        reads=reads,
        known_bytes=sum(known_b),
        n_known_bytes=len(known_b),
        known_reads=sum(known_r),
        n_known_reads=len(known_r),
    )


def _load_download(path: str) -> DownloadFigures:
    d = read_json(path)
    runs = d.get("runs", [])
    ok = [r for r in runs if r.get("status") == "ok" and r.get("bytes")]
    return DownloadFigures(
        bytes=int(d.get("bytes", 0) or 0),
        span=_span(d),
        failed=frozenset(r["run"] for r in runs if r.get("status") == "failed"),
        ok_bytes=sum(int(r["bytes"]) for r in ok),
        n_ok=len(ok),
        n_runs=len(runs),
        n_streamed=sum(1 for r in runs if r.get("status") == STREAMED),
    )


def _load_quant(path: str) -> QuantFigures:
    d = read_json(path)
    measured = [
        r for r in d.get("runs", []) if r.get("status") == "ok" and r.get("n_processed") and (r.get("seconds") or 0) > 0
    ]
    return QuantFigures(
        reads=sum(int(r["n_processed"]) for r in measured),
        runs=len(measured),
        seconds=sum(float(r["seconds"]) for r in measured),
        span=_span(d),
    )


def _cached(entry: os.DirEntry, load: Callable[[str], T]) -> Optional[T]:
    try:
        return _CACHE.get(entry.path, entry.stat(), load)
    except (OSError, ValueError, KeyError, TypeError) as e:  # vanished, half-written by hand, or not ours
        logger.debug("eta: skipping %s: %s", entry.path, e)
        return None


@functools.lru_cache(maxsize=64)
def _names_of(paths_root: str, species: str, n: int) -> tuple[str, ...]:
    paths = SpeciesPaths(Path(paths_root), species)
    return tuple(paths.batch_file(b).name for b in range(n))


def _batch_names(paths: SpeciesPaths, n: int) -> tuple[str, ...]:
    """The names of batch files 0 .. n-1 (built once per species and count: pathlib is slow)."""
    return _names_of(str(paths.output_dir), paths.species, n)


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []


# -- arithmetic --------------------------------------------------------------------------------


def covered_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the ``(start, end)`` spans (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _mean(total: int, n: int) -> Optional[float]:
    return total / n if n else None


def _left_seconds(amount: Optional[float], rate: Optional[float]) -> Optional[float]:
    if amount is not None and amount <= 0:
        return 0.0
    if amount is None or not rate:
        return None
    return amount / rate


def estimate(paths: SpeciesPaths, now: Optional[float] = None) -> dict:
    """The time left of one species (see the module docstring), with what it is made of.

    Returns ``seconds_left`` (None while not measurable), ``download_seconds_left``,
    ``quant_seconds_left``, ``bytes_left``, ``reads_left`` (None when a size or read count is
    needed and none is known), ``download_bytes_per_s``, ``quant_reads_per_s`` (None before the
    first marker that measures them), ``prefetch``, ``overlap`` (True: max of the two, False:
    their sum), ``share_to_disk`` (the share of the download markers' runs fetched to disk, not
    streamed), ``batches_to_download``, ``batches_to_quantify``, ``mean_run_bytes``,
    ``mean_run_reads``, ``measured_at`` (``now``) and ``finishes_at`` (``now + seconds_left``).
    """
    now = time.time() if now is None else now
    out: dict[str, Any] = {
        "seconds_left": None,
        "download_seconds_left": None,
        "quant_seconds_left": None,
        "bytes_left": None,
        "reads_left": None,
        "download_bytes_per_s": None,
        "quant_reads_per_s": None,
        "prefetch": None,
        "overlap": None,
        "share_to_disk": None,
        "batches_to_download": None,
        "batches_to_quantify": None,
        "mean_run_bytes": None,
        "mean_run_reads": None,
        "measured_at": now,
        "finishes_at": None,
    }
    downloads: dict[int, DownloadFigures] = {}
    quants: dict[int, QuantFigures] = {}
    split: Optional[dict] = None
    for e in _entries(paths.markers):
        if e.name == f"{SPLIT}.json":
            try:
                split = read_json(e.path)  # rewritten by a refresh: never cached
            except (OSError, ValueError):
                split = None
            continue
        parsed = parse_batch_marker(e.name) if e.name.startswith(_MEASURED) else None
        if parsed is None:
            continue
        stage, b = parsed
        if stage == DOWNLOAD and (fd := _cached(e, _load_download)) is not None:
            downloads[b] = fd
        elif stage == QUANT and (fq := _cached(e, _load_quant)) is not None:
            quants[b] = fq
    if split is None:
        return out
    n = int(split.get("batches", 0))
    prefetch = int(split.get("prefetch", DEFAULT_PREFETCH))
    by_name = {e.name: e for e in _entries(paths.batch_file(0).parent)}
    plans: list[Optional[BatchPlan]] = []
    for b, name in enumerate(_batch_names(paths, n)):
        entry = by_name.get(name)
        plans.append(_cached(entry, _load_batch) if entry is not None else None)
        if plans[-1] is None:
            logger.debug("eta: batch file %s is missing or unreadable: the time left is not known", paths.batch_file(b))
    real = [p for p in plans if p is not None]

    mean_bytes = _mean(sum(p.known_bytes for p in real), sum(p.n_known_bytes for p in real))
    if mean_bytes is None:  # no size in the plan at all: what downloads actually brought
        mean_bytes = _mean(sum(d.ok_bytes for d in downloads.values()), sum(d.n_ok for d in downloads.values()))
    mean_reads = _mean(sum(p.known_reads for p in real), sum(p.n_known_reads for p in real))
    if mean_reads is None:  # no read count in the plan at all: what kallisto processed
        mean_reads = _mean(sum(q.reads for q in quants.values()), sum(q.runs for q in quants.values()))

    to_download = [b for b in range(n) if b not in downloads]
    to_quantify = [b for b in range(n) if b not in quants]
    pending = bool(to_download or to_quantify)  # else neither folder is looked at
    on_disk = {e.name for e in _entries(paths.fastq) if e.is_dir(follow_symlinks=False)} if pending else set()
    quant_dirs = {e.name for e in _entries(paths.quant)} if pending else set()

    failed = {b: d.failed for b, d in downloads.items() if d.failed}
    touched = on_disk | quant_dirs | {r for names in failed.values() for r in names}

    def quantified(run: str) -> bool:
        return run in quant_dirs and (paths.quant / run / "abundance.tsv").is_file()

    def left(batches: list[int], what: str, mean: Optional[float], skip, less=lambda run: 0) -> Optional[float]:
        """Sum of the plan's ``what`` ("bytes" or "reads") over the runs of ``batches`` (unknown:
        ``mean``), without the runs ``skip(batch, run)`` and less ``less(run)`` of each; None
        when a batch file is missing, or a value is unknown and so is the mean."""
        total = 0.0
        for b in batches:
            plan = plans[b]
            if plan is None:
                return None
            values: tuple[Optional[int], ...] = getattr(plan, what)
            known, n_known = getattr(plan, f"known_{what}"), getattr(plan, f"n_known_{what}")
            if mean is None and n_known < len(values):
                return None
            if touched.isdisjoint(plan.runs):  # nothing of this batch done yet: its totals
                total += known + (len(values) - n_known) * (mean or 0.0)
                continue
            for run, v in zip(plan.runs, values):
                if not skip(b, run):
                    x = float(v) if v is not None else (mean or 0.0)
                    total += max(0.0, x - less(run))
        return total

    bytes_left = left(
        to_download,
        "bytes",
        mean_bytes,
        lambda b, run: quantified(run),
        lambda run: tree_bytes(paths.run_fastq(run)) if run in on_disk else 0,
    )
    n_runs = sum(d.n_runs for d in downloads.values())
    to_disk = 1.0 - sum(d.n_streamed for d in downloads.values()) / n_runs if n_runs else 1.0
    if bytes_left is not None:
        bytes_left *= to_disk
    reads_left = left(to_quantify, "reads", mean_reads, lambda b, run: run in failed.get(b, ()) or quantified(run))

    dl_spans = [d.span for d in downloads.values() if d.bytes > 0 and d.span is not None]
    dl_wall = covered_seconds(dl_spans)
    dl_bytes = sum(d.bytes for d in downloads.values() if d.bytes > 0 and d.span is not None)
    dl_rate = dl_bytes / dl_wall if dl_bytes and dl_wall > 0 else None

    measured = [q for q in quants.values() if q.reads and q.seconds > 0]
    q_rate = None
    if measured:
        q_rate = sum(q.reads for q in measured) / sum(q.seconds for q in measured)
        q_spans = [q.span for q in measured if q.span is not None]
        q_wall = covered_seconds(q_spans)
        if q_wall > 0:  # kallisto batches that ran side by side: their average concurrency
            q_rate *= max(1.0, sum(b - a for a, b in q_spans) / q_wall)

    dl_left = _left_seconds(bytes_left, dl_rate)
    q_left = _left_seconds(reads_left, q_rate)
    overlap = prefetch >= 1
    total: Optional[float] = None
    if dl_left is not None and q_left is not None:
        total = max(dl_left, q_left) if overlap else dl_left + q_left
    out.update(
        seconds_left=total,
        download_seconds_left=dl_left,
        quant_seconds_left=q_left,
        bytes_left=None if bytes_left is None else round(bytes_left),
        reads_left=None if reads_left is None else round(reads_left),
        download_bytes_per_s=dl_rate,
        quant_reads_per_s=q_rate,
        prefetch=prefetch,
        overlap=overlap,
        share_to_disk=to_disk,
        batches_to_download=len(to_download),
        batches_to_quantify=len(to_quantify),
        mean_run_bytes=mean_bytes,
        mean_run_reads=mean_reads,
        finishes_at=None if total is None else now + total,
    )
    return out
