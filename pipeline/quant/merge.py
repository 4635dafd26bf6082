"""Merging per-run kallisto output into per-species tables (amalgkit's merge format).

Runs are read a block at a time: each block's columns go to a temporary file per measure beside
the output, and the blocks are then pasted line by line into the final table. Memory is bounded by
the block (``block`` runs x transcripts x 3 measures), not by the number of runs.

Plain Python, no pandas (importing it costs most of a second per Luigi process): kallisto's values
are passed through as the text it wrote, never parsed as floats and formatted again.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from contextlib import ExitStack
from itertools import repeat
from pathlib import Path
from typing import Any, Optional

from ..files import atomic_write_text, staged_file
from . import kallisto

MEASURES = ("est_counts", "tpm", "eff_length")
QC_COLUMNS = ["run", "layout", "n_processed", "n_pseudoaligned", "p_pseudoaligned"]
BLOCK = 200
# A block's values are held as one "\n"-joined string per run, measure and ROWS rows (a few bytes
# per value rather than a ~55-byte str object each) and split again ROWS rows at a time to write.
ROWS = 1024
_NOT_TAB_OR_NEWLINE = bytes(sorted(set(range(256)) - {ord("\t"), ord("\n")}))


def _checked_body(path) -> tuple[list[str], bytes]:
    """The header names and the body of a kallisto ``abundance.tsv`` whose lines all have the
    header's field count, in UTF-8, "\r\n" read as "\n", without a BOM or trailing newlines.

    A missing column or a line whose field count differs from the header's raises ValueError
    naming the file.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    if b"\r" in data:  # line ends as text mode would read them
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    start, end = (3 if data.startswith(codecs.BOM_UTF8) else 0), len(data)
    while end > start and data[end - 1] == 10:  # trailing newlines (found, so the body is copied once)
        end -= 1
    eol = data.find(b"\n", start, end)
    header, body = (data[start:end], b"") if eol < 0 else (data[start:eol], data[eol + 1 : end])
    del data
    try:
        names = header.decode("utf-8").split("\t")
        missing = [c for c in ("target_id", *MEASURES) if c not in names]
        if missing:
            shown = "\t".join(names)[:200]
            raise ValueError(f"no {', '.join(missing)} column in its header {shown!r}")
        width = len(names)
        if body:  # every line has width - 1 tabs: compare its tabs and newlines with that skeleton
            tabs = b"\t" * (width - 1)
            if body.translate(None, _NOT_TAB_OR_NEWLINE) != (tabs + b"\n") * body.count(b"\n") + tabs:
                counts = map(bytes.count, body.split(b"\n"), repeat(b"\t"))
                n, k = next((n, k) for n, k in enumerate(counts, 2) if k != width - 1)
                raise ValueError(f"line {n} has {k + 1} fields, its header has {width}")
            body.decode("utf-8")
    except ValueError as e:  # UnicodeDecodeError included
        raise ValueError(f"{path}: malformed abundance.tsv: {e}") from None
    return names, body


def read_abundance(path) -> tuple[list[str], dict[str, list[str]]]:
    """The target_id list and the MEASURES columns of a kallisto ``abundance.tsv``, as text.

    Columns are found by their header names; "\r\n" line ends and a missing final newline are
    fine. A missing column or a line whose field count differs from the header's raises ValueError
    naming the file.
    """
    names, body = _checked_body(path)
    fields = body.decode("utf-8").replace("\n", "\t").split("\t") if body else []
    del body
    width = len(names)
    return (fields[names.index("target_id") :: width], {m: fields[names.index(m) :: width] for m in MEASURES})


def read_abundance_bytes(path) -> tuple[list[bytes], dict[str, list[bytes]]]:
    """:func:`read_abundance` as UTF-8 bytes (the same checks and errors)."""
    names, body = _checked_body(path)
    fields = body.replace(b"\n", b"\t").split(b"\t") if body else []
    del body
    width = len(names)
    return (fields[names.index("target_id") :: width], {m: fields[names.index(m) :: width] for m in MEASURES})


def same_targets(path, ids: list, targets: Optional[list], species: str) -> list:
    """``targets`` (``ids`` when None), after checking that the run read from ``path`` has them."""
    if targets is not None and ids != targets:
        raise ValueError(
            f"{path}: target_id list differs from the other runs of {species}; "
            "were they quantified against different indexes?"
        )
    return ids if targets is None else targets


def _pack(values: list, newline: Any = "\n") -> list:
    """``values`` (str, or bytes with ``newline`` b"\n") as "\n"-joined strings of ROWS values each."""
    return [newline.join(values[i : i + ROWS]) for i in range(0, len(values), ROWS)]


