"""Merging per-run kallisto output into per-species tables (amalgkit's merge format)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import kallisto
from .util import atomic_write_text

MEASURES = {"est_counts": "est_counts", "tpm": "tpm", "eff_length": "eff_length"}
QC_COLUMNS = ["run", "layout", "n_processed", "n_pseudoaligned", "p_pseudoaligned"]


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(sep="\t", index=False))


def merge_species(species: str, quant_dir, runs: list[str], merged_dir, qc_extra: dict | None = None) -> dict:
    """Write ``{species}_{est_counts,tpm,eff_length}.tsv`` and ``{species}_qc.tsv`` into ``merged_dir``.

    ``runs`` gives the column order (metadata order); runs without an ``abundance.tsv`` are left
    out. ``qc_extra`` maps run -> dict of further QC columns. Returns the paths written and counts.
    """
    quant_dir, merged_dir = Path(quant_dir), Path(merged_dir)
    tables = {m: [] for m in MEASURES}
    qc_rows, present = [], []
    target_ids = None
    for run in runs:
        f = quant_dir / run / "abundance.tsv"
        if not f.is_file():
            continue
        ab = pd.read_csv(f, sep="\t", dtype={"target_id": str})
        if target_ids is None:
            target_ids = ab["target_id"]
        elif not ab["target_id"].equals(target_ids):
            raise ValueError(f"{f}: target_id list differs from the other runs of {species}; "
                             "were they quantified against different indexes?")
        for m, col in MEASURES.items():
            tables[m].append(ab[col].rename(run))
        info = kallisto.read_run_info(quant_dir / run)
        extra = (qc_extra or {}).get(run, {})
        qc_rows.append({"run": run, "layout": extra.get("layout", ""),
                        "n_processed": info.get("n_processed"), "n_pseudoaligned": info.get("n_pseudoaligned"),
                        "p_pseudoaligned": info.get("p_pseudoaligned"),
                        **{k: v for k, v in extra.items() if k != "layout"}})
        present.append(run)
    written = {}
    if target_ids is None:
        target_ids = pd.Series([], dtype=str, name="target_id")
    for m in MEASURES:
        df = pd.concat([target_ids.rename("target_id")] + tables[m], axis=1)
        path = merged_dir / f"{species}_{m}.tsv"
        _write_tsv(df, path)
        written[m] = str(path)
    qc = pd.DataFrame(qc_rows)
    if qc.empty:
        qc = pd.DataFrame(columns=QC_COLUMNS)
    path = merged_dir / f"{species}_qc.tsv"
    _write_tsv(qc, path)
    written["qc"] = str(path)
    return {"runs": present, "files": written}
