"""Whether a pipeline run is alive: the running process refreshes ``OUTPUT/.rnaseq-batch/heartbeat.json``.

The file holds the pid, host, command and start time of the process that runs the pipeline on that
output directory, and when it last said it was alive. A reader (``rnaseq-batch status``) tells a
live run from a stopped one without asking the process: the run ended cleanly (``ended_at``), its
pid is gone from this host, or its heartbeat is older than a few intervals (a kill -9 or a reboot
on another host).
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .files import atomic_write_json, read_json
from .runlog import RunLog

INTERVAL = 5.0  # seconds between refreshes
STALE_AFTER = 4  # a heartbeat this many intervals old means the run has stopped
FOLDER = ".rnaseq-batch"


def heartbeat_path(output_dir) -> Path:
    return Path(output_dir) / FOLDER / "heartbeat.json"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Refreshes the heartbeat file of ``output_dir`` in a daemon thread until :meth:`stop`."""

    def __init__(self, output_dir, command: Optional[list[str]] = None, interval: float = INTERVAL):
        self.path = heartbeat_path(output_dir)
        self.interval = interval
        self.record: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": time.time(),
            "command": command if command is not None else sys.argv,
            "interval": interval,
        }
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def previous(self) -> Optional[dict]:
        """The record an earlier run left, if any (read before this one starts writing)."""
        try:
            return read_json(self.path)
        except (OSError, ValueError):
            return None

    def beat(self) -> None:
        atomic_write_json(self.path, self.record | {"updated_at": time.time()})

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if os.getpid() != self.record["pid"]:  # a forked child: the parent keeps the beat
                return
            try:
                self.beat()
                sample_disk(self.path.parent.parent)
            except OSError:
                pass  # a full disk must not kill the run; the reader will call it stale

    def stop(self, exit_code: Optional[int] = None) -> None:
        """Say the run ended (with its exit code when known); idempotent."""
        if self._stop.is_set() or os.getpid() != self.record["pid"]:
            return
        self._stop.set()
        try:
            atomic_write_json(
                self.path, self.record | {"updated_at": time.time(), "ended_at": time.time(), "exit_code": exit_code}
            )
        except OSError:
            pass


def disk_samples_path(output_dir) -> Path:
    return Path(output_dir) / FOLDER / "disk.tsv"


def sample_disk(output_dir) -> None:
    """Append ``time, species, fastq_bytes, free_bytes`` for every species under ``output_dir``:
    the reads on disk over time, which the markers (batch edges only) cannot give. A reader skips
    a torn last line."""
    from .plan.space import free_bytes, tree_bytes

    out = Path(output_dir)
    now = time.time()
    lines = []
    for species in sorted(p.name for p in out.iterdir() if (p / "work" / "markers").is_dir()):
        fastq = out / species / "fastq"
        lines.append(f"{now:.3f}\t{species}\t{tree_bytes(fastq)}\t{free_bytes(fastq)}\n")
    if not lines:
        return
    path = disk_samples_path(out)
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(("time\tspecies\tfastq_bytes\tfree_bytes\n" if new else "") + "".join(lines))


def liveness(output_dir, now: Optional[float] = None) -> dict:
    """``{"state": "alive" | "stopped" | "unknown", "why": ..., and the record's fields}``."""
    now = time.time() if now is None else now
    try:
        rec = read_json(heartbeat_path(output_dir))
    except (OSError, ValueError):
        return {"state": "unknown", "why": "no heartbeat file (no run through this version has started here)"}
    if rec.get("ended_at"):
        code = rec.get("exit_code")
        return rec | {
            "state": "stopped",
            "why": "ended" + ("" if code is None else f" with exit code {code}"),
            "stopped_at": rec["ended_at"],
        }
    if rec.get("host") == socket.gethostname() and not pid_alive(int(rec.get("pid", -1))):
        return rec | {
            "state": "stopped",
            "why": f"process {rec.get('pid')} is gone",
            "stopped_at": rec.get("updated_at"),
        }
    age = now - float(rec.get("updated_at", 0))
    if age > STALE_AFTER * float(rec.get("interval", INTERVAL)):
        return rec | {"state": "stopped", "why": f"no heartbeat for {age:.0f} s", "stopped_at": rec.get("updated_at")}
    return rec | {"state": "alive", "why": f"pid {rec.get('pid')} on {rec.get('host')}"}


def run_log_path(output_dir) -> Path:
    """``OUTPUT/run.log``: one line per start, resume, interruption and end of a run on that directory."""
    return Path(output_dir) / "run.log"


def start_run(output_dir, command: Optional[list[str]] = None, interval: float = INTERVAL) -> Heartbeat:
    """Start the heartbeat of a run on ``output_dir`` and say in its run log how it starts: afresh,
    or resuming after a run that did not finish."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    hb = Heartbeat(output_dir, command, interval=interval)
    before = liveness(output_dir)
    log = RunLog(run_log_path(output_dir))
    if before["state"] == "alive" and before.get("pid") != os.getpid():
        log.write(f"started beside a live run (pid {before.get('pid')} on {before.get('host')})")
    elif before["state"] == "stopped" and before.get("exit_code") not in (0,):
        log.write(
            f"resuming: the previous run (pid {before.get('pid')} on {before.get('host')}) stopped "
            f"without finishing ({before['why']})"
        )
    log.write(f"started: pid {hb.record['pid']} on {hb.record['host']}: {' '.join(map(str, hb.record['command']))}")
    return hb.start()
