"""One pipeline run through a real central scheduler (`luigid` on 127.0.0.1), as the README shows.

The scheduler must see every task family finish, and the status messages the tasks set (which run
of which batch is downloading or being quantified) must reach it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_tool
from helpers import ROOT, files_under, free_port, run_luigi, write_species

from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

FAMILIES = {"SplitMetadata", "BuildIndex", "BatchDownload", "BatchQuant", "BatchCleanup", "Species", "MultiSpecies"}
RUNS = ["DRR000101", "DRR000102"]


def _luigid_binary() -> str:
    exe = Path(sys.executable).with_name("luigid")
    if exe.is_file() and os.access(exe, os.X_OK):
        return str(exe)
    found = shutil.which("luigid")
    if not found:
        pytest.skip(f"luigid not found (neither {exe} nor on PATH): `pip install luigi` provides it")
    return found


def api(base: str, method: str, **data):
    """Call the scheduler's JSON API: GET /api/METHOD?data={...} -> the "response" value."""
    url = f"{base}/api/{method}?data={urllib.parse.quote(json.dumps(data))}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read().decode())["response"]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def luigid(tmp_path):
    """A luigid of our own on a free loopback port; yields its base URL, always stopped afterwards.

    It runs in its own folder (state and log there) and reads the project's luigi.cfg through
    LUIGI_CONFIG_PATH: the central scheduler, not the worker, enforces [resources].
    """
    exe = _luigid_binary()
    d = tmp_path / "luigid"
    d.mkdir()
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(ROOT / "luigi.cfg"))
    for attempt in range(3):  # the free port may be taken between our probe and luigid's bind
        port = free_port()
        log = open(d / f"luigid_{attempt}.log", "w")
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--address",
                "127.0.0.1",
                "--logdir",
                str(d),
                "--state-path",
                str(d / "state.pickle"),
            ],
            cwd=d,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    api(base, "task_list")
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                if proc.poll() is None:
                    pytest.fail(
                        f"luigid did not answer on {base} within 15 s:\n"
                        f"{(d / f'luigid_{attempt}.log').read_text()[-3000:]}"
                    )
                continue  # it exited (port taken?): try another port
            yield base
            return
        finally:
            _stop(proc)
            log.close()
    pytest.fail("luigid exited at start three times:\n" + (d / "luigid_2.log").read_text()[-3000:])


def test_run_through_luigid_reports_every_task_and_status_messages(tmp_path, luigid):
    need_tool("kallisto")
    ds = simulate.make_species_dataset(
        tmp_path / "sim", "Simulata_luigid", RUNS, "PAIRED", reads_per_run=2000, read_len=50, n_transcripts=20, seed=11
    )
    # throttled so that a transfer lasts a moment and reports its MB so far
    with FileServer(tmp_path / "sim" / "archive", throttle_bps=150_000) as server:
        write_species(
            tmp_path / "cfg",
            "Simulata_luigid",
            ds["transcriptome"],
            ds["metadata"],
            batch={"size": 1},
            download={"parallel": 2, "mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
        )
        out = tmp_path / "out"
        port = luigid.rsplit(":", 1)[1]
        t0 = time.monotonic()
        r = run_luigi(
            tmp_path / "cfg", out, timeout=120, scheduler=("--scheduler-host", "127.0.0.1", "--scheduler-port", port)
        )
        elapsed = time.monotonic() - t0
        assert r.returncode == 0, r.stderr[-3000:]
        gets = sorted(q["path"].rsplit("/", 1)[1] for q in server.requests if q["method"] == "GET")
    assert gets == sorted(f"{run}_{m}.fastq.gz" for run in RUNS for m in (1, 2))
    assert elapsed < 60, f"the run through luigid took {elapsed:.1f} s"

    sp = out / "Simulata_luigid"
    for kind in ("tpm", "est_counts", "qc"):
        assert (sp / "merged" / f"Simulata_luigid_{kind}.tsv").is_file(), files_under(sp)
    tpm = pd.read_csv(sp / "merged" / "Simulata_luigid_tpm.tsv", sep="\t")
    assert list(tpm.columns) == ["target_id", *RUNS]
    assert files_under(sp / "fastq") == set()

    # What the central scheduler saw
    done = api(luigid, "task_list", status="DONE")
    assert "num_tasks" not in done, f"task_list was truncated: {done}"
    families = {t["name"] for t in done.values()}
    assert families >= FAMILIES, f"families the scheduler never saw DONE: {FAMILIES - families}"
    by_family = {}
    for task_id, t in done.items():
        by_family.setdefault(t["name"], []).append(task_id)
    for fam in ("BatchDownload", "BatchQuant", "BatchCleanup"):
        assert len(by_family[fam]) == 2, (fam, by_family[fam])
    assert not api(luigid, "task_list", status="FAILED")
    assert not api(luigid, "task_list", status="PENDING")

    # status messages, read back one task at a time as the web page does
    messages = {}
    for task_id in done:
        m = api(luigid, "get_task_status_message", task_id=task_id)
        assert m["taskId"] == task_id
        if m["statusMessage"]:
            messages[task_id] = m["statusMessage"]
    assert messages, "no task carried a status message"
    # task_list serialises the same message
    assert all(done[tid]["status_message"] == msg for tid, msg in messages.items())
    download_msgs = [messages[t] for t in by_family["BatchDownload"] if t in messages]
    assert len(download_msgs) == 2, messages
    assert all(re.match(r"Simulata_luigid batch [12]/2: downloaded 1/1 run\(s\), [0-9.]+ MB, [0-9.]+ MB/s$", m)
               for m in download_msgs), download_msgs  # fmt: skip
    quant_msgs = [messages[t] for t in by_family["BatchQuant"] if t in messages]
    assert all(re.match(r"Simulata_luigid batch [12]/2: kallisto done on 1/1 run\(s\) \(DRR0001", m)
               for m in quant_msgs), messages  # fmt: skip
    index_msgs = [messages[t] for t in by_family["BuildIndex"] if t in messages]
    assert index_msgs and "kallisto index done" in index_msgs[0], messages
    progress = [
        api(luigid, "get_task_progress_percentage", task_id=t)["progressPercentage"] for t in by_family["BatchDownload"]
    ]
    assert progress == [100, 100], progress  # a finished task shows 100 %
