"""salmon behind one module: argument lists built by pure functions, and salmon's files read.

salmon (Debian's 1.10.1) is the second quantifier (``quant.tool: salmon``). A run's folder keeps
salmon's own files, where MultiQC's salmon module finds them (``quant.sf``, ``cmd_info.json``,
``lib_format_counts.json``, ``aux_info/meta_info.json``, ``libParams/``, ``logs/``), and beside
them the two files the rest of the pipeline reads from every run: ``abundance.tsv`` in kallisto's
columns (:func:`abundance_text`) and ``run_info.json`` with kallisto's figures
(:func:`run_info_from_meta`), so merging, the gene tables and amalgkit's layout read a salmon run
as they read a kallisto one. Like kallisto, salmon runs in the run's temporary folder with every
path relative to it (see :func:`pipeline.quant.kallisto.relative_to`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence

from .kallisto import path_arg

#: Where salmon writes its figures of a run, below the run's folder.
META_INFO = Path("aux_info") / "meta_info.json"
LIB_FORMAT_COUNTS = "lib_format_counts.json"
QUANT_SF = "quant.sf"
#: salmon's columns -> kallisto's (``abundance.tsv``), in kallisto's order.
ABUNDANCE_COLUMNS = {
    "Name": "target_id",
    "Length": "length",
    "EffectiveLength": "eff_length",
    "NumReads": "est_counts",
    "TPM": "tpm",
}
#: ``quant.strandedness`` -> salmon's library type, (paired, single). ``auto`` is salmon's ``A``.
LIBTYPES = {
    "auto": ("A", "A"),
    "unstranded": ("IU", "U"),
    "fr": ("ISF", "SF"),
    "rf": ("ISR", "SR"),
}
#: salmon's library type -> the pipeline's strandedness word (the stranded part of the code).
STRANDEDNESS_OF = {"U": "unstranded", "SF": "fr", "SR": "rf"}


class SalmonError(ValueError):
    """salmon's output cannot be read; the message names the file."""


def library_type(strandedness: str, single: bool) -> str:
    """salmon's ``-l`` for a ``quant.strandedness`` and a layout: ``A``, ``IU``/``U``, ``ISF``/``SF``, ..."""
    try:
        return LIBTYPES[strandedness][1 if single else 0]
    except KeyError:
        raise ValueError(f"unknown strandedness {strandedness!r}: expected one of {', '.join(LIBTYPES)}") from None


def strandedness_of(libtype: str) -> str:
    """The strandedness a salmon library type says, its mates' orientation (I, M, O) aside:
    ``ISR`` -> ``rf``, ``IU`` -> ``unstranded``, ``SF`` -> ``fr``; another text is returned as it is."""
    strand = libtype[1:] if len(libtype) > 1 and libtype[0] in "IMO" else libtype
    return STRANDEDNESS_OF.get(strand, libtype)


def index_args(fasta, index_dir, exe: str = "salmon", threads: int = 1, kmer: Optional[int] = None) -> list[str]:
    args = [exe, "index", "-t", path_arg(fasta), "-i", path_arg(index_dir), "-p", str(int(threads))]
    if kmer:
        args += ["-k", str(int(kmer))]
    return args


def quant_args(
    index,
    outdir,
    fastqs: Sequence,
    libtype: str = "A",
    threads: int = 1,
    fragment_length: Optional[float] = None,
    fragment_sd: Optional[float] = None,
    exe: str = "salmon",
) -> list[str]:
    """``salmon quant`` for one run: two FASTQs ``-1 -2``, one FASTQ ``-r`` with the fragment
    length distribution given (``--fldMean --fldSD``: salmon cannot learn it from single reads)."""
    fastqs = [path_arg(f) for f in fastqs]
    args = [exe, "quant", "-i", path_arg(index), "-l", libtype]
    if len(fastqs) == 2:
        args += ["-1", fastqs[0], "-2", fastqs[1]]
    elif len(fastqs) == 1:
        if not fragment_length or not fragment_sd:
            raise ValueError("single-end quant needs fragment_length and fragment_sd")
        args += ["-r", fastqs[0], "--fldMean", f"{fragment_length:g}", "--fldSD", f"{fragment_sd:g}"]
    else:
        raise ValueError(f"salmon quant takes one or two FASTQs, got {len(fastqs)}")
    return args + ["-p", str(int(threads)), "-o", path_arg(outdir)]


def version_args(exe: str = "salmon") -> list[str]:
    return [exe, "--version"]


def parse_version(text: str) -> Optional[str]:
    """``1.10.1`` from ``salmon 1.10.1``."""
    m = re.search(r"salmon\s+v?(\d\S*)", text)
    return m.group(1) if m else None


def read_json_file(path) -> dict:
    """A JSON object salmon wrote; SalmonError naming the file when it is missing or not one."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SalmonError(f"cannot read salmon's {path}: {e}") from None
    if not isinstance(obj, dict):
        raise SalmonError(f"{path}: a JSON {type(obj).__name__}, not salmon's object")
    return obj


def run_info_from_meta(meta: dict) -> dict:
    """kallisto's ``run_info.json`` fields from salmon's ``meta_info.json``: reads processed and
    mapped (salmon's ``num_mapped``, its ``percent_mapped``), and where they came from."""
    return {
        "n_targets": meta.get("num_valid_targets"),
        "n_bootstraps": meta.get("num_bootstraps", 0),
        "n_processed": int(meta["num_processed"]),
        "n_pseudoaligned": int(meta.get("num_mapped", 0)),
        "n_unique": None,
        "p_pseudoaligned": float(meta.get("percent_mapped", 0.0)),
        "p_unique": None,
        "quant_backend": "salmon",  # amalgkit's merge reads these two from RUN_run_info.json
        "length_model": "effective",
        "salmon_version": meta.get("salmon_version"),
        "library_types": meta.get("library_types"),
        "start_time": meta.get("start_time"),
    }


def abundance_text(quant_sf: str) -> str:
    """``quant.sf`` as kallisto's ``abundance.tsv``: the same rows, columns renamed and reordered,
    values as salmon wrote them. ValueError for a header without salmon's columns or a short line."""
    lines = quant_sf.splitlines()
    if not lines:
        raise ValueError("empty quant.sf")
    names = lines[0].split("\t")
    missing = [c for c in ABUNDANCE_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"quant.sf has no {', '.join(missing)} column")
    order = [names.index(c) for c in ABUNDANCE_COLUMNS]
    out = ["\t".join(ABUNDANCE_COLUMNS.values())]
    for n, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) != len(names):
            raise ValueError(f"quant.sf line {n} has {len(cells)} fields, its header {len(names)}")
        out.append("\t".join(cells[i] for i in order))
    return "\n".join(out) + "\n"


def detected_format(outdir) -> tuple[str, dict]:
    """The library type salmon found (``lib_format_counts.json``'s ``expected_format``) and the
    counts behind it (its ``strand_mapping_bias`` and reads per orientation)."""
    counts = read_json_file(Path(outdir) / LIB_FORMAT_COUNTS)
    figures = {k: counts[k] for k in ("strand_mapping_bias", "num_compatible_fragments") if k in counts}
    return str(counts.get("expected_format", "")), figures
