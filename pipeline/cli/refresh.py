"""Plan a species again after its metadata changed: new runs are added, finished work is kept.

    rnaseq-batch refresh CONFIG_DIR OUTPUT_DIR [--species NAME ...]

For a species with ``metadata.query`` the ENA portal is asked again (the saved answer is replaced
only by a complete new one). Then the species' plan and final markers are removed, so the next
``luigi ... MultiSpecies`` call plans again: every batch up to the last one that had started keeps
exactly its runs, runs not planned before go into new batches after them, and runs that already
have their ``abundance.tsv`` are not fetched again.
"""

from __future__ import annotations

import argparse
import sys

from .. import tasks
from ..inputs import ena
from ..inputs.species_config import load_all
from ..model import InputError
from ..paths import SPECIES, SPLIT, SpeciesPaths
from ..steps import fetch_ena_metadata


def refresh(config_dir, output_dir, species: list[str] | None = None, portal_url: str | None = None) -> list[dict]:
    shared = tasks.shared()  # luigi.cfg's [pipeline] section: the retry policy and the portal URL
    if portal_url:
        shared.portal_url = portal_url
    done = []
    for cfg in load_all(config_dir):
        if species and cfg.species not in species:
            continue
        p = SpeciesPaths(output_dir, cfg.species)
        info = {"species": cfg.species}
        if cfg.metadata_query:
            got = fetch_ena_metadata(cfg, p, shared, refresh=True)
            info["runs_from_ena"] = got["runs"]
        for name in (SPECIES, SPLIT):  # the final marker first: never a later marker alone
            p.marker(name).unlink(missing_ok=True)
        done.append(info)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rnaseq-batch refresh", description=__doc__.split("\n\n")[0])
    ap.add_argument("config_dir")
    ap.add_argument("output_dir")
    ap.add_argument("--species", action="append", help="only this species (repeatable)")
    ap.add_argument("--ena-portal-url", help="override [pipeline] ena_portal_url")
    a = ap.parse_args(argv)
    try:
        done = refresh(a.config_dir, a.output_dir, a.species, a.ena_portal_url)
    except (InputError, ena.EnaError) as e:
        print(f"refresh failed: {e}", file=sys.stderr)
        return 2
    for info in done:
        extra = f", ENA now lists {info['runs_from_ena']} runs" if "runs_from_ena" in info else ""
        print(f"{info['species']}: will be planned again on the next run{extra}")
    if not done:
        print("no species matched")
    return 0
