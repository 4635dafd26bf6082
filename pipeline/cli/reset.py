"""Reset the failed runs of a finished pipeline run so that the next run tries them again, and
only them.

    rnaseq-batch retry OUTPUT_DIR [--species NAME ...]

For every batch whose quant marker lists a failed run, the batch's download, quant and cleanup
markers are removed (with the species' own marker), so the next `luigi ... MultiSpecies` call
re-runs just those batches; inside them every run that already has its ``abundance.tsv`` is
skipped, so only the failed runs are downloaded and quantified again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..files import read_json
from ..paths import BATCH_STAGES, QUANT, SPECIES, SpeciesPaths, species_under


def failed_batches(paths: SpeciesPaths) -> dict[int, list[str]]:
    out = {}
    for b, m in sorted(paths.batch_markers(QUANT).items()):
        failed = [r["run"] for r in read_json(m)["runs"] if r["status"] == "failed"]
        if failed:
            out[b] = failed
    return out


def reset_failures(output_dir, species: list[str] | None = None) -> dict[str, dict[int, list[str]]]:
    """Remove the markers that stand between failed runs and a new attempt. Returns what was reset."""
    reset = {}
    for name in species or species_under(output_dir):
        paths = SpeciesPaths(output_dir, name)
        batches = failed_batches(paths)
        for b in batches:
            for stage in reversed(BATCH_STAGES):  # the last stage first: never a later marker alone
                paths.batch_marker(stage, b).unlink(missing_ok=True)
        if batches:
            paths.marker(SPECIES).unlink(missing_ok=True)
            reset[name] = batches
    return reset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rnaseq-batch retry", description=__doc__.split("\n\n")[0])
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
    print("now run the same command again (rnaseq-batch run ...): only these runs are fetched")
    return 0
