"""Our output in the layout amalgkit's downstream steps read (amalgkit 0.16.71, commit 8c1a759).

``merge`` scans ``quant/RUN/RUN_abundance.tsv``, ``RUN_run_info.json`` (:func:`link_run_files`);
``cstmm --dir_count`` reads each folder with one ``*est_counts.tsv`` and ``metadata.tsv`` beside
them (:func:`write_merge_dir`), folders named by amalgkit's :func:`species_token` of the
``scientific_name``. :func:`publish_species` is the one call at a species' end. Every file is
renamed into place; ``metadata.tsv`` follows :func:`pipeline.model.tsv_text` whatever values hold.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import unicodedata
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence

from ..files import atomic_write_json, atomic_write_text, read_json, staged_file, staged_path
from ..heartbeat import FOLDER
from ..inputs.formats import MISSING_VALUES
from ..inputs.metadata import read_table
from ..model import InputError, tsv_cell, tsv_text
from ..paths import SPLIT, SpeciesPaths, species_under
from .run_states import RunState, read_tsv, run_states  # noqa: F401  (RunState: part of this module's interface)

logger = logging.getLogger(__name__)

#: amalgkit's merged tables, and its quant_model.tsv (``merge.collect_quant_models``): salmon too
#: gives effective lengths
MEASURES = ("eff_length", "est_counts", "tpm")
QUANT_MODEL_COLUMNS, KALLISTO_MODEL = ("run", "backend", "length_model"), ("kallisto", "effective")
#: ``metadata_utils.Metadata.column_names`` as ``reorder`` puts them, then merge's ``mapping_rate``
AMALGKIT_COLUMNS = tuple(
    "scientific_name sample_group tissue genotype sex age treatment source_name is_sampled is_qualified "
    "exclusion protocol bioproject biosample experiment run sra_primary sra_sample sra_study study_title "
    "exp_title design sample_title sample_description lib_name lib_layout lib_strategy lib_source "
    "lib_selection platform instrument total_spots total_bases size nominal_length nominal_sdev spot_length "
    "read_index read_class read_type base_coord center submitter_id pubmed_id taxid published_date NCBI_Link "
    "AWS_Link GCP_Link ENA_SRA_Link DDBJ_SRA_Link mapping_rate".split()
)
#: Ours after amalgkit's: the reason in words, a row's own differing name, an explicit token (if needed)
DETAIL, ORIGINAL_NAME, TOKEN_COLUMN = "exclusion_detail", "original_scientific_name", "species_token"
#: ``exclusion``: amalgkit's word for a run without quantification (finalize), ours for a skipped row
INCLUDED, FAILED, NOT_SELECTED = "no", "failed_quantification", "not_selected"


def _mapping(spec: str) -> dict[str, tuple[str, ...]]:  # "amalgkit_column=our_column[,fallback] ..."
    return {k: tuple(v.split(",")) for k, v in (pair.split("=") for pair in spec.split())}


ENA_COLUMNS = _mapping(
    "run=run_accession scientific_name=scientific_name taxid=tax_id lib_layout=library_layout "
    "lib_strategy=library_strategy lib_source=library_source lib_selection=library_selection "
    "lib_name=library_name platform=instrument_platform instrument=instrument_model total_spots=read_count "
    "total_bases=base_count bioproject=study_accession sra_study=secondary_study_accession "
    "biosample=sample_accession sra_sample=secondary_sample_accession experiment=experiment_accession "
    "sra_primary=submission_accession study_title=study_title exp_title=experiment_title "
    "sample_title=sample_title sample_description=sample_description,description center=center_name "
    "published_date=first_public nominal_length=nominal_length nominal_sdev=nominal_sdev "
    "tissue=tissue_type,tissue sex=sex age=dev_stage ENA_SRA_Link=sra_ftp"
)
RUNINFO_COLUMNS = _mapping(
    "run=Run scientific_name=ScientificName taxid=TaxID lib_layout=LibraryLayout lib_strategy=LibraryStrategy "
    "lib_source=LibrarySource lib_selection=LibrarySelection lib_name=LibraryName platform=Platform "
    "instrument=Model total_spots=spots total_bases=bases bioproject=BioProject biosample=BioSample "
    "experiment=Experiment sra_study=SRAStudy sra_sample=Sample sra_primary=Submission center=CenterName "
    "published_date=ReleaseDate nominal_length=InsertSize nominal_sdev=InsertDev spot_length=avgLength "
    "sex=Sex tissue=Body_Site,tissue pubmed_id=Study_Pubmed_id NCBI_Link=download_path"
)
SAMPLE_GROUP_FROM = ("tissue", "sample_title")  # when a table has no sample_group
PLACEHOLDER_NAME = "Please add in format: Genus species"  # amalgkit's, for an unknown species
MERGE_DIR, ENTRY_NAME = "merge", "amalgkit.json"
_OURS_RE = re.compile(r".+_(?:est_counts|tpm|eff_length|quant_model)\.tsv")
_NOT_TOKEN_RE = re.compile(r"[^0-9A-Za-z._-]+")


def species_token(scientific_name: str) -> str:
    """amalgkit's token (``runtime_utils.normalize_species_token``): runs outside ``[0-9A-Za-z._-]``
    become ``_``, ``_``/``.`` stripped at the ends; ValueError for a name amalgkit refuses."""
    raw = str(scientific_name).strip()
    token = re.sub(r"_+", "_", _NOT_TOKEN_RE.sub("_", raw)).strip("_.")
    if "/" in raw or "\\" in raw or re.search(r"[\x00-\x1f\x7f]", raw) or token in ("", ".", ".."):
        raise ValueError(f"amalgkit refuses the scientific_name {raw!r}: a '/', '\\', control character or no token")
    return token


def _missing(value: Any) -> bool:
    return value is None or str(value).strip().lower() in MISSING_VALUES


def _is_no(value: Any) -> bool:  # amalgkit's test of ``exclusion``: a blank cell is ``no`` (Metadata.reorder)
    return _missing(value) or str(value).strip().lower() == INCLUDED


def _link_or_copy(src: Path, dest: Path) -> str:
    """``dest`` as a hard link of ``src`` (a copy where refused), renamed into place: kept/linked/copied."""
    try:
        if os.path.samefile(src, dest):
            return "kept"
    except OSError:
        pass
    with staged_path(dest) as tmp:
        try:
            os.link(src, tmp)
            return "linked"
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            logger.warning("cannot hard-link %s as %s (%s): copying it", src, dest, e.strerror or e)
            shutil.copyfile(src, tmp)
            return "copied"


def link_run_files(quant_run_dir, run: str) -> list[Path]:
    """``RUN_abundance.tsv``, ``RUN_run_info.json``: hard links of kallisto's files beside them, each
    renamed into place; idempotent. FileNotFoundError without kallisto's files."""
    d = Path(quant_run_dir)
    if not run or Path(run).name != run or run in (".", ".."):
        raise ValueError(f"not a run accession: {run!r}")
    for ours in ("abundance.tsv", "run_info.json"):
        _link_or_copy(d / ours, d / f"{run}_{ours}")
    return [d / f"{run}_abundance.tsv", d / f"{run}_run_info.json"]


