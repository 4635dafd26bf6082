#!/usr/bin/env python3
"""Our HTTP client (pipeline.fetch.transfer.fetch) against curl, side by side, on a loopback server.

    .venv/bin/python bench/download_bench.py [--size-mb 200] [--files 3] [--repeats 3] [--out bench/out]

Random (incompressible) files are served by pipeline.fileserver.FileServer on 127.0.0.1, by
default in a separate process so that the server does not share a GIL with our client.

A  clean downloads, interleaved per file (our fetch with size+md5 verification, our fetch with
   size only, curl), median MB/s per tool and ratios; curl's output is md5-checked afterwards and
   that pass is timed too ("curl, then md5").
B  the server drops the connection after every quarter of the file, 3 times: our fetch (resumes
   with Range) vs curl --retry ... -C - (curl's own retry) vs curl -C - re-run by us until it
   succeeds. Wall time, back-off sleeping, requests, bytes on the wire, md5 of the result.
C  a throttled server (per-response limit), 4 files at once: 4 threads of our fetch vs 4 curl
   processes; aggregate MB/s.
M  md5 speed on this machine, and variants of our read loop (chunk size, readinto into a reusable
   buffer, md5 while receiving) written here with the same urllib calls as pipeline/fetch/transfer.py.

MB = 10**6 bytes throughout. Prints a plain-text table and writes the same figures (plus every
sample) to OUT/download_bench.json. Temporary files go to a folder under OUT and are removed.
Only 127.0.0.1 is contacted; subprocesses get argument lists, never shell strings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.fetch import http as download  # noqa: E402
from pipeline.fetch.retry import RetryPolicy  # noqa: E402
from pipeline.fetch.transfer import DownloadError, fetch, md5_file  # noqa: E402
from pipeline.model import RemoteFile  # noqa: E402
from pipeline.runlog import RunLog  # noqa: E402
from pipeline.testing.fileserver import FileServer  # noqa: E402

MB = 1_000_000
GEN_BLOCK = 4 << 20
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


# -- the server, in this process or in a child process -------------------------------------------


def _server_child(root: str, conn) -> None:
    """Child process: run a FileServer and answer calls sent through ``conn``."""
    server = FileServer(root).start()
    conn.send(server.url)
    calls = {"set_fault", "clear_faults", "clear_requests", "wait_idle"}
    while True:
        try:
            op, args, kwargs = conn.recv()
        except EOFError:
            break
        if op == "stop":
            break
        try:
            if op == "requests":
                result = server.requests
            elif op == "set_throttle":
                server.throttle_bps = args[0]
                result = None
            elif op == "set_link":
                server.link_bps = args[0]
                result = None
            elif op in calls:
                result = getattr(server, op)(*args, **kwargs)
            else:
                raise ValueError(f"unknown call {op!r}")
            conn.send(("ok", result))
        except Exception as e:  # noqa: BLE001 (sent back to the parent)
            conn.send(("error", repr(e)))
    server.stop()
    try:
        conn.send(("ok", None))
    except OSError:
        pass


class ChildServer:
    """A FileServer in a separate process (its own GIL), driven through a pipe."""

    where = "a separate process"

    def __init__(self, root: Path):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_server_child, args=(str(root), child_conn), daemon=True)
        self._proc.start()
        child_conn.close()
        try:
            if not self._conn.poll(30):
                raise EOFError
            self.url = self._conn.recv()
        except EOFError:
            self._proc.kill()
            raise RuntimeError("the file server process did not start") from None
        self._lock = threading.Lock()

    def _call(self, op, *args, **kwargs):
        with self._lock:
            self._conn.send((op, args, kwargs))
            status, result = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"file server: {op}: {result}")
        return result

    def set_fault(self, path, **fault):
        return self._call("set_fault", path, **fault)

    def clear_faults(self):
        return self._call("clear_faults")

    def clear_requests(self):
        return self._call("clear_requests")

    def wait_idle(self, timeout=10.0):
        return self._call("wait_idle", timeout)

    def requests(self):
        return self._call("requests")

    def set_throttle(self, bps):
        return self._call("set_throttle", bps)

    def set_link(self, bps):
        return self._call("set_link", bps)

    def stop(self):
        try:
            self._conn.send(("stop", (), {}))
            self._conn.poll(10)
        except OSError:
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)


class ThreadServer:
    """The FileServer in this process (shares the GIL with our client: --server thread)."""

    where = "this process (shares the GIL with our client)"

    def __init__(self, root: Path):
        self._server = FileServer(root).start()
        self.url = self._server.url

    def set_fault(self, path, **fault):
        self._server.set_fault(path, **fault)

    def clear_faults(self):
        self._server.clear_faults()

    def clear_requests(self):
        self._server.clear_requests()

    def wait_idle(self, timeout=10.0):
        return self._server.wait_idle(timeout)

    def requests(self):
        return self._server.requests

    def set_throttle(self, bps):
        self._server.throttle_bps = bps

    def set_link(self, bps):
        self._server.link_bps = bps

    def stop(self):
        self._server.stop()


# -- test files -----------------------------------------------------------------------------------


@dataclass
class TestFile:
    path: Path
    url_path: str
    size: int
    md5: str


def make_file(path: Path, size: int) -> TestFile:
    h = hashlib.md5()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(GEN_BLOCK, left))
            fh.write(block)
            h.update(block)
            left -= len(block)
    return TestFile(path, "/" + path.name, size, h.hexdigest())


# -- one download each way ------------------------------------------------------------------------


@dataclass
class RecordingPolicy(RetryPolicy):
    """RetryPolicy that remembers every back-off delay fetch() asked for (and then slept)."""

    slept: List[float] = field(default_factory=list)

    def delay(self, attempt, hinted=None):
        d = super().delay(attempt, hinted)
        self.slept.append(d)
        return d


def clear_dest(dest: Path) -> None:
    dest.unlink(missing_ok=True)
    dest.with_name(f".{dest.name}.part").unlink(missing_ok=True)


def run_ours(url: str, tf: TestFile, dest: Path, with_md5: bool = True, policy=None, log=None) -> dict:
    clear_dest(dest)
    rf = RemoteFile(url=url, name=dest.name, md5=tf.md5 if with_md5 else None, bytes=tf.size)
    policy = policy or RecordingPolicy(backoff_base=0.05)
    t0 = time.perf_counter()
    try:
        info = fetch(rf, dest, None, policy, log)
        ok, error, attempts = True, None, info["attempts"]
    except DownloadError as e:
        ok, error, attempts = False, str(e), None
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "ok": ok,
        "error": error,
        "attempts": attempts,
        "backoff_s": sum(policy.slept) if isinstance(policy, RecordingPolicy) else None,
    }


def run_curl(cmd: List[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "returncode": proc.returncode, "stderr": proc.stderr.strip()}


def timed_md5(path: Path):
    t0 = time.perf_counter()
    digest = md5_file(path)
    return digest, time.perf_counter() - t0


def curl_version() -> Optional[tuple]:
    exe = shutil.which("curl")
    if not exe:
        return None
    out = subprocess.run([exe, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    m = re.match(r"curl (\d+)\.(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec=".0f", none="-"):
    return none if value is None else format(value, spec)


# -- scenarios ------------------------------------------------------------------------------------


def scenario_a(server, files, repeats, dl: Path, have_curl: bool) -> dict:
    variants = ["ours", "curl", "ours_nomd5"] if have_curl else ["ours", "ours_nomd5"]
    samples = []
    failures = []
    for r in range(repeats):
        for i, tf in enumerate(files):
            k = (r * len(files) + i) % len(variants)
            order = variants[k:] + variants[:k]  # rotate so no tool always goes first
            url = server.url + tf.url_path
            for v in order:
                dest = dl / f"a_{v}.bin"
                if v == "curl":
                    clear_dest(dest)
                    res = run_curl(["curl", "-sS", "--fail", "-o", str(dest), url])
                    ok = res["returncode"] == 0
                    digest, md5_s = timed_md5(dest) if ok else (None, None)
                    res.update(ok=ok and digest == tf.md5, md5_seconds=md5_s)
                else:
                    res = run_ours(url, tf, dest, with_md5=(v == "ours"))
                res.update(variant=v, file=tf.path.name, repeat=r, bytes=tf.size, mbps=tf.size / MB / res["seconds"])
                if v == "curl" and res.get("md5_seconds") is not None:
                    res["mbps_with_md5"] = tf.size / MB / (res["seconds"] + res["md5_seconds"])
                if not res["ok"]:
                    failures.append(f"{v} {tf.path.name}: {res.get('error') or res.get('stderr')}")
                samples.append(res)
                clear_dest(dest)

    def rows(v, key="mbps"):
        return [s[key] for s in samples if s["variant"] == v and s["ok"] and key in s]

    summary = {
        "ours_mbps": med(rows("ours")),
        "ours_nomd5_mbps": med(rows("ours_nomd5")),
        "curl_mbps": med(rows("curl")) if have_curl else None,
        "curl_then_md5_mbps": med(rows("curl", "mbps_with_md5")) if have_curl else None,
        "ours_s_per_file": med([s["seconds"] for s in samples if s["variant"] == "ours" and s["ok"]]),
        "ours_nomd5_s_per_file": med([s["seconds"] for s in samples if s["variant"] == "ours_nomd5" and s["ok"]]),
        "curl_s_per_file": med([s["seconds"] for s in samples if s["variant"] == "curl" and s["ok"]]),
        "n_per_tool": len(files) * repeats,
    }
    c = summary["curl_mbps"]
    summary["ratio_ours_vs_curl"] = summary["ours_mbps"] / c if c and summary["ours_mbps"] else None
    summary["ratio_ours_nomd5_vs_curl"] = summary["ours_nomd5_mbps"] / c if c and summary["ours_nomd5_mbps"] else None
    cm = summary["curl_then_md5_mbps"]
    summary["ratio_ours_vs_curl_then_md5"] = summary["ours_mbps"] / cm if cm and summary["ours_mbps"] else None
    a, b = summary["ours_s_per_file"], summary["ours_nomd5_s_per_file"]
    summary["md5_share_of_ours"] = (a - b) / a if a and b else None
    return {"summary": summary, "failures": failures, "samples": samples}


def _wire(server, url_path: str) -> dict:
    server.wait_idle()
    reqs = [q for q in server.requests() if q["path"] == url_path]
    return {
        "requests": len(reqs),
        "wire_bytes": sum(q["bytes_sent"] or 0 for q in reqs),
        "log": [{k: q[k] for k in ("range", "status", "bytes_sent", "fault")} for q in reqs],
    }


def scenario_b(server, tf: TestFile, runs: int, drops: int, dl: Path, work: Path, cv) -> dict:
    drop_after = -(-tf.size // (drops + 1))  # ceil(size / (drops+1)): drops+1 pieces
    url = server.url + tf.url_path
    retry_ok = cv is not None and cv >= (7, 71, 0)
    quiet = ["-S", "--no-progress-meter"] if cv is not None and cv >= (7, 67, 0) else ["-sS"]
    curl_retry_cmd = (
        ["curl"]
        + quiet
        + ["--fail", "--retry", "5", "--retry-delay", "0"]
        + (["--retry-all-errors"] if retry_ok else [])
        + ["-C", "-"]
    )
    tools = ["ours"] + (["curl_retry", "curl_loop"] if cv is not None else [])
    samples = []
    for r in range(runs):
        for tool in tools:
            dest = dl / f"b_{tool}.bin"
            clear_dest(dest)
            server.clear_faults()
            server.set_fault(tf.url_path, drop_after=drop_after, times=drops)
            server.clear_requests()
            note = ""
            if tool == "ours":
                log_path = work / f"b_ours_{r}.log"
                policy = RecordingPolicy(backoff_base=0.05)
                res = run_ours(url, tf, dest, True, policy, RunLog(log_path))
                res["backoff_source"] = "measured (RetryPolicy.delay)"
                res["runlog"] = log_path.read_text().splitlines() if log_path.exists() else []
                final = dest
            elif tool == "curl_retry":
                res = run_curl(curl_retry_cmd + ["-o", str(dest), url])
                waits = [int(w) for w in re.findall(r"Will retry in (\d+) seconds?", res["stderr"])]
                thrown = [int(b) for b in re.findall(r"Throwing away (\d+) bytes", res["stderr"])]
                res["backoff_s"] = float(sum(waits)) if quiet[0] == "-S" else None
                res["backoff_source"] = "curl's own warnings" if quiet[0] == "-S" else "unknown (-s hides warnings)"
                res["bytes_thrown_away"] = sum(thrown)
                res["ok"] = res["returncode"] == 0
                if thrown:
                    note = f"retry restarted from byte 0, threw away {sum(thrown) / MB:.0f} MB"
                if not retry_ok:
                    note = (note + "; " if note else "") + "curl < 7.71: no --retry-all-errors"
                final = dest
            else:  # curl_loop: re-run curl -C - (no --retry) until it exits 0, no sleep
                total, runs_done, rc, last_err = 0.0, 0, None, ""
                for _ in range(drops + 3):
                    one = run_curl(["curl", "-sS", "--fail", "-C", "-", "-o", str(dest), url])
                    total += one["seconds"]
                    runs_done += 1
                    rc, last_err = one["returncode"], one["stderr"]
                    if rc == 0:
                        break
                res = {
                    "seconds": total,
                    "returncode": rc,
                    "stderr": last_err,
                    "curl_runs": runs_done,
                    "ok": rc == 0,
                    "backoff_s": 0.0,
                    "backoff_source": "none (re-run at once)",
                }
                final = dest
            res.update(_wire(server, tf.url_path))
            ranges = [q["range"] for q in res["log"]]
            res["resumed_with_range"] = any(rg and not rg.startswith("bytes=0-") for rg in ranges[1:])
            digest = md5_file(final) if final.exists() else None
            res.update(
                tool=tool,
                run=r,
                md5_ok=digest == tf.md5,
                ok=bool(res.get("ok")) and digest == tf.md5,
                note=note or ("resumed with Range" if res["resumed_with_range"] else ""),
            )
            if res["backoff_s"] is not None:
                res["seconds_minus_backoff"] = res["seconds"] - res["backoff_s"]
            samples.append(res)
            clear_dest(dest)
    server.clear_faults()

    summary = {}
    for tool in tools:
        rows = [s for s in samples if s["tool"] == tool]
        summary[tool] = {
            "seconds": med([s["seconds"] for s in rows]),
            "backoff_s": med([s["backoff_s"] for s in rows]),
            "seconds_minus_backoff": med([s.get("seconds_minus_backoff") for s in rows]),
            "requests": med([s["requests"] for s in rows]),
            "wire_bytes": med([s["wire_bytes"] for s in rows]),
            "wire_over_size": med([s["wire_bytes"] / tf.size for s in rows]),
            "all_md5_ok": all(s["md5_ok"] for s in rows),
            "resumed_with_range": all(s["resumed_with_range"] for s in rows),
            "note": rows[-1]["note"] if rows else "",
        }
    return {
        "file": tf.path.name,
        "bytes": tf.size,
        "drop_after": drop_after,
        "drops": drops,
        "ours_policy": {"backoff_base": 0.05, "attempts": RetryPolicy().attempts},
        "curl_retry_cmd": curl_retry_cmd + ["-o", "FILE", "URL"],
        "curl_loop_cmd": ["curl", "-sS", "--fail", "-C", "-", "-o", "FILE", "URL"],
        "summary": summary,
        "samples": samples,
    }


def scenario_c(server, files, runs: int, bps: float, dl: Path, have_curl: bool) -> dict:
    server.set_throttle(bps)
    total = sum(tf.size for tf in files)
    samples = []
    tools = ["ours", "curl"] if have_curl else ["ours"]
    try:
        for r in range(runs):
            for tool in tools if r % 2 == 0 else tools[::-1]:
                dests = [dl / f"c_{tool}_{i}.bin" for i in range(len(files))]
                for d in dests:
                    clear_dest(d)
                t0 = time.perf_counter()
                if tool == "ours":
                    with ThreadPoolExecutor(len(files)) as pool:
                        results = list(
                            pool.map(
                                lambda pair: run_ours(server.url + pair[0].url_path, pair[0], pair[1]),
                                zip(files, dests),
                            )
                        )
                    oks = [x["ok"] for x in results]
                else:
                    procs = [
                        subprocess.Popen(
                            ["curl", "-sS", "--fail", "-o", str(d), server.url + tf.url_path],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        )
                        for tf, d in zip(files, dests)
                    ]
                    rcs = [p.wait() for p in procs]
                    for p in procs:
                        p.stderr.close()
                    oks = [rc == 0 for rc in rcs]
                seconds = time.perf_counter() - t0
                md5_ok = all(d.exists() and md5_file(d) == tf.md5 for tf, d in zip(files, dests))
                samples.append(
                    {
                        "tool": tool,
                        "run": r,
                        "seconds": seconds,
                        "mbps": total / MB / seconds,
                        "ok": all(oks) and md5_ok,
                    }
                )
                for d in dests:
                    clear_dest(d)
    finally:
        server.set_throttle(None)
    summary = {}
    for tool in tools:
        rows = [s for s in samples if s["tool"] == tool]
        summary[tool] = {
            "seconds": med([s["seconds"] for s in rows]),
            "mbps": med([s["mbps"] for s in rows]),
            "all_ok": all(s["ok"] for s in rows),
        }
    ideal = len(files) * bps / MB
    for tool in tools:
        summary[tool]["share_of_ideal"] = summary[tool]["mbps"] / ideal if summary[tool]["mbps"] else None
    if have_curl and summary["curl"]["mbps"]:
        summary["ratio_ours_vs_curl"] = summary["ours"]["mbps"] / summary["curl"]["mbps"]
    return {
        "files": len(files),
        "bytes_each": files[0].size,
        "throttle_bps_per_response": bps,
        "ideal_mbps": ideal,
        "summary": summary,
        "samples": samples,
    }


# -- md5 speed and read-loop variants --------------------------------------------------------------


def md5_speed() -> dict:
    buf = os.urandom(64 << 20)
    view = memoryview(buf)
    best = None
    for _ in range(3):
        h = hashlib.md5()
        t0 = time.perf_counter()
        for i in range(0, len(buf), download.CHUNK):
            h.update(view[i : i + download.CHUNK])
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return {"hashlib_md5_mbps": len(buf) / MB / best}


def _loop(url: str, dest: Path, chunk: int, mode: str, hash_inline: bool) -> Optional[str]:
    """One GET into dest like transfer._http_attempt (urlopen, same headers), loop varied."""
    req = urllib.request.Request(url, headers={"User-Agent": download.USER_AGENT, "Accept-Encoding": "identity"})
    h = hashlib.md5() if hash_inline else None
    with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
        if mode == "read1":
            while True:
                block = resp.read1(chunk)
                if not block:
                    break
                out.write(block)
                if h:
                    h.update(block)
        else:  # readinto a reusable buffer
            buf = memoryview(bytearray(chunk))
            while True:
                n = resp.readinto(buf)
                if not n:
                    break
                out.write(buf[:n])
                if h:
                    h.update(buf[:n])
    return h.hexdigest() if h else md5_file(dest)


LOOP_VARIANTS = [
    # name, mode, chunk, md5 while receiving
    ("read1 1 MiB, md5 after (the old loop)", "read1", 1 << 20, False),
    ("read1 4 MiB, md5 after", "read1", 4 << 20, False),
    ("readinto 1 MiB reused buffer, md5 after", "readinto", 1 << 20, False),
    ("readinto 4 MiB reused buffer, md5 after", "readinto", 4 << 20, False),
    ("read1 1 MiB, md5 while receiving (= now)", "read1", 1 << 20, True),
    ("readinto 1 MiB, md5 while receiving", "readinto", 1 << 20, True),
]


def scenario_m(
    server, tf: TestFile, repeats: int, dl: Path, link_file: Optional[TestFile], link_mbps: List[float]
) -> dict:
    out = {"md5": md5_speed()}
    digest, secs = timed_md5(tf.path)
    out["md5"]["md5_file_cached_mbps"] = tf.size / MB / secs
    url = server.url + tf.url_path
    dest = dl / "m.bin"
    samples = {name: [] for name, *_ in LOOP_VARIANTS}
    for r in range(repeats):
        order = LOOP_VARIANTS[r % len(LOOP_VARIANTS) :] + LOOP_VARIANTS[: r % len(LOOP_VARIANTS)]
        for name, mode, chunk, inline in order:
            clear_dest(dest)
            t0 = time.perf_counter()
            got = _loop(url, dest, chunk, mode, inline)
            dt = time.perf_counter() - t0
            if got != tf.md5:
                raise RuntimeError(f"read-loop variant {name!r} produced a wrong md5")
            samples[name].append(tf.size / MB / dt)
    # On a link slower than md5, hashing while receiving hides the hash; hashing after adds to it.
    links = []
    if link_file is not None:
        url = server.url + link_file.url_path
        pair = [LOOP_VARIANTS[0], LOOP_VARIANTS[4]]
        try:
            for mbps in link_mbps:
                server.set_throttle(mbps * MB)
                got = {name: [] for name, *_ in pair}
                for r in range(repeats):
                    for name, mode, chunk, inline in pair if r % 2 == 0 else pair[::-1]:
                        clear_dest(dest)
                        t0 = time.perf_counter()
                        if _loop(url, dest, chunk, mode, inline) != link_file.md5:
                            raise RuntimeError(f"read-loop variant {name!r} produced a wrong md5")
                        got[name].append(link_file.size / MB / (time.perf_counter() - t0))
                after, during = med(got[pair[0][0]]), med(got[pair[1][0]])
                links.append(
                    {
                        "link_mbps": mbps,
                        "md5_after_mbps": after,
                        "md5_while_receiving_mbps": during,
                        "gain": during / after - 1,
                        "samples": got,
                    }
                )
        finally:
            server.set_throttle(None)
    out["throttled_links"] = links
    out["link_file_bytes"] = link_file.size if link_file is not None else None
    clear_dest(dest)
    base = med(samples[LOOP_VARIANTS[0][0]])
    out["loop_variants"] = [
        {
            "variant": name,
            "mbps": med(samples[name]),
            "vs_download_py": med(samples[name]) / base if base else None,
            "samples_mbps": samples[name],
        }
        for name, *_ in LOOP_VARIANTS
    ]
    return out


# -- report ---------------------------------------------------------------------------------------


def report(res: dict) -> str:
    cfg = res["config"]
    L = []
    L.append(
        f"download_bench: {cfg['files']} files x {cfg['size_mb']:g} MB (random bytes), {cfg['repeats']} repeats; "
        f"server on 127.0.0.1 in {cfg['server_where']}"
    )
    m = res["machine"]
    L.append(
        f"machine: {m['cpus']} CPUs, Python {m['python']}, {m['curl'] or 'no curl'}; MB = 10^6 bytes; "
        f"load avg at start {fmt(m['loadavg_1min_at_start'], '.2f')}; total run {res['total_seconds']:.1f} s"
    )
    if "M" in res:
        md = res["M"]["md5"]
        L.append(
            f"md5 on this machine: hashlib {md['hashlib_md5_mbps']:.0f} MB/s in memory, "
            f"md5_file {md['md5_file_cached_mbps']:.0f} MB/s on a cached file"
        )
    L.append("")
    a = res["A"]["summary"]
    L.append(f"A. clean downloads, interleaved, median of {a['n_per_tool']} per tool")
    L.append(f"   {'tool':44s} {'MB/s':>7s} {'s/file':>7s} {'vs curl':>8s}")
    c = a["curl_mbps"]

    def row(label, mbps, secs):
        ratio = f"{mbps / c:.2f}x" if c and mbps else "-"
        L.append(f"   {label:44s} {fmt(mbps):>7s} {fmt(secs, '.3f'):>7s} {ratio:>8s}")

    row("ours: fetch(), size + md5 verified", a["ours_mbps"], a["ours_s_per_file"])
    row("ours: fetch(), size only (md5=None)", a["ours_nomd5_mbps"], a["ours_nomd5_s_per_file"])
    if c:
        row("curl -sS --fail -o FILE URL", c, a["curl_s_per_file"])
        row("curl, then md5 of the file (timed apart)", a["curl_then_md5_mbps"], None)
        L.append(
            f"   ours/curl {fmt(a['ratio_ours_vs_curl'], '.2f')}; "
            f"ours without md5/curl {fmt(a['ratio_ours_nomd5_vs_curl'], '.2f')}; "
            f"ours/(curl then md5) {fmt(a['ratio_ours_vs_curl_then_md5'], '.2f')}"
        )
    if a["md5_share_of_ours"] is not None:
        L.append(
            f"   md5 verification: {100 * a['md5_share_of_ours']:.0f}% of our fetch time (median with md5 vs md5=None)"
        )
    for f in res["A"]["failures"]:
        L.append(f"   FAILED: {f}")
    if "B" in res:
        b = res["B"]
        L.append("")
        L.append(
            f"B. connection dropped {b['drops']} times (every {b['drop_after'] / MB:.1f} MB) on one "
            f"{b['bytes'] / MB:.0f} MB file; median of {cfg['b_runs']} run(s)"
        )
        L.append(
            "   ours: RetryPolicy(backoff_base=0.05) so back-off stays small; curl --retry-delay 0 means "
            "curl's default back-off (1 s, doubling)"
        )
        L.append(
            f"   {'tool':28s} {'wall s':>7s} {'backoff':>8s} {'wall-bo':>8s} {'reqs':>5s} "
            f"{'wire MB':>8s} {'wire/size':>9s} {'md5 ok':>6s}  note"
        )
        labels = {
            "ours": "ours fetch() (Range resume)",
            "curl_retry": "curl --retry 5 ... -C -",
            "curl_loop": "curl -C - re-run by a loop",
        }
        for tool, s in b["summary"].items():
            L.append(
                f"   {labels[tool]:28s} {fmt(s['seconds'], '.2f'):>7s} {fmt(s['backoff_s'], '.2f'):>8s} "
                f"{fmt(s['seconds_minus_backoff'], '.2f'):>8s} {fmt(s['requests'], '.0f'):>5s} "
                f"{s['wire_bytes'] / MB:8.0f} {s['wire_over_size']:9.2f} "
                f"{'yes' if s['all_md5_ok'] else 'NO':>6s}  {s['note']}"
            )
        L.append(f"   curl --retry command: {' '.join(b['curl_retry_cmd'])}")
    if "C" in res:
        cc = res["C"]
        L.append("")
        L.append(
            f"C. throttled server ({cc['throttle_bps_per_response'] / MB:g} MB/s per response), "
            f"{cc['files']} files x {cc['bytes_each'] / MB:.0f} MB at once; ideal "
            f"{cc['ideal_mbps']:.0f} MB/s; median of {cfg['c_runs']} run(s)"
        )
        L.append(f"   {'tool':44s} {'wall s':>7s} {'MB/s':>7s} {'of ideal':>8s} {'md5 ok':>6s}")
        labels = {
            "ours": f"ours: {cc['files']} threads of fetch(), md5 checked",
            "curl": f"curl: {cc['files']} processes (no md5 check)",
        }
        for tool in ("ours", "curl"):
            s = cc["summary"].get(tool)
            if s:
                L.append(
                    f"   {labels[tool]:44s} {fmt(s['seconds'], '.2f'):>7s} {fmt(s['mbps'], '.1f'):>7s} "
                    f"{fmt(100 * s['share_of_ideal'], '.0f') + '%':>8s} {'yes' if s['all_ok'] else 'NO':>6s}"
                )
        if "ratio_ours_vs_curl" in cc["summary"]:
            L.append(f"   ours/curl {cc['summary']['ratio_ours_vs_curl']:.2f}")
    if "M" in res:
        L.append("")
        L.append(
            f"M. read-loop variants (urllib as in pipeline/fetch/transfer.py, written in this script), "
            f"one {res['M']['bytes'] / MB:.0f} MB file, median of {cfg['repeats']}"
        )
        L.append(f"   {'variant':44s} {'MB/s':>7s} {'vs old':>7s}")
        for v in res["M"]["loop_variants"]:
            L.append(f"   {v['variant']:44s} {fmt(v['mbps']):>7s} {fmt(v['vs_download_py'], '.2f'):>7s}")
        links = res["M"]["throttled_links"]
        if links:
            L.append(
                f"   on a throttled link ({res['M']['link_file_bytes'] / MB:.0f} MB file), read1 1 MiB: "
                f"md5 after vs md5 while receiving"
            )
            for k in links:
                L.append(
                    f"   link {k['link_mbps']:g} MB/s: after {fmt(k['md5_after_mbps'])} MB/s, while receiving "
                    f"{fmt(k['md5_while_receiving_mbps'])} MB/s ({100 * k['gain']:+.0f}%)"
                )
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=200, help="size of each test file in MB (default 200)")
    ap.add_argument("--files", type=int, default=3, help="number of test files (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="downloads per file and tool in A, and per variant in M")
    ap.add_argument("--out", default=str(REPO / "bench" / "out"), help="folder for the JSON and temporary files")
    ap.add_argument("--b-runs", type=int, default=1, help="runs per tool in B (curl's back-off is ~7 s each)")
    ap.add_argument("--drops", type=int, default=3, help="connection drops in B (default 3)")
    ap.add_argument("--c-size-mb", type=float, default=30, help="size of each file in C (default 30)")
    ap.add_argument("--c-files", type=int, default=4, help="parallel downloads in C (default 4)")
    ap.add_argument("--c-mbps", type=float, default=20, help="per-response throttle in C, MB/s (default 20)")
    ap.add_argument("--c-runs", type=int, default=2, help="runs per tool in C (default 2)")
    ap.add_argument(
        "--m-link-mbps",
        default="100,200",
        help="throttled links for the md5-after vs md5-while-receiving rows in M ('' for none)",
    )
    ap.add_argument("--m-link-size-mb", type=float, default=50, help="file size for those rows (default 50)")
    ap.add_argument("--skip", default="", help="scenarios to skip, e.g. BC or M")
    ap.add_argument(
        "--server",
        choices=("process", "thread"),
        default="process",
        help="run the file server in a child process (default) or in this process",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    skip = set(args.skip.upper())

    for var in PROXY_VARS:  # only ever talk to 127.0.0.1 directly (urllib and curl both read these)
        os.environ.pop(var, None)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="download_bench.", dir=out_dir))
    serve, dl = work / "serve", work / "dl"
    serve.mkdir()
    dl.mkdir()
    cv = curl_version()
    have_curl = cv is not None

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        result = fn(*a)
        result["seconds_section"] = time.perf_counter() - t0
        say(f"  {name}: {result['seconds_section']:.1f} s")
        return result

    server = None
    try:
        size = int(args.size_mb * MB)
        say(f"making {args.files} x {args.size_mb:g} MB of random files in {serve}")
        files = [make_file(serve / f"file{i}.bin", size) for i in range(args.files)]
        c_files = []
        if "C" not in skip:
            c_files = [make_file(serve / f"par{i}.bin", int(args.c_size_mb * MB)) for i in range(args.c_files)]
        link_mbps = [float(x) for x in args.m_link_mbps.split(",") if x.strip()]
        link_file = None
        if "M" not in skip and link_mbps:
            link_file = make_file(serve / "link.bin", int(args.m_link_size_mb * MB))
        say(f"  files made in {time.perf_counter() - t_start:.1f} s")
        server = ChildServer(serve) if args.server == "process" else ThreadServer(serve)
        say(f"server {server.url} in {server.where}")
        res = {
            "config": {
                "size_mb": args.size_mb,
                "files": args.files,
                "repeats": args.repeats,
                "b_runs": args.b_runs,
                "c_runs": args.c_runs,
                "server": args.server,
                "server_where": server.where,
                "mb": MB,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_1min_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                "platform": platform.platform(),
                "curl": "curl " + ".".join(map(str, cv)) if cv else None,
            },
        }
        if "M" not in skip:
            res["M"] = timed("M", scenario_m, server, files[0], args.repeats, dl, link_file, link_mbps)
            res["M"]["bytes"] = files[0].size
        res["A"] = timed("A", scenario_a, server, files, args.repeats, dl, have_curl)
        if "B" not in skip:
            res["B"] = timed("B", scenario_b, server, files[0], args.b_runs, args.drops, dl, work, cv)
        if "C" not in skip:
            res["C"] = timed("C", scenario_c, server, c_files, args.c_runs, args.c_mbps * MB, dl, have_curl)
        res["total_seconds"] = time.perf_counter() - t_start
        text = report(res)
        res["table"] = text
        print(text)
        json_path = out_dir / "download_bench.json"
        json_path.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"\nJSON: {json_path}")
        ours_bad = any(not f.startswith("curl") for f in res["A"]["failures"]) or (
            "B" in res and not res["B"]["summary"]["ours"]["all_md5_ok"]
        )
        return 1 if ours_bad else 0
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
