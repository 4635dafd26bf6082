"""A small, real HTTP file server on loopback, with Range support and injectable faults.

Used by the offline demo (to serve a directory as if it were the archive), by the test-suite
(to play a hostile archive) and by the benchmarks (throttled bandwidth). Standard library only.

    with FileServer(root) as server:
        server.set_fault("/vol1/fastq/DRR900/DRR900001/DRR900001_1.fastq.gz", drop_after=1000, times=1)
        url = server.url + "/vol1/fastq/DRR900/DRR900001/DRR900001_1.fastq.gz"
        ...
        server.requests  # [{"method", "path", "range", "status", "bytes_sent", "fault"}, ...]

How files are served (Range, status codes) and the fault keywords of :meth:`FileServer.set_fault`
are described in :mod:`pipeline.fileserver_handler`, which holds the request handler.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional

# Defined in fileserver_handler, re-exported (see __all__) for callers of pipeline.testing.fileserver.
from .fileserver_handler import _Fault, _Handler, _path_of, _Server, parse_range

__all__ = ["FileServer", "main", "parse_range"]


def _check_loopback(host: str) -> str:
    """Return the address to bind for ``host`` if it is a loopback address, else ValueError."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"FileServer binds only to loopback addresses, not {host!r}") from None
    if not addr.is_loopback:
        raise ValueError(f"FileServer binds only to loopback addresses, not {host!r}")
    return str(addr)


class FileServer:
    """HTTP file server for ``root`` on a loopback address, run in background threads.

    ``port=0`` picks a free port. ``throttle_bps`` limits each response to that many bytes per
    second (None or 0: unlimited); it may be changed at any time, also mid-transfer.
    ``link_bps`` limits all responses together (one shared link: concurrent responses share it
    in turns), on top of any ``throttle_bps``; None or 0: no shared limit.
    """

    def __init__(
        self,
        root,
        host: str = "127.0.0.1",
        port: int = 0,
        throttle_bps: Optional[float] = None,
        verbose: bool = False,
        link_bps: Optional[float] = None,
    ):
        self.root = os.path.realpath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise ValueError(f"FileServer root is not a directory: {root}")
        self.host = _check_loopback(host)
        self._requested_port = int(port)
        self.throttle_bps = throttle_bps
        self.link_bps = link_bps
        self._link_free_at = 0.0  # monotonic time when the shared link has sent what was booked
        self.verbose = verbose
        self.errors: List[str] = []  # tracebacks of unexpected handler errors
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._log: List[Dict[str, Any]] = []
        self._faults: Dict[str, _Fault] = {}
        self._connections: set = set()
        self._stopping = threading.Event()
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> FileServer:
        if self._httpd is not None:
            raise RuntimeError("FileServer already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._stopping.clear()
        self._httpd = _Server((self.host, self._requested_port), _Handler, self, family)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FileServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving. Returns promptly, even with stalled or throttled transfers running."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # wake handlers blocked on idle keep-alive reads or slow clients
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FileServer:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FileServer not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- faults -----------------------------------------------------------------------------

    def set_fault(self, path: str, **fault: Any) -> None:
        """Inject a fault for requests to the exact URL ``path`` (replaces any fault there).

        ``path`` may also be a full URL of this server. See :mod:`pipeline.fileserver_handler`
        for the keywords.
        """
        key = _path_of(path)
        if not key.startswith("/"):
            raise ValueError(f"fault path must start with '/': {path!r}")
        f = _Fault(dict(fault))
        with self._lock:
            self._faults[key] = f

    def clear_faults(self, path: Optional[str] = None) -> None:
        """Remove the fault on ``path``, or all faults."""
        with self._lock:
            if path is None:
                self._faults.clear()
            else:
                self._faults.pop(_path_of(path), None)

    def _take_fault(self, path: str, method: str) -> Optional[_Fault]:
        with self._lock:
            f = self._faults.get(path)
            if f is None:
                return None
            methods = f.get("methods")
            if methods is not None and method not in methods:
                return None
            if f.remaining is not None:
                if f.remaining <= 0:
                    return None
                f.remaining -= 1
            return f

    def _link_wait(self, n: int) -> float:
        """Book ``n`` bytes on the shared link (``link_bps``); return the seconds to wait before
        sending them. An idle link does not save up: bookings start from now at the earliest."""
        bps = self.link_bps
        if not bps:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._link_free_at)
            self._link_free_at = start + n / float(bps)
            return start - now

    # -- request log ------------------------------------------------------------------------

    @property
    def requests(self) -> List[Dict[str, Any]]:
        """Snapshot of the request log, oldest first: dicts with method, path, range, status,
        bytes_sent and fault (whether a fault matched). ``bytes_sent`` of a response still in
        flight may lag; :meth:`wait_idle` first for exact numbers."""
        with self._lock:
            return [dict(e) for e in self._log]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered. Returns False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _begin(self, entry: Dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)
            self._in_flight += 1

    def _end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _track(self, conn, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- file system ------------------------------------------------------------------------

    def _local_path(self, path: str):
        """Local file for a URL path, or an HTTP status (403/404) to answer instead."""
        if not path.startswith("/") or path.startswith("//") or "\x00" in path or "\\" in path:
            return 403
        parts = path[1:].split("/")
        if any(p in ("..", ".") for p in parts):
            return 403
        local = os.path.realpath(os.path.join(self.root, *[p for p in parts if p]))
        if local != self.root and not local.startswith(self.root + os.sep):
            return 403  # e.g. a symlink pointing out of root
        if not os.path.isfile(local):
            return 404
        return local


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.fileserver",
        description="Serve a directory over HTTP on loopback, with Range support.",
    )
    parser.add_argument("root", help="directory to serve")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    parser.add_argument("--throttle-bps", type=float, default=None, help="limit each response to N bytes per second")
    parser.add_argument("--link-bps", type=float, default=None, help="limit all responses together to N bytes/s")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    try:
        server = FileServer(
            args.root, host=args.host, port=args.port, throttle_bps=args.throttle_bps, verbose=args.verbose
        )
        server.link_bps = args.link_bps
        server.start()
    except (ValueError, OSError) as e:
        print(f"fileserver: {e}", file=sys.stderr)
        return 2

    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"{server.url} (serving {server.root}; stop with Ctrl-C)", flush=True)
    try:
        while not done.wait(0.1):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