class SpeciesTables(NamedTuple):
    """One species for :func:`write_merge_dir`: folder, name, ``{measure: table}``, metadata rows."""

    species: str
    scientific_name: str
    tables: Mapping[str, Any]
    rows: list[dict]
    backends: Mapping[str, str] = {}  # run -> quant.tool, for quant_model.tsv (kallisto when absent)


def _header(path: Path) -> Optional[list[str]]:
    try:
        with open(path, "rb") as fh:
            line = fh.readline().decode("utf-8-sig", "replace")
    except FileNotFoundError:
        return None
    return line.rstrip("\r\n").split("\t") if line else None


def _convert_table(src: Path, dest: Path, header: list[str], runs: list[str]) -> None:
    """``dest``: ``src`` cut to ``target_id`` and ``runs`` in that order, a line at a time."""
    index = [0] + [header.index(r) for r in runs]
    with open(src, encoding="utf-8-sig", newline="") as fh, staged_file(dest, "w", encoding="utf-8", newline="") as out:
        next(fh)
        out.write("\t".join(["target_id", *runs]) + "\n")
        for n, line in enumerate(fh, 2):
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) != len(header):
                raise ValueError(f"{src}: line {n} has {len(cells)} fields, its header {len(header)}")
            out.write("\t".join([cells[i] for i in index]) + "\n")


