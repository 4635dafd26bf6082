"""Segmented downloads: one large file fetched as ``download.connections`` HTTP Range requests at
once, written into the one ``.NAME.part`` at their offsets.

Far from the archive a single TCP connection gets a fraction of the link (long round trips,
per-connection shaping); several connections on the same file add up. :func:`plan` cuts a file of
known size into equal segments of at least :data:`MIN_SEGMENT` bytes; each segment is fetched by
its own thread with the retry policy of a whole file: its own attempts, back-off, stall timeout and
give-up, resuming from its own offset after a drop.

The first request tells whether the server honours Range: an answer other than 206 with the
``Content-Range`` asked for raises :class:`RangeUnsupported` before the other segments start, and
the caller fetches the file as one stream instead.

Progress survives a killed process: ``.NAME.part.segments`` (:func:`sidecar_path`, JSON) records
each segment's bytes, rewritten atomically about once a second after the ``.part`` is synced to
disk, so it never claims bytes that are not on disk. The next run resumes each segment from there;
the md5 over the assembled file still decides whether the file is kept.

The md5 is computed while the file arrives, without a second pass: a bookkeeping thread hashes the
contiguous prefix of the ``.part`` as it grows, reading it back from the page cache (the bytes were
just written), so hashing overlaps the transfer and only what arrived after the front (the later
segments while segment 0 is still coming) waits for the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..files import atomic_write_text
from ..model import RemoteFile
from ..runlog import RunLog
from .http import CHUNK, USER_AGENT, parse_content_range, read_blocks
from .retry import GiveUp, Retryable, RetryPolicy, wait_or_give_up

#: Smallest segment: below it a connection spends too much of its life opening and ramping up.
MIN_SEGMENT = 4 << 20
#: Smallest ``download.min_segment`` accepted.
MIN_SEGMENT_FLOOR = 4096
#: Most connections one file may use (``download.connections`` is checked against it).
MAX_CONNECTIONS = 16
#: ``download.connections`` when a species does not say.
DEFAULT_CONNECTIONS = 4
#: Seconds between two saves of the sidecar.
SAVE_EVERY = 1.0


class RangeUnsupported(Exception):
    """The server did not answer a Range request with the range asked for."""


@dataclass
class Segment:
    start: int
    end: int  # exclusive
    done: int = 0  # bytes written from ``start`` on

    @property
    def complete(self) -> bool:
        return self.done >= self.end - self.start


def plan(total: int, connections: int, min_segment: int = MIN_SEGMENT) -> list[Segment]:
    """``total`` bytes cut into at most ``connections`` equal segments of at least ``min_segment``
    bytes (one segment when the file is smaller than two)."""
    n = max(1, min(connections, total // max(1, min_segment)))
    bounds = [total * i // n for i in range(n + 1)]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(n)]


@dataclass(frozen=True)
class Split:
    """How a file is cut: ``download.connections`` and ``download.min_segment``."""

    connections: int = 1
    min_segment: int = MIN_SEGMENT

    def plan(self, total: int) -> list[Segment]:
        return plan(total, self.connections, self.min_segment)

    def applies(self, rf: RemoteFile) -> bool:
        """Whether ``rf`` is fetched in segments: its size is known and makes two or more."""
        return self.connections > 1 and rf.bytes is not None and len(self.plan(rf.bytes)) > 1


def sidecar_path(part: Path) -> Path:
    return part.with_name(part.name + ".segments")


def discard(part: Path) -> None:
    """Remove a ``.part`` and its sidecar."""
    part.unlink(missing_ok=True)
    sidecar_path(part).unlink(missing_ok=True)


def _read_sidecar(part: Path, rf: RemoteFile) -> Optional[list[Segment]]:
    """The segments the sidecar records for this very file, or None (absent, unreadable, another file)."""
    try:
        doc = json.loads(sidecar_path(part).read_text(encoding="utf-8"))
        if doc["bytes"] != rf.bytes or doc["md5"] != rf.md5:
            return None
        segs = [Segment(int(a), int(b), int(d)) for a, b, d in doc["segments"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    at = 0
    for s in segs:  # contiguous, covering the file, each done within its segment
        if s.start != at or s.end <= s.start or not 0 <= s.done <= s.end - s.start:
            return None
        at = s.end
    return segs if at == rf.bytes else None


def _save(part: Path, rf: RemoteFile, done: list[tuple[int, int, int]]) -> None:
    doc = {"bytes": rf.bytes, "md5": rf.md5, "segments": done}
    atomic_write_text(sidecar_path(part), json.dumps(doc))


def contiguous_prefix(segs: list[Segment]) -> int:
    """Bytes from the start of the file that are all written."""
    at = 0
    for s in segs:
        at = s.start + s.done
        if not s.complete:
            break
    return at


def to_single_stream(part: Path, rf: RemoteFile) -> None:
    """Before fetching ``part`` as one stream (which appends at its end): cut a segmented
    ``.part`` to the prefix that is all written, and drop its sidecar."""
    if not sidecar_path(part).exists():
        return
    segs = _read_sidecar(part, rf)
    keep = contiguous_prefix(segs) if segs else 0
    if part.exists() and part.stat().st_size > keep:
        os.truncate(part, keep)
    sidecar_path(part).unlink(missing_ok=True)


def resume_state(part: Path, rf: RemoteFile, split: Split) -> list[Segment]:
    """The segments of ``part`` and what of each is already on disk: from the sidecar; from the
    size of a ``.part`` a one-stream attempt left (its bytes are a prefix); else a fresh plan."""
    assert rf.bytes is not None
    if part.exists():
        segs = _read_sidecar(part, rf)
        if segs is not None:
            return segs
        have = min(part.stat().st_size, rf.bytes) if not sidecar_path(part).exists() else 0
    else:
        have = 0
    segs = split.plan(rf.bytes)
    for s in segs:
        s.done = min(max(have - s.start, 0), s.end - s.start)
    if not have:
        part.unlink(missing_ok=True)
    return segs


class _Book:
    """What is written where; hashes the written prefix as it grows and saves the sidecar."""

    def __init__(self, fd: int, part: Path, rf: RemoteFile, segs: list[Segment]):
        self.fd, self.part, self.rf, self.segs = fd, part, rf, segs
        self.cond = threading.Condition()
        self.h = hashlib.md5() if rf.md5 else None
        self.hashed = 0
        self.finished = False
        self.hash_rest = True  # false when the transfer failed: its md5 is not wanted
        self.hash_seconds = 0.0  # spent hashing (page-cache reads included)
        self.tail_seconds = 0.0  # hashing left when the last byte had arrived

    def wrote(self, i: int, n: int) -> None:
        with self.cond:
            self.segs[i].done += n
            self.cond.notify()

    def finish(self, hash_rest: bool = True) -> None:
        with self.cond:
            self.finished = True
            self.hash_rest = hash_rest
            self.cond.notify()

    def _snapshot(self) -> list[tuple[int, int, int]]:
        return [(s.start, s.end, s.done) for s in self.segs]

    def run(self) -> None:
        last_save, t_end = time.monotonic(), None
        while True:
            with self.cond:
                self.cond.wait_for(
                    lambda: self.finished or (self.h is not None and contiguous_prefix(self.segs) > self.hashed),
                    timeout=max(0.0, last_save + SAVE_EVERY - time.monotonic()),
                )
                front, finished, snapshot = contiguous_prefix(self.segs), self.finished, self._snapshot()
            if finished and t_end is None:
                t_end = time.monotonic()
            if self.h is not None and self.hash_rest:
                self._hash_to(front)
            if finished or time.monotonic() - last_save >= SAVE_EVERY:
                os.fdatasync(self.fd)  # the sidecar never claims bytes that are not on disk
                _save(self.part, self.rf, snapshot)
                last_save = time.monotonic()
            if finished:
                if t_end is not None:
                    self.tail_seconds = time.monotonic() - t_end
                return

    def _hash_to(self, front: int) -> None:
        assert self.h is not None
        t0 = time.monotonic()
        while self.hashed < front:
            block = os.pread(self.fd, min(CHUNK, front - self.hashed), self.hashed)
            if not block:
                raise OSError(f"{self.part}: shorter than the bytes written to it")
            self.h.update(block)
            self.hashed += len(block)
        self.hash_seconds += time.monotonic() - t0

    def digest(self) -> Optional[str]:
        return self.h.hexdigest() if self.h is not None and self.hashed == self.rf.bytes else None


@dataclass
class _Job:
    url: str
    rf: RemoteFile
    policy: RetryPolicy
    log: RunLog
    progress: Optional[Callable[[int], None]]
    book: _Book
    open_url: Callable  # transfer.open_url: urlopen with the shared retry rules
    make_error: Callable[[str], Exception]
    cancel: threading.Event
    ranges_ok: threading.Event


def _open(job: _Job, seg: Segment):
    first, last = seg.start + seg.done, seg.end - 1
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Range": f"bytes={first}-{last}"}
    try:
        resp = job.open_url(job.url, headers, job.policy)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            raise RangeUnsupported(f"HTTP 416 to Range bytes={first}-{last}") from None
        raise job.make_error(f"HTTP {e.code} {e.reason}") from None
    cr = parse_content_range(resp.headers.get("Content-Range"))
    if resp.status != 206 or not cr or cr[:2] != (first, last) or cr[2] not in (None, job.rf.bytes):
        got = f"HTTP {resp.status}, Content-Range {resp.headers.get('Content-Range')!r}"
        resp.close()
        raise RangeUnsupported(f"asked for bytes {first}-{last}, got {got}")
    return resp


def _receive(job: _Job, i: int, resp) -> None:
    seg = job.book.segs[i]
    pos = seg.start + seg.done
    for block in read_blocks(resp, job.policy, pos):
        if job.cancel.is_set():
            return
        view = memoryview(block)[: seg.end - pos]
        while view:
            n = os.pwrite(job.book.fd, view, pos)
            pos += n
            view = view[n:]
            job.book.wrote(i, n)
            if job.progress:
                job.progress(n)
        if pos >= seg.end:
            return


def _segment(job: _Job, i: int, probe: bool) -> None:
    """Fetch segment ``i`` to its end, retrying as a whole file would. The probe segment's first
    answer decides for the others whether the server honours Range (``job.ranges_ok``)."""
    seg = job.book.segs[i]
    label = f"segment {i + 1}/{len(job.book.segs)} (bytes {seg.start}-{seg.end - 1})"
    give_up = GiveUp(lambda m: job.make_error(f"{label}: {m}"))
    if not probe:
        job.ranges_ok.wait()
    attempt = 0
    try:
        while not seg.complete and not job.cancel.is_set():
            attempt += 1
            try:
                with _open(job, seg) as resp:
                    job.ranges_ok.set()
                    _receive(job, i, resp)
                if not seg.complete and not job.cancel.is_set():
                    raise Retryable(f"short read: {seg.done} of {seg.end - seg.start} bytes")
            except Retryable as r:
                # the back-off ends early when another segment has failed
                wait_or_give_up(job.policy, attempt, r, job.log, f"{job.rf.name} {label}", give_up, job.cancel.wait)
    except BaseException:
        job.cancel.set()  # the other segments stop at their next block
        job.ranges_ok.set()
        raise


def fetch_segments(
    url: str,
    part: Path,
    rf: RemoteFile,
    policy: RetryPolicy,
    log: RunLog,
    progress: Optional[Callable[[int], None]],
    split: Split,
    open_url: Callable,
    make_error: Callable[[str], Exception],
) -> Optional[str]:
    """Fetch ``rf`` into ``part`` in segments, resuming what the sidecar records. Returns the md5
    of the whole file (None when ``rf`` has none). Raises RangeUnsupported (nothing more was
    written; fetch it as one stream) or ``make_error(message)`` when a segment gives up."""
    segs = resume_state(part, rf, split)
    _save(part, rf, [(s.start, s.end, s.done) for s in segs])  # before the first byte is written
    pending = [i for i, s in enumerate(segs) if not s.complete]
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    book = _Book(fd, part, rf, segs)
    job = _Job(url, rf, policy, log, progress, book, open_url, make_error, threading.Event(), threading.Event())
    resumed = sum(s.done for s in segs)
    log.write(
        f"{rf.name}: {len(segs)} segments over {len(pending)} connections"
        + (f", resuming with {resumed} bytes on disk" if resumed else "")
    )
    keeper = threading.Thread(target=book.run, name=f"segments:{rf.name}", daemon=True)
    keeper.start()
    errors: list[BaseException] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(pending)), thread_name_prefix="segment") as pool:
            futures = [pool.submit(_segment, job, i, n == 0) for n, i in enumerate(pending)]
            for f in futures:
                try:
                    f.result()
                except BaseException as e:  # noqa: BLE001 (the first one is raised below)
                    errors.append(e)
    finally:
        job.cancel.set()
        job.ranges_ok.set()
        book.finish(hash_rest=not errors)
        keeper.join()
        os.close(fd)
    if errors:
        raise errors[0]
    sidecar_path(part).unlink(missing_ok=True)  # complete: what is left to check is the md5
    log.write(
        f"{rf.name}: all segments in; md5 {book.hash_seconds:.2f} s, {book.tail_seconds:.2f} s after the last byte"
    )
    return book.digest()
