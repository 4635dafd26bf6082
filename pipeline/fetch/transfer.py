"""Fetching files: HTTP(S) with Range resume, retries and verification; file:// by link or copy.

Every file is written to ``.NAME.part`` beside its final name and renamed only after its size and
md5 (when the metadata gives them) match. A failed verification deletes the partial file: a
corrupt download never reaches a later step.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from ..model import ExpectedFailure, RemoteFile, excerpt, file_name_problem
from ..runlog import RunLog
from . import segments
from .http import (
    CHUNK,
    RETRY_STATUSES,
    USER_AGENT,
    connection_problem,
    host_of,
    parse_content_range,
    read_blocks,
    retry_after,
)
from .retry import GiveUp, Retryable, RetryPolicy, wait_or_give_up

#: A local file name the pipeline will write: no folders, no leading dot, nothing to escape.
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class DownloadError(ExpectedFailure):
    """A file could not be obtained intact. The message names the URL and the reason."""


def apply_mirrors(url: str, mirrors: dict) -> str:
    """Rewrite ``url`` with the longest matching prefix in ``mirrors`` (prefix -> replacement)."""
    best = None
    for prefix in mirrors:
        if url.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return url if best is None else mirrors[best] + url[len(best) :]


def safe_name(name: str, fallback: str) -> str:
    """The local name of a file the metadata calls ``name``: ``name`` itself when it is a plain
    name (:data:`SAFE_NAME_RE`, under 200 characters), else ``fallback``: a name with blanks,
    ``+`` or non-ASCII letters is legal, but the pipeline writes only plain names.

    A name that is not a file of its own folder at all (empty, ``.``, ``..``, with ``/``, ``\\``
    or a control character: :func:`pipeline.model.file_name_problem`) is never renamed: reading
    the metadata rejects it, and should one come here anyway (a batch file edited by hand) it is a
    DownloadError naming it, which fails that run with the reason.
    """
    problem = file_name_problem(name)
    if problem:
        raise DownloadError(f"local file name {excerpt(name)} {problem}")
    return name if SAFE_NAME_RE.fullmatch(name) and len(name) < 200 else fallback


def md5_file(path, start_hash=None) -> str:
    h = start_hash or hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _verify(part: Path, rf: RemoteFile, url: str, digest: Optional[str]) -> None:
    size = part.stat().st_size
    if rf.bytes is not None and size != rf.bytes:
        raise DownloadError(f"{url}: size mismatch: expected {rf.bytes} bytes, got {size}")
    if rf.md5:
        got = digest or md5_file(part)
        if got.lower() != rf.md5.lower():
            raise DownloadError(f"{url}: md5 mismatch: expected {rf.md5}, got {got}")


def open_url(url: str, headers: dict, policy: RetryPolicy):
    """The response to a GET of ``url``. A connection that fails and the statuses worth another
    attempt raise Retryable; any other HTTP error status raises the HTTPError."""
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=policy.stall_seconds)
    except urllib.error.HTTPError as e:
        if e.code in RETRY_STATUSES:
            raise Retryable(f"HTTP {e.code}", wait=retry_after(e.headers.get("Retry-After"))) from None
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise Retryable(f"{host_of(url)}: {connection_problem(e)}") from None


class RangeNotSatisfiable(Retryable):
    """A server answered 416 to a request resuming from a byte: its file is shorter than that."""


def open_at(url: str, have: int, policy: RetryPolicy):
    """GET ``url`` from byte ``have`` (the whole file for 0). Returns the response, whose body
    starts where :func:`body_start` says. Raises Retryable (RangeNotSatisfiable for a 416 on a
    resume) or DownloadError for an answer no retry will change."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return open_url(url, headers, policy)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            raise RangeNotSatisfiable(f"HTTP 416 on resume from byte {have}", wait=0) from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None


def body_start(resp, have: int, total: Optional[int]) -> int:
    """The file offset of the first byte of ``resp``'s body, asked from byte ``have``: ``have``
    for a 206 whose ``Content-Range`` starts there (and names ``total``, when known), 0 for a 200
    (the server sent the whole file). Raises Retryable for a 206 anywhere else or another status."""
    if have and resp.status == 206:
        cr = parse_content_range(resp.headers.get("Content-Range"))
        if not cr or cr[0] != have or (total is not None and cr[2] not in (None, total)):
            raise Retryable(
                f"206 with Content-Range {resp.headers.get('Content-Range')!r} not starting at byte {have}", wait=0
            )
        return have
    if resp.status != 200:
        raise Retryable(f"unexpected HTTP {resp.status}")
    return 0