@contextmanager
def merge_lock(output_dir) -> Iterator[None]:
    """``{output_dir}/.rnaseq-batch/amalgkit-merge.lock``, held: one writer of ``merge/`` at a time."""
    path = Path(output_dir) / FOLDER / "amalgkit-merge.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # closing it drops the lock
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def write_merge_dir(output_dir, species_tables: Iterable[Sequence], locked=False) -> dict:
    """``{output_dir}/merge/`` for ``species_tables`` (:class:`SpeciesTables`, tuples), under :func:`merge_lock`
    unless held. ``<Sp>/<Sp>_{measure}.tsv``: the ``exclusion == no`` runs in row order as amalgkit's merge
    writes them (links of ours where the header is that, else converted copies), ``<Sp>_quant_model.tsv``;
    ``metadata.tsv``: every row. A colliding token or a run listed twice is left out (amalgkit allows neither)."""
    if not locked:
        with merge_lock(output_dir):
            return write_merge_dir(output_dir, species_tables, locked=True)
    merge_dir = Path(output_dir) / MERGE_DIR
    if (merge_dir / "work" / "markers").is_dir():
        raise ValueError(f"{merge_dir} is a species' folder: a species named {MERGE_DIR!r} takes amalgkit's place")
    merge_dir.mkdir(parents=True, exist_ok=True)
    all_rows: list[dict] = []
    owners: dict[str, str] = {}  # token, NFC and case-folded as amalgkit compares them -> species
    seen: dict[str, str] = {}  # run -> species
    done: dict[str, dict] = {}
    left_out: dict[str, str] = {}
    for item in species_tables:
        sp = SpeciesTables(*item)
        name = tsv_cell(sp.scientific_name).strip()  # what amalgkit reads back
        try:
            token, explicit = species_token(name), False
        except ValueError as e:
            forced = [re.sub(r"_+", "_", _NOT_TOKEN_RE.sub("_", n)).strip("_.") for n in (name, sp.species)]
            token, explicit = next((t for t in forced if t not in ("", ".", "..")), "species"), True
            logger.warning("%s: %s; its rows carry species_token %s", sp.species, e, token)
        key = unicodedata.normalize("NFC", token).casefold()
        if key in owners:
            left_out[sp.species] = f"its species token {token} is that of species {owners[key]} already"
            logger.warning("%s left out of %s: %s", sp.species, merge_dir, left_out[sp.species])
            continue
        owners[key] = sp.species
        rows = []
        for row in sp.rows:
            run = str(row.get("run", "")).strip()
            if run in seen or not run:
                logger.warning("%s: run %r is left out of %s: listed already, or blank", sp.species, run, merge_dir)
                continue
            seen[run] = sp.species
            row = dict(row, run=run, scientific_name=sp.scientific_name)
            row.pop(TOKEN_COLUMN, None)  # the folder is named by our token: amalgkit must find the same
            row["exclusion"] = INCLUDED if _missing(row.get("exclusion")) else row["exclusion"]
            rows.append(row | ({TOKEN_COLUMN: token} if explicit else {}))
        all_rows.extend(rows)
        figures = _species_folder(merge_dir, sp, token, rows)
        if figures:
            done[sp.species] = figures
    _remove_stale_folders(merge_dir, {f["token"] for f in done.values()})
    extra = dict.fromkeys(c for row in all_rows for c in row if c not in AMALGKIT_COLUMNS and c != TOKEN_COLUMN)
    columns = [*AMALGKIT_COLUMNS, *extra] + ([TOKEN_COLUMN] if any(TOKEN_COLUMN in r for r in all_rows) else [])
    atomic_write_text(merge_dir / "metadata.tsv", tsv_text(columns, ([r.get(c) for c in columns] for r in all_rows)))
    return {"merge_dir": str(merge_dir), "species": done, "left_out": left_out}


