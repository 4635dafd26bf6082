#!/usr/bin/env python3
"""Build the offline demo data: synthetic transcriptomes, reads in ENA's archive layout and
ENA-style metadata for two species (see config/demo/*.yaml).

    python scripts/make_demo_data.py [--root config/demo/data]

Output is deterministic (fixed seeds). Species whose files already match their parameters are
left alone, so running it again is quick. The demo runner serves ``{root}/archive/`` over HTTP
in place of ftp.sra.ebi.ac.uk.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from pipeline.testing.simulate import make_species_dataset  # noqa: E402

DEFAULT_ROOT = os.path.join(REPO_ROOT, "config", "demo", "data")
SEED = 20240601

DEMO_SPECIES = [
    {
        "species": "Demo_pairedii",
        "accessions": [f"DRR90000{i}" for i in range(1, 5)],
        "layout": "PAIRED",
        "reads_per_run": 20_000,
        "read_len": 75,
        "n_transcripts": 60,
        "seed": SEED,
    },
    {
        "species": "Demo_singularis",
        "accessions": [f"DRR90010{i}" for i in range(1, 4)],
        "layout": "SINGLE",
        "reads_per_run": 20_000,
        "read_len": 75,
        "n_transcripts": 40,
        "seed": SEED + 1000,
    },
]


def build(root: str = DEFAULT_ROOT, out=sys.stdout) -> list:
    """Build every demo species under ``root``; print what was written; return the results."""
    results = []
    for spec in DEMO_SPECIES:
        started = time.monotonic()
        result = make_species_dataset(root=root, **spec)
        elapsed = time.monotonic() - started
        results.append(result)
        name = spec["species"]
        if result["skipped"]:
            print(f"{name}: up to date, nothing written ({os.path.dirname(result['metadata'])})", file=out)
            continue
        print(
            f"{name}: {spec['layout']}, {len(spec['accessions'])} runs x {spec['reads_per_run']} "
            f"reads of {spec['read_len']} bp, {spec['n_transcripts']} transcripts ({elapsed:.1f} s)",
            file=out,
        )
        print(f"  wrote {result['transcriptome']}", file=out)
        print(f"  wrote {result['metadata']}", file=out)
        for run in result["runs"]:
            for path, size in zip(run["files"], run["bytes"]):
                print(f"  wrote {path} ({size} bytes)", file=out)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    build(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
