#!/usr/bin/env python3
"""Segmented downloads (``download.connections``) against aria2c and curl, on a loopback server
that caps each connection at R MB/s under a shared link of LINK x R.

    .venv/bin/python bench/segments_bench.py [--rate-mb 8] [--link 8] [--size-mb 96] [--out bench/out]

One random file is served by pipeline.testing.fileserver.FileServer in a child process (its own
GIL) with ``throttle_bps = R`` (each response, i.e. each connection) and ``link_bps = LINK x R``.
Each tool fetches it once per row, clean and then with drops (the server closes the first 3
responses after 1/16 of the file each):

- ours: ``pipeline.fetch.transfer.fetch`` with size and md5 verification, connections 1, 4, 8;
- aria2c ``-x N -s N -k 1M`` (N = 4, 8) with integrity checking off, which checks nothing, and
  again with ``--checksum=md5=...``, which hashes the file after the download;
- curl, one stream (``-C -`` and ``--retry`` with drops), then an md5 pass over its output.

MB = 10**6 bytes. Prints one table (MB/s, seconds, requests, md5 right) and the ratios, and
writes the figures to OUT/segments_bench.json. Only 127.0.0.1 is contacted; temporary files go
under OUT and are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from download_bench import PROXY_VARS, ChildServer, TestFile, make_file, timed_md5  # noqa: E402

from pipeline.fetch.http import CHUNK  # noqa: E402
from pipeline.fetch.retry import RetryPolicy  # noqa: E402
from pipeline.fetch.segments import Split  # noqa: E402
from pipeline.fetch.transfer import DownloadError, fetch  # noqa: E402
from pipeline.model import RemoteFile  # noqa: E402
from pipeline.runlog import RunLog  # noqa: E402

MB = 1_000_000
DROPS = 3


def _clear(dl: Path) -> None:
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir(parents=True)


def _result(seconds: float, digest: Optional[str], tf: TestFile, wire: dict, **extra) -> dict:
    return {"seconds": seconds, "mbps": tf.size / MB / seconds, "md5_ok": digest == tf.md5, **wire, **extra}


def _wire(server, url_path: str) -> dict:
    server.wait_idle()
    reqs = [q for q in server.requests() if q["path"] == url_path]
    return {"requests": len(reqs), "wire_mb": sum(q["bytes_sent"] or 0 for q in reqs) / MB}


def run_ours(server, tf: TestFile, dl: Path, split: Split) -> dict:
    _clear(dl)
    dest, log_path = dl / "f.bin", dl / "run.log"
    rf = RemoteFile(url=server.url + tf.url_path, name="f.bin", md5=tf.md5, bytes=tf.size)
    t0 = time.perf_counter()
    try:
        fetch(rf, dest, None, RetryPolicy(backoff_base=0.05), RunLog(log_path), split=split)
        digest: Optional[str] = tf.md5  # fetch verified it: it raises otherwise
    except DownloadError:
        digest = None
    seconds = time.perf_counter() - t0
    log = log_path.read_text()
    m = re.search(r"md5 ([\d.]+) s, ([\d.]+) s after the last byte", log)
    extra = {"md5_s": float(m.group(1)), "md5_tail_s": float(m.group(2))} if m else {}
    return _result(seconds, digest, tf, _wire(server, tf.url_path), **extra)


def run_cmd(server, tf: TestFile, dl: Path, cmd: list, out: Path, hash_after: bool) -> dict:
    _clear(dl)
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    wire = _wire(server, tf.url_path)
    if proc.returncode != 0 or not out.exists():
        return {"seconds": seconds, "mbps": None, "md5_ok": False, "error": proc.stderr[-300:], **wire}
    digest, md5_s = timed_md5(out)  # the check of the result (timed only when the row includes it)
    if hash_after:
        seconds += md5_s
    return _result(seconds, digest, tf, wire)


def aria2c(url: str, dl: Path, n: int, md5: Optional[str]) -> list:
    cmd = ["aria2c", "-x", str(n), "-s", str(n), "-k", "1M", "--check-integrity=false", "-d", str(dl), "-o", "f.bin"]
    cmd += ["--allow-overwrite=true", "--auto-file-renaming=false", "--console-log-level=warn", "--summary-interval=0"]
    cmd += ["--retry-wait=0", "--max-tries=6", "--quiet=true"]
    if md5:
        cmd.append(f"--checksum=md5={md5}")
    return cmd + [url]


def curl(url: str, out: Path) -> list:
    return [
        "curl",
        "-sS",
        "--fail",
        "--retry",
        "6",
        "--retry-delay",
        "0",
        "--retry-all-errors",
        "-C",
        "-",
        "-o",
        str(out),
        url,
    ]


def rows(server, tf: TestFile, dl: Path, drops: bool) -> dict:
    url, out = server.url + tf.url_path, dl / "f.bin"
    plan = [(f"ours, {c} connection{'s' if c > 1 else ''}", "ours", c) for c in (1, 4, 8)]
    for n in (4, 8):
        plan += [(f"aria2c -x {n}, nothing checked", "aria", (n, None))]
        plan += [(f"aria2c -x {n} --checksum=md5", "aria", (n, tf.md5))]
    plan += [("curl, then md5", "curl", None)]
    res = {}
    for label, kind, arg in plan:
        server.clear_requests()
        server.clear_faults()
        if drops:
            server.set_fault(tf.url_path, drop_after=tf.size // 16, times=DROPS)
        if kind == "ours":
            res[label] = run_ours(server, tf, dl, Split(arg))
        elif kind == "aria":
            n, md5 = arg
            # aria2c checks nothing without --checksum: the row without it is not charged our md5 check
            res[label] = run_cmd(server, tf, dl, aria2c(url, dl, n, md5), out, hash_after=False)
            res[label]["size_md5_checked"] = md5 is not None
        else:
            res[label] = run_cmd(server, tf, dl, curl(url, out), out, hash_after=True)
    server.clear_faults()
    return res


def small_files(server, files: list, dl: Path, delay: float) -> dict:
    """download.min_segment: smaller files with a slow first byte (``delay`` s per request, as a
    far server's round trips), 8 connections with several minimum segment sizes, and 1."""
    res = {}
    for tf in files:
        server.clear_faults()
        server.set_fault(tf.url_path, delay_seconds=delay)
        for label, split in [("1 connection", Split(1))] + [
            (f"8 connections, min_segment {m >> 20} MiB", Split(8, m)) for m in (1 << 20, 4 << 20, 8 << 20)
        ]:
            server.clear_requests()
            res[f"{tf.size // MB} MB, {label}"] = run_ours(server, tf, dl, split)
    server.clear_faults()
    return res


def parallel_runs(server, files: list, dl: Path) -> dict:
    """download.parallel 4 (the default): 4 files at once, each with 1, 2, 4 and 8 connections;
    aggregate MB/s over the shared link."""
    res = {}
    for c in (1, 2, 4, 8):
        server.clear_requests()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(files)) as pool:
            got = list(pool.map(lambda i, c=c: run_ours(server, files[i], dl / str(i), Split(c)), range(len(files))))
        seconds = time.perf_counter() - t0
        total = sum(tf.size for tf in files) / MB
        res[f"{len(files)} files at once, {c} connection{'s' if c > 1 else ''} each"] = {
            "seconds": seconds,
            "mbps": total / seconds,
            "md5_ok": all(g["md5_ok"] for g in got),
            "requests": len(server.requests()),
            "wire_mb": sum(q["bytes_sent"] or 0 for q in server.requests()) / MB,
        }
    return res


