"""Write a run's self-contained HTML report, finished or not.

rnaseq-batch report OUTPUT_DIR [--config-dir DIR]
"""

from __future__ import annotations

import argparse
import sys

from ..report import write_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rnaseq-batch report", description=__doc__.split("\n\n")[0])
    ap.add_argument("output_dir")
    ap.add_argument("--config-dir", help="the species YAMLs (default: the one the last run was started with)")
    a = ap.parse_args(argv)
    try:
        path = write_report(a.output_dir, a.config_dir)
    except FileNotFoundError as e:
        print(str(e), file=sys.stderr)
        return 2
    print(path)
    return 0
