"""The end of a species: its merged tables, gene tables, the amalgkit and MultiQC views of its
output, the failure report and the summary; Luigi-free, called by the ``Species`` task."""

from __future__ import annotations

import logging

from .files import atomic_write_json, atomic_write_text, read_json
from .inputs import tx2gene
from .inputs.species_config import SpeciesConfig
from .model import ExpectedFailure, Tools, tsv_text
from .paths import INDEX, QUANT, SpeciesPaths
from .provenance import reference_groups, tool_groups, tool_versions
from .quant import amalgkit_layout, genes, merge_store, multiqc
from .quant.quantifier import qc_columns
from .quant.quantify import RUN_RECORD

logger = logging.getLogger(__name__)


class SpeciesFailed(ExpectedFailure, RuntimeError):
    """Some runs of a species failed; the message lists them and says how to retry them."""


def failed_runs_text(failures: list[tuple[str, int, str, str]]) -> str:
    """``failed_runs.tsv``: a line per failed run, cells escaped by :func:`pipeline.model.tsv_text`
    (a tab or line break in a reason is written ``\\t``, ``\\n``)."""
    return tsv_text(["run", "batch", "stage", "reason"], failures)


def _refuse_mixed(species: str, groups: dict[str, list[str]], what: str, label: str, advice: str) -> None:
    """A merged table holds runs of one reference and one quantifier: otherwise say which runs
    used which (``groups``: :func:`~pipeline.provenance.reference_groups` or ``tool_groups``)."""
    if len(groups) > 1:
        said = "; ".join(
            f"{label}{key}: {len(rs)} run(s) ({', '.join(rs[:5])}{' ...' if len(rs) > 5 else ''})"
            for key, rs in groups.items()
        )
        raise SpeciesFailed(f"{species}: runs were quantified {what}, which one table cannot hold: {said}. {advice}")


def _refuse_mixed_references(species: str, records: dict[str, dict]) -> None:
    _refuse_mixed(
        species,
        reference_groups(records),
        "against different references",
        "index md5 ",
        "Delete quant/RUN of the runs quantified against the old reference and run again.",
    )


def _refuse_mixed_tools(species: str, records: dict[str, dict]) -> None:
    _refuse_mixed(
        species,
        tool_groups(records),
        "with different tools",
        "",
        "Delete quant/RUN of the runs quantified with the tool that quant.tool no longer names, and run again.",
    )


def _gene_tables(cfg: SpeciesConfig, paths: SpeciesPaths) -> dict | None:
    """Gene-level tables as tximport makes them, when a transcript-to-gene map can be had."""
    fasta = read_json(paths.marker(INDEX))["transcriptome"]
    t2g, _ = tx2gene.resolve_tx2gene(cfg.tx2gene, fasta)
    if t2g is None:
        return None
    atomic_write_text(paths.tx2gene, tx2gene.tx2gene_text(t2g))
    figures = genes.write_gene_tables(cfg.species, paths.merged, t2g)
    note = genes.without_gene_note(figures)
    if note:
        logger.warning("[%s] %s", cfg.species, note)
    return figures


def _write_report(cfg: SpeciesConfig, paths: SpeciesPaths) -> None:
    """``OUT/report.html`` again, now with this species' end; a report error is only a warning."""
    try:
        from .report import write_report  # plotly and numpy are imported only here

        write_report(paths.output_dir)
    except Exception as e:
        logger.warning("[%s] report.html not written: %s", cfg.species, e)


def finish_species(cfg: SpeciesConfig, paths: SpeciesPaths, n_batches: int, tools: Tools) -> dict:
    """Merge the quantified runs, write the gene tables, ``merge/`` in amalgkit's layout, the MultiQC
    config, ``failed_runs.tsv`` and ``summary.json``; return the summary.

    Raises :class:`SpeciesFailed` (after writing them all) when any run failed."""
    order, failures, qc_extra = [], [], {}
    for i in range(n_batches):
        for r in read_json(paths.batch_marker(QUANT, i))["runs"]:
            order.append(r["run"])
            if r["status"] == "failed":
                failures.append((r["run"], i, r.get("stage", ""), r.get("reason", "")))
    records = {}
    for run in order:
        info = paths.run_quant(run) / RUN_RECORD
        if info.is_file():
            records[run] = d = read_json(info)
            qc_extra[run] = {k: d.get(k, "") for k in ("layout", "source", "capped")} | qc_columns(d)
    _refuse_mixed_tools(cfg.species, records)
    _refuse_mixed_references(cfg.species, records)
    merged = merge_store.merge_incremental(
        cfg.species, paths.quant, order, paths.merged, paths.merge_store, qc_extra, h5ad_copy=cfg.h5ad
    )
    gene_figures = _gene_tables(cfg, paths)
    amalgkit = amalgkit_layout.publish_species(paths, cfg.metadata_file or paths.ena_search)
    multiqc.write_config(paths.output_dir)
    atomic_write_text(paths.failed_runs, failed_runs_text(failures))
    summary = {
        "species": cfg.species,
        "batches": n_batches,
        "runs": len(order),
        "quantified": len(merged["runs"]),
        "failed": len(failures),
        "failed_runs": str(paths.failed_runs),
        "merged": merged["files"],
        "genes": gene_figures,
        "amalgkit": amalgkit,
        "tool_versions": tool_versions(tools, cfg.sources, cfg.quant_tool),
    }
    atomic_write_json(paths.summary, summary)
    _write_report(cfg, paths)
    logger.info(
        "[%s] %d/%d runs quantified; merged tables in %s", cfg.species, len(merged["runs"]), len(order), paths.merged
    )
    if failures:
        listing = "\n".join(f"  {r} (batch {b}, {s}): {' '.join(why.split())}" for r, b, s, why in failures)
        raise SpeciesFailed(
            f"{cfg.species}: {len(failures)} run(s) failed; merged tables hold the "
            f"{len(merged['runs'])} that succeeded. Failed runs are listed in "
            f"{paths.failed_runs}:\n{listing}\nRetry just these with: "
            f"rnaseq-batch retry {paths.output_dir}"
        )
    return summary
