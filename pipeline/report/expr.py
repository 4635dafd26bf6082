"""Expression QC from a merged TPM table: run-to-run correlation of log1p(TPM) and a PCA of the runs.

numpy when it is installed, else plain Python (slower: fine for a few hundred runs). Transcripts
whose value is the same in every run (constant rows, all zeros included) carry no information and
are left out of both; a run whose values are all equal has no correlation (None). One run: no
PCA; two runs: one component.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is usually there
    np = None  # type: ignore[assignment]


def _read_plain(path: Path) -> tuple[list[str], list[list[float]]]:
    """Runs and log1p(TPM) columns (one list per run) of the varying rows."""
    with open(path, encoding="utf-8") as fh:
        runs = fh.readline().rstrip("\n").split("\t")[1:]
        cols: list[list[float]] = [[] for _ in runs]
        for line in fh:
            vals = [math.log1p(max(0.0, float(x))) for x in line.rstrip("\n").split("\t")[1:]]
            if len(vals) != len(runs) or max(vals) == min(vals):
                continue
            for c, v in zip(cols, vals):
                c.append(v)
    return runs, cols


def _plain(runs: list[str], cols: list[list[float]]) -> dict:
    n, m = len(runs), len(cols[0]) if cols else 0
    centred = []
    for c in cols:
        mu = sum(c) / m if m else 0.0
        centred.append([v - mu for v in c])
    norms = [math.sqrt(sum(v * v for v in c)) for c in centred]
    corr: list[list[Optional[float]]] = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            if norms[i] > 0 and norms[j] > 0:
                r = sum(a * b for a, b in zip(centred[i], centred[j])) / (norms[i] * norms[j])
                corr[i][j] = corr[j][i] = max(-1.0, min(1.0, r))
    # PCA of runs: centre each transcript across runs, eigenvectors of the n x n Gram matrix
    rowmean = [sum(cols[k][t] for k in range(n)) / n for t in range(m)] if n else []
    x = [[cols[k][t] - rowmean[t] for t in range(m)] for k in range(n)]
    gram = [[sum(a * b for a, b in zip(x[i], x[j])) for j in range(n)] for i in range(n)]
    total = sum(gram[i][i] for i in range(n))
    comps, values = [], []
    g = [row[:] for row in gram]
    for _ in range(min(2, n - 1)):
        v = [1.0 + 0.01 * i for i in range(n)]
        lam = 0.0
        for _ in range(500):
            w = [sum(g[i][j] * v[j] for j in range(n)) for i in range(n)]
            norm = math.sqrt(sum(a * a for a in w))
            if norm == 0:
                break
            v = [a / norm for a in w]
            lam = norm
        comps.append([a * math.sqrt(max(lam, 0.0)) for a in v])
        values.append(lam)
        g = [[g[i][j] - lam * v[i] * v[j] for j in range(n)] for i in range(n)]
    return {"corr": corr, "pcs": comps, "explained": [lam / total if total > 0 else 0.0 for lam in values]}


def _numpy(path: Path) -> tuple[list[str], Any]:
    with open(path, encoding="utf-8") as fh:
        runs = fh.readline().rstrip("\n").split("\t")[1:]
        if not runs:
            return runs, np.zeros((0, 0))
        a = np.loadtxt(fh, delimiter="\t", usecols=range(1, len(runs) + 1), ndmin=2, dtype=np.float64)
    a = np.log1p(np.clip(a, 0, None))
    a = a[a.max(axis=1) > a.min(axis=1)] if a.size else a.reshape(0, len(runs))
    return runs, a


def _with_numpy(a: Any) -> dict:
    n = a.shape[1]
    if a.shape[0] == 0:  # nothing varies: no correlation, no PCA
        return {"corr": [[None] * n for _ in range(n)], "pcs": [], "explained": []}
    c = a - a.mean(axis=0, keepdims=True)
    norms = np.sqrt((c * c).sum(axis=0))
    ok = norms > 0
    safe = np.where(ok, norms, 1.0)
    corr = (c.T @ c) / np.outer(safe, safe)
    corr = np.clip(corr, -1.0, 1.0)
    corr[~ok, :] = np.nan
    corr[:, ~ok] = np.nan
    x = (a - a.mean(axis=1, keepdims=True)).T  # runs x transcripts, each transcript centred
    pcs: list[list[float]] = []
    explained: list[float] = []
    if n >= 2 and x.size:
        gram = x @ x.T  # n x n: its eigenvectors scaled by sqrt(eigenvalue) are the PC scores
        values, vectors = np.linalg.eigh(gram)
        order = np.argsort(values)[::-1]
        total = float(np.trace(gram))
        for i in order[: min(2, n - 1)]:
            lam = max(float(values[i]), 0.0)
            pcs.append((vectors[:, i] * np.sqrt(lam)).tolist())
            explained.append(lam / total if total > 0 else 0.0)
    corr_list = [[None if math.isnan(v) else float(v) for v in row] for row in corr.tolist()]
    return {"corr": corr_list, "pcs": pcs, "explained": explained}


def expression(tpm_path) -> dict:
    """``{"available", "runs", "n_transcripts", "corr" (runs x runs, None where undefined),
    "pcs" ([PC1 per run, PC2 per run] as far as there are components), "explained", "note"}``."""
    tpm_path = Path(tpm_path)
    out: dict[str, Any] = {"available": False, "runs": [], "corr": [], "pcs": [], "explained": [], "note": ""}
    if not tpm_path.is_file():
        out["note"] = "no merged TPM table yet: the species has not finished"
        return out
    try:
        if np is not None:
            runs, a = _numpy(tpm_path)
            used = int(a.shape[0]) if len(runs) else 0
            figures = _with_numpy(a) if runs else {"corr": [], "pcs": [], "explained": []}
        else:  # pragma: no cover
            runs, cols = _read_plain(tpm_path)
            used = len(cols[0]) if cols else 0
            figures = _plain(runs, cols) if runs else {"corr": [], "pcs": [], "explained": []}
    except (OSError, ValueError) as e:
        out["note"] = f"cannot read {tpm_path.name}: {e}"
        return out
    notes = []
    if not runs:
        notes.append("the TPM table holds no run")
    elif len(runs) == 1:
        notes.append("one run: no PCA")
    elif len(runs) == 2:
        notes.append("two runs: one principal component")
    if runs and used == 0:
        notes.append("every transcript has the same value in every run: nothing to correlate")
    out.update(available=bool(runs), runs=runs, n_transcripts=used, note="; ".join(notes), **figures)
    return out