def _write_part(
    path: Path, header: list[str], n_rows: int, target_ids: list[str] | None, packed: list[list[str]], final: bool
) -> None:
    """Write a header line, then ``n_rows`` rows: the target_id (when given) and one value per run.
    ``final``: the part is renamed into place as the table (one block), so it is synced to disk;
    parts that are pasted together and deleted are not."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("\t".join(header) + "\n")
        for k in range(0, -(-n_rows // ROWS)):
            columns = [col[k].split("\n") for col in packed]
            if target_ids is not None:
                columns.insert(0, target_ids[k * ROWS : (k + 1) * ROWS])
            out.write("\n".join(map("\t".join, zip(*columns))))
            out.write("\n")
        if final:
            out.flush()
            os.fsync(out.fileno())


def _paste(parts: list[Path], dest: Path) -> None:
    """Join the lines of ``parts`` side by side with tabs into ``dest`` (temp name, then rename)."""
    with ExitStack() as stack:
        ins = [stack.enter_context(open(p, encoding="utf-8", newline="")) for p in parts]
        with staged_file(dest, "w", encoding="utf-8", newline="") as out:
            for lines in zip(*ins):
                out.write("\t".join([line.rstrip("\n") for line in lines]) + "\n")


def qc_row(quant_dir: Path, run: str, qc_extra: dict | None) -> dict:
    """A run's row of the QC table: kallisto's counts from its ``run_info.json``, then ``qc_extra``'s."""
    info = kallisto.read_run_info(quant_dir / run)
    extra = (qc_extra or {}).get(run, {})
    return {
        "run": run,
        "layout": extra.get("layout", ""),
        "n_processed": info.get("n_processed"),
        "n_pseudoaligned": info.get("n_pseudoaligned"),
        "p_pseudoaligned": info.get("p_pseudoaligned"),
        **{k: v for k, v in extra.items() if k != "layout"},
    }


def qc_text(rows: list[dict]) -> str:
    """The QC table: QC_COLUMNS then further keys in first-seen order; ``str`` of each value, None
    or a missing key as an empty cell; quoted as pandas' to_csv would (csv.QUOTE_MINIMAL)."""
    columns = dict.fromkeys(QC_COLUMNS)
    for row in rows:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if row.get(c) is None else str(row[c]) for c in columns] for row in rows)
    return buf.getvalue()


def merge_species(
    species: str, quant_dir, runs: list[str], merged_dir, qc_extra: dict | None = None, block: int = BLOCK
) -> dict:
    """Write ``{species}_{est_counts,tpm,eff_length}.tsv`` and ``{species}_qc.tsv`` into ``merged_dir``.

    ``runs`` gives the column order (metadata order); runs without an ``abundance.tsv`` are left
    out. ``qc_extra`` maps run -> dict of further QC columns. Returns the paths written and counts.
    """
    quant_dir, merged_dir = Path(quant_dir), Path(merged_dir)
    merged_dir.mkdir(parents=True, exist_ok=True)
    present = [r for r in runs if (quant_dir / r / "abundance.tsv").is_file()]
    parts: dict[str, list[Path]] = {m: [] for m in MEASURES}
    qc_rows: list[dict] = []
    target_ids: Optional[list[str]] = None
    one_block = len(present) <= block
    try:
        for start in range(0, max(len(present), 1), block):
            chunk = present[start : start + block]
            packed: dict[str, list[list[str]]] = {m: [] for m in MEASURES}
            for run in chunk:
                f = quant_dir / run / "abundance.tsv"
                ids, cols = read_abundance(f)
                target_ids = same_targets(f, ids, target_ids, species)
                for m in MEASURES:
                    packed[m].append(_pack(cols[m]))
                del ids, cols
                qc_rows.append(qc_row(quant_dir, run, qc_extra))
            ids = target_ids if target_ids is not None else []
            for m in MEASURES:
                part = merged_dir / f".{species}_{m}.part{start // block:05d}"
                parts[m].append(part)  # listed before it is written, so `finally` removes a partial one
                if start == 0:
                    _write_part(part, ["target_id", *chunk], len(ids), ids, packed[m], one_block)
                else:
                    _write_part(part, chunk, len(ids), None, packed[m], one_block)
                packed[m] = []  # written: let the block's values go
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
    path = merged_dir / f"{species}_qc.tsv"
    atomic_write_text(path, qc_text(qc_rows))
    written["qc"] = str(path)
    return {"runs": present, "files": written}