def _species_folder(merge_dir: Path, sp: SpeciesTables, token: str, rows: list[dict]) -> Optional[dict]:
    headers = {m: _header(Path(sp.tables[m])) if m in sp.tables else None for m in MEASURES}
    if any(not h or h[0] != "target_id" for h in headers.values()):
        logger.warning("%s: merged tables missing or without target_id: no folder in %s", sp.species, merge_dir)
        return None
    in_tables = set.intersection(*(set(h[1:]) for h in headers.values() if h))
    wanted = [r for r in rows if _is_no(r.get("exclusion"))]
    runs = [r["run"] for r in wanted if r["run"] in in_tables]
    absent = [r["run"] for r in wanted if r["run"] not in in_tables and r.get("is_sampled") != "no"]
    if absent:
        logger.warning("%s: exclusion=no but no merged column (amalgkit skips them too): %s", sp.species, absent[:20])
    if not runs:
        return None
    folder = merge_dir / token
    folder.mkdir(parents=True, exist_ok=True)
    how = {}
    for m, header in headers.items():
        src, dest = Path(sp.tables[m]), folder / f"{token}_{m}.tsv"
        with open(src, "rb") as fh:
            start = fh.read(1 << 16)
        if header == ["target_id", *runs] and not start.startswith(b"\xef\xbb\xbf") and b"\r" not in start:
            how[m] = _link_or_copy(src, dest)
        else:
            _convert_table(src, dest, header or [], runs)
            how[m] = "converted"
    model = [QUANT_MODEL_COLUMNS] + [(r, sp.backends.get(r, KALLISTO_MODEL[0]), KALLISTO_MODEL[1]) for r in runs]
    atomic_write_text(folder / f"{token}_quant_model.tsv", "".join("\t".join(m) + "\n" for m in model))
    return {"token": token, "runs": len(runs), "tables": how}


def _remove_stale_folders(merge_dir: Path, tokens: set[str]) -> None:
    for entry in sorted(merge_dir.iterdir()):
        if entry.name in tokens or entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        if all(_OURS_RE.fullmatch(p.name) and p.is_file() for p in entry.iterdir()):
            shutil.rmtree(entry)
            logger.info("removed %s: no species of this output directory writes it now", entry)
        else:
            logger.warning("%s is no species of this output directory, but amalgkit cstmm would read it", entry)


def _mapped(values: Mapping[str, str], mapping: Mapping[str, Sequence[str]]) -> dict:
    row = {
        col: next((str(values[c]).strip() for c in src if not _missing(values.get(c))), "")
        for col, src in mapping.items()
    }
    layout = row["lib_layout"].upper()
    row["lib_layout"] = "paired" if layout.startswith("PAIR") else "single" if layout.startswith("SINGLE") else ""
    if row.get("ENA_SRA_Link"):  # ENA's sra_ftp: host/path entries, ;-separated
        row["ENA_SRA_Link"] = "https://" + row["ENA_SRA_Link"].split(";")[0].strip().removeprefix("ftp://")
    row["sample_group"] = next((row[c] for c in SAMPLE_GROUP_FROM if row.get(c)), "")
    return row


