"""`make demo`'s runner, end to end: it serves the demo archive on a free port and its mirrors follow."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import need_tool

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_while_its_old_fixed_port_is_taken(tmp_path):
    need_tool("kallisto")
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        busy.bind(("127.0.0.1", 18765))  # the port the demo used to insist on
    except OSError:
        pass  # already taken by something else: all the better for this test
    busy.listen()
    out = tmp_path / "demo"
    try:
        r = subprocess.run(
            [sys.executable, "scripts/demo.py", "--output-dir", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        busy.close()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for species, runs in (("Demo_pairedii", 4), ("Demo_singularis", 3)):
        header = (out / species / "merged" / f"{species}_est_counts.tsv").read_text().splitlines()[0]
        assert len(header.split("\t")) == runs + 1
    mirrors = {
        yaml.safe_load(p.read_text())["download"]["mirrors"]["https://ftp.sra.ebi.ac.uk/"]
        for p in (out / "demo-config").glob("*.yaml")
    }
    assert len(mirrors) == 1 and ":18765/" not in mirrors.pop()
