"""Make the failed runs of a finished pipeline run again, and only those.

    python -m pipeline.retry OUTPUT_DIR [--species NAME ...]

For every batch whose quant marker lists a failed run, the batch's download, quant and cleanup
markers are removed (with the species' own marker), so the next `luigi ... MultiSpecies` call
re-runs just those batches; inside them every run that already has its ``abundance.tsv`` is
skipped, so only the failed runs are downloaded and quantified again.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .layout import SpeciesLayout
from .util import read_json


def failed_batches(layout: SpeciesLayout) -> dict[int, list[str]]:
    out = {}
    for m in sorted(layout.markers.glob("quant_*.json")):
        failed = [r["run"] for r in read_json(m)["runs"] if r["status"] == "failed"]
        if failed:
            out[int(m.stem.split("_")[1])] = failed
    return out


def reset_failures(output_dir, species: list[str] | None = None) -> dict[str, dict[int, list[str]]]:
    """Remove the markers that stand between failed runs and a new attempt. Returns what was reset."""
    output_dir = Path(output_dir)
    names = species or sorted(p.name for p in output_dir.iterdir() if (p / "work" / "markers").is_dir())
    reset = {}
    for name in names:
        layout = SpeciesLayout(output_dir, name)
        batches = failed_batches(layout)
        for b in batches:
            for stage in ("cleanup", "quant", "download"):  # reverse order: never a later marker alone
                layout.marker(f"{stage}_{b:05d}").unlink(missing_ok=True)
        if batches:
            layout.marker("species").unlink(missing_ok=True)
            reset[name] = batches
    return reset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.retry", description=__doc__.split("\n\n")[0])
    ap.add_argument("output_dir")
    ap.add_argument("--species", action="append", help="only this species (repeatable)")
    a = ap.parse_args(argv)
    if not Path(a.output_dir).is_dir():
        print(f"output directory not found: {a.output_dir}", file=sys.stderr)
        return 2
    reset = reset_failures(a.output_dir, a.species)
    if not reset:
        print("no failed runs recorded; nothing to retry")
        return 0
    for name, batches in reset.items():
        runs = [r for rs in batches.values() for r in rs]
        print(f"{name}: {len(runs)} failed run(s) in {len(batches)} batch(es) will run again: {' '.join(runs)}")
    print("now re-run the same luigi command")
    return 0


if __name__ == "__main__":
    sys.exit(main())
