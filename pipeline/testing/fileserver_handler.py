"""The request side of :class:`pipeline.testing.fileserver.FileServer`: the HTTP server and request
handler, ``Range`` parsing (:func:`parse_range`), and the faults and how they are applied.

Files are served byte for byte as stored (never decoded, never compressed) with
``Content-Type: application/octet-stream``, ``Content-Length`` and ``Accept-Ranges: bytes``.
``Range: bytes=START-``, ``bytes=START-END`` and ``bytes=-SUFFIX`` are answered with 206 and
``Content-Range``; an unsatisfiable range with 416 and ``Content-Range: bytes */TOTAL``; a
multi-range or malformed ``Range`` header is ignored (200 with the whole file).

Faults (keywords of :meth:`pipeline.testing.fileserver.FileServer.set_fault`, keyed by the exact URL path,
query ignored):

``times=N``            apply to the first N matching requests only (default: every request).
``methods=("GET",)``   only requests with these methods match (default: any method).
``status=CODE``        answer CODE with a small text body instead of the file (any code but 200;
                       with ``body``, the status of that body).
``retry_after=S``      add ``Retry-After: S`` (typically with status 503 or 429).
``headers={...}``      extra response headers (e.g. ``{"Location": ...}`` with a 302).
``body=b"..."``        serve these bytes instead of the file, even if the file does not exist.
                       With status 200 (the default) they stand in for the file: Range and the
                       other faults apply to them. With another status they are sent whole.
``content_type=STR``   Content-Type of a ``body`` (default application/octet-stream).
``drop_after=N``       send the headers (full Content-Length) and N body bytes, then close
                       (N >= the body's length: the whole body, then close).
``reset=True``         with ``drop_after``: close with a TCP reset instead of a clean FIN.
``corrupt=True``       flip the byte in the middle of the file (same length, different md5);
                       an int instead of True flips the byte at that file offset.
``stall_after=N, stall_seconds=S``  send N body bytes, go silent for S seconds with the socket
                       open, then go on (or close at once if the server is stopping).
``delay_seconds=S``    wait S seconds before sending anything (slow first byte).
``ignore_range=True``  answer a Range request with 200 and the whole file.
``bad_content_range=True``  answer a Range request with 206 whose Content-Range starts at
                       START+1 (or START-1 for a one-byte range at the end); the body matches the
                       header it claims, not the range that was asked.
``throttle_bps=N``     bandwidth limit for this path, overriding the server-wide one.

``FileServer.link_bps`` (not a fault) limits all responses together, as one shared link would.

``times`` counts every matching request, whether or not the fault changes its answer (e.g. an
``ignore_range`` fault is used up by a request without Range).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
import traceback
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from .fileserver import FileServer

CHUNK = 64 * 1024

_FAULT_KEYS = {
    "times",
    "methods",
    "status",
    "retry_after",
    "headers",
    "body",
    "content_type",
    "drop_after",
    "reset",
    "corrupt",
    "stall_after",
    "stall_seconds",
    "delay_seconds",
    "ignore_range",
    "bad_content_range",
    "throttle_bps",
}


def _path_of(target: str) -> str:
    """URL path (percent-decoded, no query or fragment) of a request target or URL."""
    if target.startswith(("http://", "https://")):
        target = urlsplit(target).path or "/"
    target = target.split("#", 1)[0].split("?", 1)[0]
    return unquote(target)


def parse_range(header: Optional[str], total: int) -> Optional[Tuple[int, int]]:
    """Parse a ``Range`` header against a resource of ``total`` bytes.

    Returns ``None`` if the header should be ignored (absent, malformed, not bytes, or a
    multi-range), ``(start, end)`` inclusive for a satisfiable single range, and ``(-1, -1)``
    if the range is well-formed but unsatisfiable (416).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not sep or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # suffix range: the last N bytes
        if not last:
            return None
        n = int(last)
        if n == 0 or total == 0:
            return (-1, -1)
        return (max(0, total - n), total - 1)
    start = int(first)
    end = int(last) if last else total - 1
    if last and end < start:
        return None  # syntactically invalid: ignore
    if start >= total:
        return (-1, -1)
    return (start, min(end, total - 1))


