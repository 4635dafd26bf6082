"""HTTP details shared by file transfers and the ENA portal client: who we say we are, which
statuses are worth another attempt, ``Retry-After`` and ``Content-Range``, and reading a body."""

from __future__ import annotations

import email.utils
import http.client
import re
import socket
import ssl
import time
import urllib.parse
from typing import Iterator, Optional

from .retry import Retryable, RetryPolicy

CHUNK = 1 << 20


def connection_problem(e: BaseException) -> str:
    """Why a connection could not be made, in words: DNS, refused, TLS, timed out, reset, ..."""
    reason = getattr(e, "reason", e)
    if isinstance(reason, socket.gaierror):
        return f"DNS lookup failed ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error ({getattr(reason, 'reason', None) or reason})"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionResetError):
        return "connection reset by the server"
    return f"connection failed ({reason})"


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, to name a server in a message without quoting its whole URL."""
    return urllib.parse.urlsplit(url).netloc or url[:60]


#: HTTP statuses worth another attempt (the server is busy or briefly broken).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "rnaseq-batch-pipeline/0.1"


def retry_after(value: Optional[str]) -> Optional[float]:
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


def parse_content_range(value: Optional[str]):
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def read_blocks(resp, policy: RetryPolicy, at: int = 0) -> Iterator[bytes]:
    """Yield a response body's blocks as they arrive (so a ``.part`` grows as data comes). A
    silence of ``policy.stall_seconds`` or a dropped connection raises Retryable naming the byte."""
    done = at
    while True:
        try:
            block = resp.read1(CHUNK)
        except TimeoutError:
            raise Retryable(f"stalled: no data for {policy.stall_seconds:g} s at byte {done}") from None
        except (OSError, http.client.HTTPException) as e:
            raise Retryable(f"connection dropped at byte {done}: {e!r}") from None
        if not block:
            return
        done += len(block)
        yield block
