"""Merging per-run kallisto output into per-species tables (amalgkit's merge format).

Runs are read a block at a time: each block's columns go to a temporary file per measure beside
the output, and the blocks are then pasted line by line into the final table. Memory is bounded by
the block (``block`` runs x transcripts x 3 measures), not by the number of runs.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from . import kallisto
from .util import atomic_write_text

MEASURES = ("est_counts", "tpm", "eff_length")
QC_COLUMNS = ["run", "layout", "n_processed", "n_pseudoaligned", "p_pseudoaligned"]
BLOCK = 200


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(sep="\t", index=False))


def _paste(parts: list[Path], dest: Path) -> None:
    """Join the lines of ``parts`` side by side with tabs into ``dest`` (temp name, then rename)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    with ExitStack() as stack:
        ins = [stack.enter_context(open(p)) for p in parts]
        with open(tmp, "w") as out:
            for lines in zip(*ins):
                out.write("\t".join(line.rstrip("\n") for line in lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, dest)


def merge_species(species: str, quant_dir, runs: list[str], merged_dir, qc_extra: dict | None = None,
                  block: int = BLOCK) -> dict:
    """Write ``{species}_{est_counts,tpm,eff_length}.tsv`` and ``{species}_qc.tsv`` into ``merged_dir``.

    ``runs`` gives the column order (metadata order); runs without an ``abundance.tsv`` are left
    out. ``qc_extra`` maps run -> dict of further QC columns. Returns the paths written and counts.
    """
    quant_dir, merged_dir = Path(quant_dir), Path(merged_dir)
    merged_dir.mkdir(parents=True, exist_ok=True)
    present = [r for r in runs if (quant_dir / r / "abundance.tsv").is_file()]
    parts = {m: [] for m in MEASURES}
    qc_rows, target_ids = [], None
    try:
        for start in range(0, max(len(present), 1), block):
            chunk = present[start:start + block]
            cols = {m: [] for m in MEASURES}
            for run in chunk:
                f = quant_dir / run / "abundance.tsv"
                ab = pd.read_csv(f, sep="\t", dtype={"target_id": str}, usecols=["target_id", *MEASURES])
                if target_ids is None:
                    target_ids = ab["target_id"]
                elif not ab["target_id"].equals(target_ids):
                    raise ValueError(f"{f}: target_id list differs from the other runs of {species}; "
                                     "were they quantified against different indexes?")
                for m in MEASURES:
                    cols[m].append(ab[m].rename(run))
                info = kallisto.read_run_info(quant_dir / run)
                extra = (qc_extra or {}).get(run, {})
                qc_rows.append({"run": run, "layout": extra.get("layout", ""),
                                "n_processed": info.get("n_processed"), "n_pseudoaligned": info.get("n_pseudoaligned"),
                                "p_pseudoaligned": info.get("p_pseudoaligned"),
                                **{k: v for k, v in extra.items() if k != "layout"}})
            ids = target_ids if target_ids is not None else pd.Series([], dtype=str)
            for m in MEASURES:
                first = [ids.rename("target_id")] if start == 0 else []
                part = merged_dir / f".{species}_{m}.part{start // block:05d}"
                _write_tsv(pd.concat(first + cols[m], axis=1), part)
                parts[m].append(part)
        written = {}
        for m in MEASURES:
            dest = merged_dir / f"{species}_{m}.tsv"
            if len(parts[m]) == 1:
                os.replace(parts[m][0], dest)
            else:
                _paste(parts[m], dest)
            written[m] = str(dest)
    finally:
        for m in MEASURES:
            for part in parts[m]:
                part.unlink(missing_ok=True)
    qc = pd.DataFrame(qc_rows)
    if qc.empty:
        qc = pd.DataFrame(columns=QC_COLUMNS)
    path = merged_dir / f"{species}_qc.tsv"
    _write_tsv(qc, path)
    written["qc"] = str(path)
    return {"runs": present, "files": written}
