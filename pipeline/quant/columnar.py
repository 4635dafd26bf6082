"""A compact columnar copy of a species' merged tables: ``merged/{species}.h5ad``.

AnnData's HDF5 layout, read by ``anndata.read_h5ad`` and ``scanpy.read_h5ad`` (pandas through
``.to_df()``) and by any HDF5 reader (R's hdf5r or rhdf5): runs are the observations (rows),
transcripts the variables; ``X`` holds est_counts, ``layers/tpm`` and ``layers/eff_length`` the
others, as float64 values of kallisto's text (what pandas reads from the TSV; ``-nan`` is NaN);
``obs`` is indexed by ``run``, ``var`` by ``target_id``, in the tables' order.

Each run is one HDF5 chunk of each measure, deflate-compressed (the filter every HDF5 build
has). So a later copy takes the compressed chunks of unchanged runs from the previous copy as
they are, neither parsed nor compressed again; only runs of new segments are parsed from the
merge store's text. ``numpy`` and ``h5py`` are imported when a copy is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..files import staged_path
from .merge import MEASURES

SUFFIX = ".h5ad"
#: where each measure goes in the file
DATASETS = {"est_counts": "X", "tpm": "layers/tpm", "eff_length": "layers/eff_length"}
#: deflate level 1: within 5 % of level 4's size on kallisto's values, and faster to write
GZIP_LEVEL = 1


def path_for(species: str, merged_dir) -> Path:
    return Path(merged_dir) / f"{species}{SUFFIX}"


def _attrs(obj, kind: str, version: str, **more) -> None:
    obj.attrs.update({"encoding-type": kind, "encoding-version": version, **more})


def _frame(h5, name: str, index: str, values: list[bytes]) -> None:
    import h5py
    import numpy as np

    group = h5.create_group(name)
    _attrs(group, "dataframe", "0.2.0", _index=index)
    group.attrs["column-order"] = np.array([], dtype=np.float64)
    data = group.create_dataset(index, data=values, dtype=h5py.string_dtype("utf-8"), track_times=False)
    _attrs(data, "string-array", "0.2.0")


def parse_columns(path: Path, columns: list[int]):
    """Columns ``columns`` of a merge store segment (tab-separated text) as a float64 array, a
    column per run; ``nan``, ``-nan`` and ``inf`` as C reads them."""
    import numpy as np

    return np.loadtxt(path, delimiter="\t", dtype=np.float64, ndmin=2, comments=None, usecols=columns)


def write_h5ad(
    dest: Path,
    rows: list[tuple[str, int, int]],
    targets: list[bytes],
    segment_files: list[tuple[dict[str, Path], int]],
    previous: Optional[list[tuple[str, int, int]]],
) -> None:
    """Write ``dest`` for ``rows`` (run, size, mtime of its abundance.tsv, in table order).

    ``segment_files`` gives, per segment in order, its file of each measure and its run count
    (the rows, laid side by side). ``previous``: the rows of the copy now at ``dest`` when it
    is still the one written for them (their chunks are reused), else None."""
    import h5py

    n_runs, n_tx = len(rows), len(targets)
    old_row = {key: j for j, key in enumerate(previous or [])}
    chunked = n_runs > 0 and n_tx > 0
    layout = {"chunks": (1, n_tx), "compression": "gzip", "compression_opts": GZIP_LEVEL} if chunked else {}
    with staged_path(dest) as tmp, h5py.File(tmp, "w") as h5:
        _attrs(h5, "anndata", "0.1.0")
        for name in ("layers", "obsm", "varm", "obsp", "varp", "uns"):
            _attrs(h5.create_group(name), "dict", "0.1.0")
        _frame(h5, "obs", "run", [r.encode("utf-8") for r, _, _ in rows])
        _frame(h5, "var", "target_id", targets)
        sets = {
            m: h5.create_dataset(DATASETS[m], (n_runs, n_tx), dtype="f8", track_times=False, **layout) for m in MEASURES
        }
        for d in sets.values():
            _attrs(d, "array", "0.2.0")
        if not chunked:
            return
        old = h5py.File(dest, "r") if old_row and dest.is_file() else None
        try:
            reusable = old is not None and all(
                old[DATASETS[m]].chunks == (1, n_tx) and old[DATASETS[m]].compression == "gzip" for m in MEASURES
            )
            olds = {m: old[DATASETS[m]].id for m in MEASURES} if old is not None and reusable else {}
            i = 0
            for files, width in segment_files:
                here = rows[i : i + width]
                fresh = [c for c, key in enumerate(here) if not (olds and key in old_row)]
                for m in MEASURES:
                    src, dst = olds.get(m), sets[m].id
                    for c, key in enumerate(here):
                        if c not in fresh and src is not None:
                            mask, chunk = src.read_direct_chunk((old_row[key], 0))
                            dst.write_direct_chunk((i + c, 0), chunk, mask)
                    if fresh:
                        values = parse_columns(files[m], fresh)
                        if len(fresh) == width:  # the whole segment: one write
                            sets[m][i : i + width] = values.T
                        else:
                            for k, c in enumerate(fresh):
                                sets[m][i + c] = values[:, k]
                        del values
                i += width
        finally:
            if old is not None:
                old.close()
