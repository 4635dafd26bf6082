#!/usr/bin/env python3
"""The offline demo: generate two small species, serve their reads on 127.0.0.1, run the pipeline.

    python scripts/demo.py [--output-dir output/demo] [--port 0]

The reads are laid out like ENA's archive under config/demo/data/archive/ and served by the
project's own HTTP server, on a free port unless ``--port`` names one. The species YAMLs of
config/demo/ are copied to OUTPUT_DIR/demo-config/ with their `download.mirrors` pointing at that
port (and their relative paths made absolute), and the pipeline runs on the copies.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.testing.fileserver import FileServer  # noqa: E402
from scripts.make_demo_data import build  # noqa: E402


def demo_configs(src: Path, dest: Path, mirror: str) -> Path:
    """Copies of the demo YAMLs in ``dest`` whose ENA mirror is ``mirror`` and whose paths are absolute."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.yaml"):
        old.unlink()
    for yml in sorted(src.glob("*.yaml")):
        doc = yaml.safe_load(yml.read_text())
        doc["reference"]["transcriptome"] = str((yml.parent / doc["reference"]["transcriptome"]).resolve())
        doc["metadata"]["file"] = str((yml.parent / doc["metadata"]["file"]).resolve())
        doc["download"]["mirrors"] = {"https://ftp.sra.ebi.ac.uk/": mirror}
        (dest / yml.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="output/demo")
    ap.add_argument("--port", type=int, default=0, help="port of the demo archive server (0: any free port)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    data = ROOT / "config" / "demo" / "data"
    build(data)
    try:
        server = FileServer(data / "archive", port=a.port)
        server.start()
    except OSError as e:
        print(f"cannot serve the demo archive on 127.0.0.1:{a.port}: {e}", file=sys.stderr)
        return 1
    config_dir = demo_configs(ROOT / "config" / "demo", (ROOT / a.output_dir) / "demo-config", server.url + "/")
    cli = Path(sys.executable).with_name("rnaseq-batch")
    cmd = [str(cli), "run", "--config-dir", str(config_dir), "--output-dir", a.output_dir, "--workers", str(a.workers)]
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
    if (out / "report.html").is_file():
        print(f"report: {out / 'report.html'}  (open it in a browser; it needs no network)")
    print(
        f"pipeline exit code {rc}" + ("" if rc == 0 else f"; failed runs are in {out}/*/work/metadata/failed_runs.tsv")
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
