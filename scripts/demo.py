#!/usr/bin/env python3
"""The offline demo: generate two small species, serve their reads on 127.0.0.1, run the pipeline.

    python scripts/demo.py [--output-dir output/demo] [--port 18765]

The reads are laid out like ENA's archive under config/demo/data/archive/ and served by the
project's own HTTP server; the demo YAMLs rewrite ENA's URL prefix to it with `download.mirrors`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.testing.fileserver import FileServer  # noqa: E402
from scripts.make_demo_data import build  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="output/demo")
    ap.add_argument("--port", type=int, default=18765, help="must match the mirrors in config/demo/*.yaml")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    data = ROOT / "config" / "demo" / "data"
    build(data)
    luigi = Path(sys.executable).with_name("luigi")
    cmd = [
        str(luigi),
        "--module",
        "pipeline",
        "MultiSpecies",
        "--config-dir",
        "config/demo",
        "--output-dir",
        a.output_dir,
        "--local-scheduler",
        "--workers",
        str(a.workers),
    ]
    try:
        server = FileServer(data / "archive", port=a.port)
        server.start()
    except OSError as e:
        print(f"cannot serve the demo archive on 127.0.0.1:{a.port}: {e}", file=sys.stderr)
        return 1
    try:
        print("$ " + " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT))).returncode
    finally:
        server.stop()
    out = (ROOT / a.output_dir).resolve()
    print()
    for species in ("Demo_pairedii", "Demo_singularis"):
        for f in sorted((out / species / "merged").glob("*.tsv")):
            print(f"merged table: {f}")
    print(
        f"pipeline exit code {rc}" + ("" if rc == 0 else f"; failed runs are in {out}/*/work/metadata/failed_runs.tsv")
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
