"""Streaming one file's HTTP body into a FIFO that a reader (kallisto) consumes: no byte of it is
ever written to disk.

The body goes through an md5 and a byte counter on its way into the FIFO. A dropped connection,
a stall or a busy server is retried with the same :class:`~pipeline.fetch.retry.RetryPolicy` as a
download to disk, resuming with ``Range`` from the next byte the reader has not had, so the
reader never sees the gap; a server that answers a resume with the whole file (200) has its
first bytes read again and dropped. Whether the bytes were the right ones (size, md5) is for the
caller to decide when the stream has ended (:func:`mismatch`): until then they are only a
candidate, and the reader's result is thrown away unless they match.

Which runs can be streamed at all is :func:`file_mode_reason`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..fifo import Cancelled, NoReader, open_for_writing, write_all
from ..model import RemoteFile, Run
from ..runlog import RunLog
from .http import read_blocks
from .retry import GiveUp, Retryable, RetryPolicy, wait_or_give_up
from .transfer import DownloadError, RangeNotSatisfiable, apply_mirrors, body_start, open_at


class ReaderGone(DownloadError):
    """The reader closed its end of the FIFO (or exited) before the body was through."""


@dataclass
class Streamed:
    """What one stream delivered: its URL, bytes, md5, attempts and seconds."""

    name: str
    url: str
    bytes: int
    md5: str
    attempts: int
    seconds: float


def file_mode_reason(run: Run, sources: Sequence[str], mirrors: dict, max_bp: Optional[int]) -> Optional[str]:
    """Why ``run`` is fetched to disk even in ``download.mode: stream``, or None when it is streamed.

    Only ENA FASTQ over HTTP(S) streams: the ``.sra`` route needs the file (fasterq-dump reads it,
    and its ``--stdout`` gives no split mates), a user's own files are already on disk, and
    ``download.max_bp`` cuts files on disk. A run whose metadata gives neither an md5 for every
    file nor a read count could not be verified once streamed, so it is not streamed either.
    """
    if "ena" not in sources:
        return "the .sra route needs the file on disk (download.sources has no ena)"
    if not run.files:
        return "no FASTQ listed, so its reads come from a .sra, which needs the file on disk"
    if len(run.files) not in (1, 2):
        return f"{len(run.files)} FASTQ files listed (one or a pair can be streamed)"
    for rf in run.files:
        scheme = urllib.parse.urlsplit(apply_mirrors(rf.url, mirrors)).scheme.lower()
        if scheme not in ("http", "https"):
            return f"{rf.name} is not fetched over HTTP(S) ({scheme or 'no scheme'})"
    if not all(rf.md5 for rf in run.files) and run.read_count is None:
        return "the metadata has neither an md5 for each file nor a read count, so a stream could not be verified"
    if max_bp and (run.base_count is None or run.base_count > max_bp):
        return "download.max_bp keeps only the first reads, which is done on files on disk"
    return None


def mismatch(rf: RemoteFile, got: Streamed) -> Optional[str]:
    """What is wrong with the bytes a stream delivered against the metadata (size, md5), or None."""
    if rf.bytes is not None and got.bytes != rf.bytes:
        return f"{got.url}: size mismatch: expected {rf.bytes} bytes, got {got.bytes}"
    if rf.md5 and got.md5.lower() != rf.md5.lower():
        return f"{got.url}: md5 mismatch: expected {rf.md5}, got {got.md5}"
    return None


def stream_into(
    rf: RemoteFile,
    fifo: Path,
    *,
    mirrors: Optional[dict] = None,
    policy: Optional[RetryPolicy] = None,
    log: Optional[RunLog] = None,
    cancel: Optional[threading.Event] = None,
    reader_alive: Callable[[], bool] = lambda: True,
    progress: Optional[Callable[[int], None]] = None,
) -> Streamed:
    """Send ``rf``'s body into the FIFO ``fifo`` (made by the caller), resuming dropped
    connections; close it when the body is through. Returns what was sent (not yet verified).

    Raises DownloadError when the body cannot be had (after ``policy``'s attempts, or an answer
    no retry will change), ReaderGone when the reader stops reading, fifo.Cancelled when
    ``cancel`` is set.
    """
    policy = policy or RetryPolicy()
    log = log or RunLog(None)
    cancel = cancel or threading.Event()
    url = apply_mirrors(rf.url, mirrors or {})
    label = f"{fifo.name} (streamed)"
    t0 = time.monotonic()
    sent = _Sent()
    attempt = 0
    give_up = GiveUp(lambda m: DownloadError(f"{url}: {m}"))
    try:
        fd = open_for_writing(fifo, cancel, reader_alive)
    except NoReader as e:
        raise ReaderGone(str(e)) from None
    try:
        while True:
            attempt += 1
            try:
                _attempt(url, rf, fd, sent, policy, cancel, progress)
                break
            except RangeNotSatisfiable:
                raise DownloadError(
                    f"{url}: the server's file is shorter than the {sent.done} bytes streamed"
                ) from None
            except Retryable as r:
                wait_or_give_up(policy, attempt, r, log, label, give_up, sleep=cancel.wait)
                if cancel.is_set():
                    raise Cancelled() from None
    except BrokenPipeError:
        raise ReaderGone(f"{url}: the reader stopped reading at byte {sent.done}") from None
    finally:
        os.close(fd)
    got = Streamed(rf.name, url, sent.done, sent.md5.hexdigest(), attempt, round(time.monotonic() - t0, 3))
    log.write(f"{label}: {got.bytes} bytes from {url} in {got.seconds:g} s (attempt {attempt})")
    return got


class _Sent:
    """The bytes passed to the reader so far, and their md5: kept across attempts."""

    def __init__(self) -> None:
        self.done = 0
        self.md5 = hashlib.md5()


def _attempt(
    url: str,
    rf: RemoteFile,
    fd: int,
    sent: _Sent,
    policy: RetryPolicy,
    cancel: threading.Event,
    progress: Optional[Callable[[int], None]],
) -> None:
    """One request from byte ``sent.done``, until the body is through (else Retryable). Every
    byte passed on is hashed and counted in ``sent``, so a failed attempt loses nothing."""
    if rf.bytes is not None and sent.done >= rf.bytes:
        return  # the connection dropped after the last byte: nothing is left to ask for
    with open_at(url, sent.done, policy) as resp:
        at = body_start(resp, sent.done, rf.bytes)
        skip = sent.done - at  # a 200 on a resume: what the reader has already had comes again
        try:
            for block in read_blocks(resp, policy, at):
                if cancel.is_set():
                    raise Cancelled()
                if skip:
                    cut = min(skip, len(block))
                    block, skip = block[cut:], skip - cut
                    if not block:
                        continue
                if rf.bytes is not None and sent.done + len(block) > rf.bytes:
                    raise DownloadError(f"{url}: the body is longer than the {rf.bytes} bytes the metadata gives")
                sent.md5.update(block)
                write_all(fd, block)
                sent.done += len(block)
                if progress:
                    progress(len(block))
        except Retryable as r:
            raise Retryable(f"{r}; resuming from byte {sent.done}", wait=r.wait) from None
    if skip or (rf.bytes is not None and sent.done < rf.bytes):
        raise Retryable(f"short read: {sent.done} of {rf.bytes} bytes; resuming from byte {sent.done}")