def species_rows(metadata_path, states: Mapping[str, RunState], fallback_name: str) -> tuple[str, list[dict], Any]:
    """``(scientific_name, rows, format)``: amalgkit/integrate rows pass through, ENA/runinfo rows are
    mapped; quantified: ``exclusion`` no, ``mapping_rate`` p_pseudoaligned; failed: failed_quantification;
    skipped: not_selected, is_sampled no (amalgkit rows skipped by their own flags stay as they are)."""
    try:
        table = read_table(metadata_path)
        fmt, source = table.fmt, table.rows
    except (InputError, OSError) as e:
        logger.warning("cannot read %s (%s): amalgkit's metadata gets the runs alone", metadata_path, e)
        fmt, source = None, [{"run": run} for run in states]
    passthrough = fmt in ("amalgkit", "integrate")
    rows = []
    for values in source:
        mapping = {"ena": ENA_COLUMNS, "runinfo": RUNINFO_COLUMNS}.get(fmt or "")
        row = _mapped(values, mapping) if mapping else dict(values, run=str(values.get("run", "")).strip())
        if not row["run"]:
            continue
        state = states.get(row["run"]) or RunState("skipped", "not in the species' plan (runs.tsv, skipped.tsv)")
        if state.status == "quantified":
            row.update(exclusion=INCLUDED, is_sampled="yes", mapping_rate=state.mapping_rate)
            row["lib_layout"] = row.get("lib_layout") or state.layout.lower()
        elif state.status == "failed":
            row.update(exclusion=FAILED, is_sampled="yes", mapping_rate=None, **{DETAIL: state.detail})
        else:
            if not (passthrough and state.detail.startswith(("is_sampled=", "exclusion="))):
                row.update(exclusion=NOT_SELECTED, is_sampled="no", is_qualified="no")
            row[DETAIL] = state.detail
        if not passthrough or "is_qualified" not in row:
            row["is_qualified"] = "no" if state.status == "skipped" else "yes"
        rows.append(row)
    own = [str(r.get("scientific_name") or "").strip() for r in rows]
    own = ["" if _missing(n) or n == PLACEHOLDER_NAME else n for n in own]
    chosen = [n for n, r in zip(own, rows) if n and r.get("is_sampled") == "yes" and r.get("exclusion") != NOT_SELECTED]
    common = Counter(chosen or [n for n in own if n]).most_common(1)
    name = common[0][0] if common else fallback_name
    for row, n in zip(rows, own):
        row.update({ORIGINAL_NAME: row["scientific_name"]} if n and n != name else {}, scientific_name=name)
    return name, rows, fmt


def publish_species(paths: SpeciesPaths, metadata_path=None) -> dict:
    """After the species' merged tables are written (its batches done): link its runs, save its
    rows (from ``metadata_path``, default the table its split marker names) as
    ``work/metadata/amalgkit.json``, and rewrite ``{output_dir}/merge/`` from every species' saved
    rows, all under :func:`merge_lock` (species finishing at once lose nothing). Returns figures."""
    with merge_lock(paths.output_dir):
        states = run_states(paths)
        linked = [link_run_files(paths.run_quant(r), r) for r, s in states.items() if s.status == "quantified"]
        try:
            metadata_path = metadata_path or read_json(paths.marker(SPLIT)).get("metadata")
        except (OSError, ValueError, AttributeError):
            pass
        source = Path(metadata_path) if metadata_path else paths.metadata / "no-split-marker"
        name, rows, fmt = species_rows(source, states, paths.species.replace("_", " "))
        tables = {m: str(paths.merged / f"{paths.species}_{m}.tsv") for m in MEASURES}
        entry = {"species": paths.species, "scientific_name": name, "metadata": str(source), "format": fmt}
        backends = {r: s.backend for r, s in states.items() if s.status == "quantified"}
        atomic_write_json(paths.metadata / ENTRY_NAME, entry | {"tables": tables, "rows": rows, "backends": backends})
        entries = []
        for species in species_under(paths.output_dir):
            path = SpeciesPaths(paths.output_dir, species).metadata / ENTRY_NAME
            try:
                if path.is_file():
                    e = read_json(path)
                    entries.append(
                        SpeciesTables(e["species"], e["scientific_name"], e["tables"], e["rows"], e.get("backends", {}))
                    )
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.warning("%s: cannot read %s (%s): left out of %s", species, path, err, MERGE_DIR)
        result = write_merge_dir(paths.output_dir, entries, locked=True)
    mine = result["species"].get(paths.species, {"token": None, "runs": 0})
    left_out = {"left_out": result["left_out"][paths.species]} if paths.species in result["left_out"] else {}
    return entry | {"linked_runs": len(linked), "merge_dir": result["merge_dir"], **mine, **left_out}