def page_cache_costs(path: Path) -> dict:
    """Seconds to read ``path`` back from the page cache (pread, as our md5 does) and to md5 it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for _ in range(2):  # the first pass warms the cache
            t0 = time.perf_counter()
            for at in range(0, size, CHUNK):
                os.pread(fd, CHUNK, at)
            read_s = time.perf_counter() - t0
    finally:
        os.close(fd)
    _, md5_s = timed_md5(path)
    return {"pread_mb_s": size / MB / read_s, "md5_mb_s": size / MB / md5_s}


def report(res: dict) -> str:
    a = res["args"]
    lines = [
        f"Segmented downloads: {a['size_mb']} MB random file, each connection capped at {a['rate_mb']} MB/s, "
        f"link {a['link'] * a['rate_mb']:g} MB/s ({a['link']} x), server in a child process; {os.cpu_count()} CPUs",
        f"page cache on this machine: pread {res['cache']['pread_mb_s']:.0f} MB/s, md5 {res['cache']['md5_mb_s']:.0f} MB/s; "
        f"total bench time {res['seconds']:.0f} s",
        "",
    ]
    head = f"{'':40} {'MB/s':>7} {'s':>6} {'req':>4} {'wire MB':>8} {'md5 ok':>6} {'md5 s':>6} {'tail s':>6}"
    for scen in ("clean", "drops"):
        title = "clean" if scen == "clean" else f"drops: the first {DROPS} responses close after 1/16 of the file"
        lines += [f"{scen.upper()}: {title}", head]
        for label, r in res[scen].items():
            mbps = "failed" if r["mbps"] is None else f"{r['mbps']:.1f}"
            lines.append(
                f"{label:40} {mbps:>7} {r['seconds']:6.2f} {r['requests']:4d} {r['wire_mb']:8.1f} "
                f"{'yes' if r['md5_ok'] else 'NO':>6} {r.get('md5_s', ''):>6} {r.get('md5_tail_s', ''):>6}"
            )
        lines.append("ratios:")
        rr = res[scen]

        def ratio(x, y, rr=rr):
            if rr[x]["mbps"] is None or rr[y]["mbps"] is None:
                return "-"
            return f"{rr[x]['mbps'] / rr[y]['mbps']:.2f}"

        for x, y in [
            ("ours, 8 connections", "aria2c -x 8 --checksum=md5"),
            ("ours, 8 connections", "aria2c -x 8, nothing checked"),
            ("ours, 4 connections", "aria2c -x 4 --checksum=md5"),
            ("ours, 8 connections", "ours, 1 connection"),
            ("ours, 4 connections", "ours, 1 connection"),
            ("ours, 8 connections", "curl, then md5"),
            ("ours, 1 connection", "curl, then md5"),
        ]:
            lines.append(f"  {x} / {y}: {ratio(x, y)}")
        lines.append("")
    lines += ["PARALLEL RUNS: download.parallel 4, the same 24 MB file 4 times at once (aggregate)", head]
    for label, r in res["parallel"].items():
        lines.append(
            f"{label:40} {r['mbps']:7.1f} {r['seconds']:6.2f} {r['requests']:4d} {r['wire_mb']:8.1f} "
            f"{'yes' if r['md5_ok'] else 'NO':>6}"
        )
    lines.append("")
    lines += [f"SMALL FILES: {a['delay']:g} s before each response's first byte (a far server's round trips)", head]
    for label, r in res["small"].items():
        lines.append(
            f"{label:40} {r['mbps']:7.1f} {r['seconds']:6.2f} {r['requests']:4d} {r['wire_mb']:8.1f} "
            f"{'yes' if r['md5_ok'] else 'NO':>6} {r.get('md5_s', ''):>6} {r.get('md5_tail_s', ''):>6}"
        )
    lines.append("")
    lines.append(
        "md5 s: our hashing time; tail s: hashing still to do after the last byte arrived. "
        "wire MB: body bytes the server sent (resumed segments fetch only what they miss)."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate-mb", type=float, default=8.0, help="MB/s per connection (default 8)")
    ap.add_argument("--link", type=int, default=8, help="the link carries this many connections' worth (default 8)")
    ap.add_argument("--size-mb", type=int, default=96, help="file size in MB (default 96)")
    ap.add_argument("--delay", type=float, default=0.1, help="first-byte delay per request for the small files")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    a = ap.parse_args(argv)
    for tool in ("aria2c", "curl"):
        if not shutil.which(tool):
            print(f"segments_bench: {tool} is not on PATH", file=sys.stderr)
            return 2
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=a.out, prefix="segments-") as tmp:
        work = Path(tmp)
        (work / "srv").mkdir()
        tf = make_file(work / "srv" / "big.bin", a.size_mb * MB)
        small = [make_file(work / "srv" / f"small{n}.bin", n * MB) for n in (8, 24)]
        server = ChildServer(work / "srv")
        try:
            server.set_throttle(a.rate_mb * MB)
            server.set_link(a.link * a.rate_mb * MB)
            res = {
                "args": {"rate_mb": a.rate_mb, "link": a.link, "size_mb": a.size_mb, "delay": a.delay},
                "clean": rows(server, tf, work / "dl", drops=False),
                "drops": rows(server, tf, work / "dl", drops=True),
                "cache": page_cache_costs(tf.path),
                "small": small_files(server, small, work / "dl", a.delay),
                "parallel": parallel_runs(server, small[1:] * 4, work / "dl"),
            }
        finally:
            server.stop()
    res["seconds"] = time.perf_counter() - t0
    text = report(res)
    print(text)
    (a.out / "segments_bench.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
