"""Fetching files: HTTP(S) with Range resume, retries and verification; file:// by link or copy.

Every file is written to ``.NAME.part`` beside its final name and renamed only after its size and
md5 (when the metadata gives them) match. A failed verification deletes the partial file: a
corrupt download never reaches a later step.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import random
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .model import RemoteFile
from .runlog import RunLog

CHUNK = 1 << 20
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: HTTP statuses worth another attempt (the server is busy or briefly broken).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "rnaseq-batch-pipeline/0.1"


class DownloadError(Exception):
    """A file could not be obtained intact. The message names the URL and the reason."""


class Retryable(Exception):
    """A transfer attempt failed in a way another attempt may not (``wait``: a server's hint)."""

    def __init__(self, reason: str, wait: Optional[float] = None):
        super().__init__(reason)
        self.wait = wait


@dataclass
class RetryPolicy:
    attempts: int = 6  # transfers tried per file before giving up
    backoff_base: float = 2.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 120.0
    stall_seconds: float = 60.0  # no bytes for this long aborts the attempt (then resumes)
    max_retry_after: float = 600.0  # cap on a server's Retry-After

    def delay(self, attempt: int, hinted: Optional[float] = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: capped exponential back-off with jitter."""
        if hinted is not None:
            return min(max(hinted, 0.0), self.max_retry_after)
        base = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return base * (0.5 + random.random() / 2)


def wait_or_give_up(policy: RetryPolicy, attempt: int, why: Retryable, log: RunLog, label: str,
                    give_up: Callable[[str], Exception]) -> None:
    """After attempt ``attempt`` failed with ``why``: raise ``give_up(message)`` when it was the
    last one, else log and sleep the back-off (or the server's hint) before the next."""
    if attempt >= policy.attempts:
        log.write(f"{label}: attempt {attempt}: {why}; giving up")
        raise give_up(f"failed after {attempt} attempts; last: {why}") from None
    wait = policy.delay(attempt, why.wait)
    log.write(f"{label}: attempt {attempt}: {why}; retrying in {wait:.1f} s")
    time.sleep(wait)


def apply_mirrors(url: str, mirrors: dict) -> str:
    """Rewrite ``url`` with the longest matching prefix in ``mirrors`` (prefix -> replacement)."""
    best = None
    for prefix in mirrors:
        if url.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return url if best is None else mirrors[best] + url[len(best):]


def safe_name(name: str, fallback: str) -> str:
    return name if SAFE_NAME_RE.match(name or "") and len(name) < 200 else fallback


def md5_file(path, start_hash=None) -> str:
    h = start_hash or hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _parse_content_range(value: Optional[str]):
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def _verify(part: Path, rf: RemoteFile, url: str, digest: Optional[str]) -> None:
    size = part.stat().st_size
    if rf.bytes is not None and size != rf.bytes:
        raise DownloadError(f"{url}: size mismatch: expected {rf.bytes} bytes, got {size}")
    if rf.md5:
        got = digest or md5_file(part)
        if got.lower() != rf.md5.lower():
            raise DownloadError(f"{url}: md5 mismatch: expected {rf.md5}, got {got}")


def _http_attempt(url: str, part: Path, rf: RemoteFile, policy: RetryPolicy, progress) -> Optional[str]:
    """One transfer attempt into ``part``, resuming from its current size. Raises Retryable.

    Returns the md5 of the whole ``part`` when it was computed on the way (the blocks are hashed as
    they arrive, after the bytes already on disk), else None and the caller hashes the file.
    """
    have = part.stat().st_size if part.exists() else 0
    if rf.bytes is not None and have > rf.bytes:
        part.unlink()
        have = 0
    if rf.bytes is not None and have == rf.bytes:
        return None
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=policy.stall_seconds)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            part.unlink()  # our partial file is longer than the server's: start over
            raise Retryable(f"HTTP 416 on resume from byte {have}; restarting", wait=0)
        if e.code in RETRY_STATUSES:
            raise Retryable(f"HTTP {e.code}", wait=_retry_after(e.headers.get("Retry-After")))
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise Retryable(f"connection failed: {reason}")
    with resp:
        mode = "ab"
        h = hashlib.md5() if rf.md5 else None
        if have:
            if resp.status == 206:
                cr = _parse_content_range(resp.headers.get("Content-Range"))
                if not cr or cr[0] != have or (rf.bytes is not None and cr[2] not in (None, rf.bytes)):
                    part.unlink()
                    raise Retryable(f"206 with Content-Range {resp.headers.get('Content-Range')!r} "
                                    f"not starting at byte {have}; restarting", wait=0)
            else:  # 200: the server sent the whole file, start over
                mode, have = "wb", 0
        elif resp.status != 200:
            raise Retryable(f"unexpected HTTP {resp.status}")
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


def read_blocks(resp, policy: RetryPolicy, at: int = 0):
    """Yield a response body's blocks as they arrive (so a ``.part`` grows as data comes). A
    silence of ``policy.stall_seconds`` or a dropped connection raises Retryable naming the byte."""
    done = at
    while True:
        try:
            block = resp.read1(CHUNK)
        except socket.timeout:
            raise Retryable(f"stalled: no data for {policy.stall_seconds:g} s at byte {done}")
        except (OSError, http.client.HTTPException) as e:
            raise Retryable(f"connection dropped at byte {done}: {e!r}")
        if not block:
            return
        done += len(block)
        yield block


def _fetch_local(path: Path, part: Path) -> None:
    if not path.is_file():
        raise DownloadError(f"{path}: local file not found")
    try:
        os.link(path, part)  # no copy when on the same filesystem; deleting the link keeps the source
    except OSError:
        shutil.copyfile(path, part)


def fetch(rf: RemoteFile, dest: Path, mirrors: Optional[dict] = None, policy: Optional[RetryPolicy] = None,
          log: Optional[RunLog] = None, progress: Optional[Callable[[int], None]] = None) -> dict:
    """Fetch ``rf`` to ``dest`` (verified), resuming a ``.part`` left by an earlier attempt.

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
    md5_retry_done = False
    while True:
        attempt += 1
        digest = None
        try:
            if scheme == "file":
                if part.exists():
                    part.unlink()
                _fetch_local(Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)), part)
            elif scheme in ("http", "https"):
                digest = _http_attempt(url, part, rf, policy, progress)
            else:
                raise DownloadError(f"{url}: unsupported URL scheme '{scheme}' (http, https and file are)")
            try:
                _verify(part, rf, url, digest)
            except DownloadError as e:
                part.unlink(missing_ok=True)
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
            wait_or_give_up(policy, attempt, r, log, dest.name, lambda m: DownloadError(f"{url}: {m}"))
        except DownloadError as e:
            log.write(f"{dest.name}: {e}")
            part.unlink(missing_ok=True)
            raise