class _Fault:
    def __init__(self, spec: Dict[str, Any]):
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise TypeError(f"unknown fault keyword(s): {', '.join(sorted(unknown))}")
        times = spec.get("times")
        if times is not None and (not isinstance(times, int) or times < 0):
            raise ValueError(f"times must be a non-negative int or None, not {times!r}")
        if "stall_seconds" in spec:
            spec.setdefault("stall_after", 0)
        elif "stall_after" in spec:
            raise ValueError("stall_after needs stall_seconds")
        for key in ("drop_after", "stall_after"):
            if key in spec and (not isinstance(spec[key], int) or spec[key] < 0):
                raise ValueError(f"{key} must be a non-negative int, not {spec[key]!r}")
        if "body" in spec and not isinstance(spec["body"], (bytes, bytearray)):
            raise TypeError("body must be bytes")
        if spec.get("methods") is not None:
            methods = spec["methods"]
            spec["methods"] = {m.upper() for m in ([methods] if isinstance(methods, str) else methods)}
        self.spec = spec
        self.remaining = times

    def get(self, key: str, default: Any = None) -> Any:
        return self.spec.get(key, default)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, owner: FileServer, family: int):
        self.address_family = family
        self.owner = owner
        super().__init__(address, handler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS look-up (getfqdn): skip it.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)):
            return
        text = traceback.format_exc()
        with self.owner._lock:
            self.owner.errors.append(text)
        if self.owner.verbose:
            sys.stderr.write(text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pipeline-fileserver/1"
    timeout = 60  # idle keep-alive connections and stuck clients

    server: _Server

    # -- plumbing ---------------------------------------------------------------------------

    def setup(self):
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def do_GET(self):
        self._serve(head=False)

    def do_HEAD(self):
        self._serve(head=True)

    def _update(self, **fields):
        with self.server.owner._lock:
            self._entry.update(fields)

    def _send_head(self, status: int, headers: List[Tuple[str, str]]):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self._update(status=status)

    def _abort(self, reset: bool = False):
        """Close the connection at once (no more bytes, no keep-alive)."""
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _simple(self, status: int, text: str, extra: List[Tuple[str, str]], head: bool):
        body = text.encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))] + extra
        self._send_head(status, headers)
        if not head:
            self.wfile.write(body)
            self._update(bytes_sent=len(body))

    # -- the request ------------------------------------------------------------------------

    def _serve(self, head: bool):
        owner = self.server.owner
        path = _path_of(self.path)
        self._entry = {
            "method": self.command,
            "path": path,
            "range": self.headers.get("Range"),
            "status": None,
            "bytes_sent": 0,
            "fault": False,
        }
        owner._begin(self._entry)
        try:
            self._respond(path, head)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except OSError:
            if owner._stopping.is_set():
                self.close_connection = True
            else:
                raise
        finally:
            owner._end()

    def _respond(self, path: str, head: bool):
        owner = self.server.owner
        fault = owner._take_fault(path, self.command)
        spec: Dict[str, Any] = dict(fault.spec) if fault else {}
        if fault:
            self._update(fault=True)

        delay = spec.get("delay_seconds")
        if delay:
            if owner._stopping.wait(delay):
                self._abort()
                return

        extra: List[Tuple[str, str]] = []
        if spec.get("retry_after") is not None:
            extra.append(("Retry-After", str(spec["retry_after"])))
        extra += [(str(k), str(v)) for k, v in (spec.get("headers") or {}).items()]
        status = spec.get("status")

        if "body" in spec:
            data = bytes(spec["body"])
            status = status or 200
            ctype = spec.get("content_type", "application/octet-stream")
            if status != 200:
                headers = [("Content-Type", ctype), ("Content-Length", str(len(data)))] + extra
                self._send_head(status, headers)
                if not head:
                    self._stream(_BytesSource(data), 0, len(data), spec)
                return
            source: _Source = _BytesSource(data)
            last_modified = None
        else:
            if status is not None and status != 200:
                try:
                    phrase = HTTPStatus(status).phrase
                except ValueError:
                    phrase = "Error"
                self._simple(status, f"{status} {phrase}\n", extra, head)
                return
            ctype = "application/octet-stream"
            local = owner._local_path(path)
            if isinstance(local, int):
                self._simple(local, f"{local} {HTTPStatus(local).phrase}\n", [], head)
                return
            try:
                fh = open(local, "rb")
            except OSError:
                self._simple(404, "404 Not Found\n", [], head)
                return
            source = _FileSource(fh)
            last_modified = formatdate(os.fstat(fh.fileno()).st_mtime, usegmt=True)

        try:
            total = source.total
            base = [("Content-Type", ctype), ("Accept-Ranges", "bytes")]
            if last_modified:
                base.append(("Last-Modified", last_modified))
            rng = None if spec.get("ignore_range") else parse_range(self.headers.get("Range"), total)
            if rng == (-1, -1):
                self._send_head(416, base + [("Content-Range", f"bytes */{total}"), ("Content-Length", "0")] + extra)
                return
            if rng is None:
                start, length, code = 0, total, 200
                base.append(("Content-Length", str(total)))
            else:
                start, end = rng
                if spec.get("bad_content_range"):
                    start = start + 1 if start < end or start == 0 else start - 1
                    end = max(end, start)
                length, code = end - start + 1, 206
                base += [("Content-Range", f"bytes {start}-{end}/{total}"), ("Content-Length", str(length))]
            self._send_head(code, base + extra)
            if head:
                return
            corrupt = spec.get("corrupt")
            if corrupt is True:
                source.flip = total // 2
            elif isinstance(corrupt, int) and not isinstance(corrupt, bool):
                source.flip = corrupt
            self._stream(source, start, length, spec)
        finally:
            source.close()

    def _stream(self, source: _Source, start: int, length: int, spec: Dict[str, Any]):
        owner = self.server.owner
        stopping = owner._stopping
        drop_after: Optional[int] = spec.get("drop_after")
        raw_stall = spec.get("stall_after")
        stall_after: int = length if raw_stall is None else raw_stall
        stall_seconds = spec.get("stall_seconds", 0)
        stalled = stall_after >= length
        sent = 0
        bucket_t0, bucket_base, bucket_bps = time.monotonic(), 0, None

        while True:
            if drop_after is not None and sent >= drop_after:
                self._abort(reset=bool(spec.get("reset")))
                return
            if sent >= length:
                break
            if not stalled and sent >= stall_after:
                stalled = True
                if stopping.wait(stall_seconds):
                    self._abort()
                    return
                bucket_t0, bucket_base = time.monotonic(), sent
            if stopping.is_set():
                self._abort()
                return

            bps = spec.get("throttle_bps") or owner.throttle_bps
            n = min(CHUNK, length - sent)
            if bps:
                bps = float(bps)
                n = min(n, max(1024, int(bps / 20)))
                now = time.monotonic()
                if bps != bucket_bps:
                    bucket_t0, bucket_base, bucket_bps = now, sent, bps
                due = bucket_t0 + (sent - bucket_base) / bps
                if now > due + 1.0:  # the client was slow: don't burst to catch up
                    bucket_t0, bucket_base = now, sent
                elif due > now and stopping.wait(due - now):
                    self._abort()
                    return
            else:
                bucket_bps = None
            if drop_after is not None:
                n = min(n, drop_after - sent)
            if not stalled:
                n = min(n, stall_after - sent)
            if owner.link_bps:  # the shared link, in slices of 1/20 s so responses take turns
                n = min(n, max(1024, int(float(owner.link_bps) / 20)))
                wait = owner._link_wait(n)
                if wait > 0 and stopping.wait(wait):
                    self._abort()
                    return
            data = source.read(start + sent, n)
            if not data:  # file shrank under us
                self._abort()
                return
            self.wfile.write(data)
            sent += len(data)
            self._update(bytes_sent=sent)
        if drop_after is not None:  # drop_after >= length: whole body, then close anyway
            self._abort(reset=bool(spec.get("reset")))


class _Source:
    total = 0
    flip: Optional[int] = None

    def read(self, offset: int, n: int) -> bytes:
        data = self._read(offset, n)
        if self.flip is not None and offset <= self.flip < offset + len(data):
            i = self.flip - offset
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        return data

    def _read(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def close(self):
        pass


class _BytesSource(_Source):
    def __init__(self, data: bytes):
        self.data = data
        self.total = len(data)

    def _read(self, offset: int, n: int) -> bytes:
        return self.data[offset : offset + n]


class _FileSource(_Source):
    def __init__(self, fh):
        self.fh = fh
        self.total = os.fstat(fh.fileno()).st_size

    def _read(self, offset: int, n: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(n)

    def close(self):
        self.fh.close()
