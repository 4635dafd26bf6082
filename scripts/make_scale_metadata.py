#!/usr/bin/env python3
"""Write a large synthetic species set-up to test how batching scales, and optionally measure it.

    python scripts/make_scale_metadata.py --runs 10000 --out DIR [--seed 1] [--measure]

writes into DIR:

``metadata.tsv``
    ENA read_run format, runs ``SRR1000000``, ``SRR1000001``...: PAIRED RNA-Seq TRANSCRIPTOMIC,
    ``read_count``/``base_count`` (100 or 150 bp mates), two scheme-less ``fastq_ftp`` URLs in
    ENA's archive layout, random hex ``fastq_md5`` and ``fastq_bytes`` of 0.5-5 GB per run
    (log-uniform, split about evenly between the mates; 0.55-0.95 bytes per base, as real runs).
    Nothing is served at those URLs: the table is for planning, not downloading.
``transcripts.fa``
    a tiny transcriptome (20 random transcripts), so the species YAML validates.
``Scale_test.yaml``
    the species config pointing at both (paths relative to the YAML).

``--measure`` then runs the real code on it: ``pipeline.inputs.metadata.load_runs``,
``pipeline.plan.batches.make_batches`` (``batch.size`` and, with ``--max-bytes``, a byte budget too)
and ``write_batch`` for every batch into ``DIR/measure/batches/``, and prints seconds per step
and the process's peak RSS (``resource.getrusage``). Output is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import shutil
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from pipeline.testing.simulate import ENA_FTP_HOST, METADATA_COLUMNS, ena_fastq_dir  # noqa: E402

SPECIES = "Scale_test"
FIRST_RUN = 1_000_000
MIN_RUN_BYTES = 500_000_000
MAX_RUN_BYTES = 5_000_000_000

YAML = """\
species: {species}
reference: {{transcriptome: transcripts.fa}}
metadata: {{file: metadata.tsv}}
batch: {{size: {batch_size}}}
download: {{parallel: 4}}
quant: {{threads: 1, fragment_length: 200, fragment_sd: 20}}
"""


def metadata_rows(n_runs: int, seed: int):
    """Yield one dict per run (columns of :data:`pipeline.simulate.METADATA_COLUMNS`)."""
    rng = random.Random(seed)
    lo, hi = math.log(MIN_RUN_BYTES), math.log(MAX_RUN_BYTES)
    for i in range(n_runs):
        acc = f"SRR{FIRST_RUN + i}"
        total = int(math.exp(rng.uniform(lo, hi)))
        share = rng.uniform(0.47, 0.53)
        sizes = [int(total * share), total - int(total * share)]
        read_len = rng.choice((100, 150))
        bases = total / rng.uniform(0.55, 0.95)
        spots = max(1, int(bases / (2 * read_len)))
        folder = ena_fastq_dir(acc)
        yield {
            "run_accession": acc,
            "library_layout": "PAIRED",
            "library_strategy": "RNA-Seq",
            "library_source": "TRANSCRIPTOMIC",
            "scientific_name": SPECIES.replace("_", " "),
            "read_count": str(spots),
            "base_count": str(spots * 2 * read_len),
            "fastq_ftp": ";".join(f"{ENA_FTP_HOST}/{folder}/{acc}_{m}.fastq.gz" for m in (1, 2)),
            "fastq_md5": ";".join(f"{rng.getrandbits(128):032x}" for _ in (1, 2)),
            "fastq_bytes": ";".join(str(s) for s in sizes),
        }


def write_setup(out: str, n_runs: int, seed: int, batch_size: int = 8) -> dict:
    os.makedirs(out, exist_ok=True)
    meta = os.path.join(out, "metadata.tsv")
    with open(meta + ".tmp", "w", newline="") as fh:
        fh.write("\t".join(METADATA_COLUMNS) + "\n")
        for row in metadata_rows(n_runs, seed):
            fh.write("\t".join(row[c] for c in METADATA_COLUMNS) + "\n")
    os.replace(meta + ".tmp", meta)
    rng = random.Random(f"tx:{seed}")
    fasta = os.path.join(out, "transcripts.fa")
    with open(fasta, "w") as fh:
        for i in range(1, 21):
            seq = "".join(rng.choices("ACGT", k=rng.randint(500, 1500)))
            fh.write(f">tx{i:04d}\n" + "\n".join(seq[j : j + 60] for j in range(0, len(seq), 60)) + "\n")
    yaml_path = os.path.join(out, f"{SPECIES}.yaml")
    with open(yaml_path, "w") as fh:
        fh.write(YAML.format(species=SPECIES, batch_size=batch_size))
    return {"metadata": meta, "transcriptome": fasta, "config": yaml_path}


def peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def measure(setup: dict, out: str, batch_size: int, max_bytes=None) -> dict:
    from pipeline.inputs import metadata
    from pipeline.inputs.species_config import load_species_config
    from pipeline.plan import batches

    figures = {"rss_mib_start": round(peak_rss_mib(), 1)}
    t = time.perf_counter()
    cfg = load_species_config(setup["config"])
    runs, skipped = metadata.load_runs(cfg.metadata_file, cfg.selection)
    figures["load_runs_s"] = round(time.perf_counter() - t, 3)
    figures["runs"], figures["skipped"] = len(runs), len(skipped)
    figures["rss_mib_after_load"] = round(peak_rss_mib(), 1)

    t = time.perf_counter()
    groups = batches.make_batches(runs, batch_size, max_bytes)
    figures["make_batches_s"] = round(time.perf_counter() - t, 4)
    figures["batches"] = len(groups)
    if max_bytes is not None:
        figures["max_bytes"] = max_bytes
        figures["largest_batch_bytes"] = max(batches.batch_bytes(g)[0] for g in groups)
        figures["oversized_runs"] = len(batches.oversized_runs(runs, max_bytes))
        figures["runs_per_batch_mean"] = round(len(runs) / len(groups), 2)

    folder = os.path.join(out, "measure", "batches")
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    for i, group in enumerate(groups):
        batches.write_batch(os.path.join(folder, f"batch_{i:05d}.json"), i, group)
    figures["write_batches_s"] = round(time.perf_counter() - t, 3)
    sizes = [e.stat().st_size for e in os.scandir(folder)]
    figures["batch_file_bytes_mean"] = round(sum(sizes) / len(sizes))
    figures["batch_files_bytes_total"] = sum(sizes)

    t = time.perf_counter()
    back = sum(len(batches.read_batch(os.path.join(folder, f"batch_{i:05d}.json"))) for i in range(len(groups)))
    figures["read_batches_s"] = round(time.perf_counter() - t, 3)
    assert back == len(runs), (back, len(runs))
    figures["rss_mib_peak"] = round(peak_rss_mib(), 1)
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000, help="number of runs (default 10000)")
    ap.add_argument("--out", required=True, help="folder to write metadata.tsv, transcripts.fa and the YAML")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8, help="batch.size in the YAML (default 8)")
    ap.add_argument("--measure", action="store_true", help="time load_runs + make_batches + write_batch")
    ap.add_argument("--max-bytes", default=None, help="with --measure: a byte budget per batch too, e.g. 40G")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.runs > 9_000_000:
        ap.error("--runs must be between 1 and 9000000")
    t = time.perf_counter()
    setup = write_setup(args.out, args.runs, args.seed, args.batch_size)
    print(f"wrote {args.runs} runs in {time.perf_counter() - t:.2f} s: {setup['config']}")
    if args.measure:
        from pipeline.plan.sizes import parse_size

        max_bytes = parse_size(args.max_bytes) if args.max_bytes else None
        for key, value in measure(setup, args.out, args.batch_size, max_bytes).items():
            print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