def _http_attempt(url: str, part: Path, rf: RemoteFile, policy: RetryPolicy, progress) -> Optional[str]:
    """One transfer attempt into ``part``, resuming from its current size. Raises Retryable.

    Returns the md5 of the whole ``part`` when it was computed on the way (the blocks are hashed as
    they arrive, after the bytes already on disk), else None and the caller hashes the file.
    """
    segments.to_single_stream(part, rf)  # a segmented .part keeps only its all-written prefix
    have = part.stat().st_size if part.exists() else 0
    if rf.bytes is not None and have > rf.bytes:
        part.unlink()
        have = 0
    if rf.bytes is not None and have == rf.bytes:
        return None
    try:
        resp = open_at(url, have, policy)
    except RangeNotSatisfiable as r:
        part.unlink()  # our partial file is longer than the server's: start over
        raise Retryable(f"{r}; restarting", wait=0) from None
    with resp:
        try:
            have = body_start(resp, have, rf.bytes)
        except Retryable as r:
            if have:
                part.unlink()
                raise Retryable(f"{r}; restarting", wait=0) from None
            raise
        mode = "ab" if have else "wb"
        h = hashlib.md5() if rf.md5 else None
        if h is not None and have:
            md5_file(part, h)  # the bytes already on disk, then the new ones as they come
        with open(part, mode) as out:
            done = have
            for block in read_blocks(resp, policy, have):
                out.write(block)
                if h is not None:
                    h.update(block)
                done += len(block)
                if rf.bytes is not None and done > rf.bytes:
                    break
                if progress:
                    progress(len(block))
        if rf.bytes is not None and done < rf.bytes:
            raise Retryable(f"short read: {done} of {rf.bytes} bytes")
    return h.hexdigest() if h is not None else None


_ONE_STREAM = "one stream"


def _segmented_attempt(url, part: Path, rf: RemoteFile, policy, log: RunLog, progress, split, label: str):
    """:func:`segments.fetch_segments`; ``_ONE_STREAM`` when the server ignores Range (the
    ``.part`` is then removed: a one-stream attempt starts over)."""
    try:
        return segments.fetch_segments(
            url, part, rf, policy, log, progress, split, open_url, lambda m: DownloadError(f"{url}: {m}")
        )
    except segments.RangeUnsupported as e:
        log.write(f"{label}: the server does not serve byte ranges ({e}); one stream instead")
        segments.discard(part)
        return _ONE_STREAM


def _fetch_local(path: Path, part: Path) -> None:
    if not path.is_file():
        raise DownloadError(f"{path}: local file not found")
    try:
        os.link(path, part)  # no copy when on the same filesystem; deleting the link keeps the source
    except OSError:
        shutil.copyfile(path, part)


def fetch(
    rf: RemoteFile,
    dest: Path,
    mirrors: Optional[dict] = None,
    policy: Optional[RetryPolicy] = None,
    log: Optional[RunLog] = None,
    progress: Optional[Callable[[int], None]] = None,
    split: Optional[segments.Split] = None,
) -> dict:
    """Fetch ``rf`` to ``dest`` (verified), resuming a ``.part`` left by an earlier attempt.

    With ``split`` (``download.connections``), a file of known size big enough for two segments
    comes over several connections at once (:mod:`pipeline.fetch.segments`), or as one stream
    when the server ignores Range.

    Returns {"path", "bytes", "attempts", "url"}; raises DownloadError naming the URL and reason.
    """
    policy = policy or RetryPolicy()
    log = log or RunLog(None)
    url = apply_mirrors(rf.url, mirrors or {})
    dest = Path(dest)
    part = dest.with_name(f".{dest.name}.part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            _verify(dest, rf, url, None)
            log.write(f"{dest.name}: already present and verified")
            return {"path": str(dest), "bytes": dest.stat().st_size, "attempts": 0, "url": url}
        except DownloadError as e:
            log.write(f"{dest.name}: present but {e}; fetching again")
            dest.unlink()
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    attempt = 0
    give_up = GiveUp(lambda m: DownloadError(f"{url}: {m}"))
    md5_retry_done = False
    while True:
        attempt += 1
        digest = None
        try:
            if scheme == "file":
                if part.exists():
                    part.unlink()
                _fetch_local(Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)), part)
            elif scheme in ("http", "https") and split is not None and split.applies(rf):
                digest = _segmented_attempt(url, part, rf, policy, log, progress, split, dest.name)
                if digest is _ONE_STREAM:
                    split, attempt = None, attempt - 1
                    continue
            elif scheme in ("http", "https"):
                digest = _http_attempt(url, part, rf, policy, progress)
            else:
                raise DownloadError(f"{url}: unsupported URL scheme '{scheme}' (http, https and file are)")
            try:
                _verify(part, rf, url, digest)
            except DownloadError as e:
                segments.discard(part)
                if scheme != "file" and not md5_retry_done:
                    md5_retry_done = True  # one clean retry: a resumed transfer may have joined two versions
                    log.write(f"{dest.name}: attempt {attempt}: {e}; retrying once from scratch")
                    continue
                raise
            os.replace(part, dest)
            size = dest.stat().st_size
            log.write(f"{dest.name}: ok, {size} bytes from {url} (attempt {attempt})")
            return {"path": str(dest), "bytes": size, "attempts": attempt, "url": url}
        except Retryable as r:
            wait_or_give_up(policy, attempt, r, log, dest.name, give_up)
        except DownloadError as e:
            log.write(f"{dest.name}: {e}")
            segments.discard(part)
            raise
