"""The quantification step of a batch: each downloaded run with the species' quantifier, the
streamed runs as they arrive, or kallisto's runs of a batch after one load of the index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import streaming
from .fetch.retry import RetryPolicy
from .inputs.species_config import SpeciesConfig
from .model import STREAMED, Run, RunDownload, RunQuant, Tools, yes_no
from .paths import SpeciesPaths
from .plan import batches
from .progress import Status, no_status
from .provenance import REFERENCE_KEYS
from .quant import kallisto, quantifier
from .quant.quantify import is_quantified
from .runlog import RunLog


def quantify_batch(
    cfg: SpeciesConfig,
    paths: SpeciesPaths,
    batch: int,
    downloaded: list[dict],
    tools: Tools,
    status: Status = no_status,
    reference: Optional[dict] = None,
    policy: Optional[RetryPolicy] = None,
) -> dict:
    """``quant.tool`` on every downloaded run of the batch with ``quant.threads``; the runs the
    download step left to it (``download.mode: stream``) streamed, with ``policy``. Runs on disk go
    one after another, or with kallisto and ``quant.batch_mode`` ``auto`` mapped after one load of
    the index (:mod:`pipeline.quant.kallisto_batch`), with the same results.

    ``reference`` (the index marker's :func:`~pipeline.provenance.reference_record`) is recorded
    with every run, so that runs quantified against different references are never merged."""
    ref = {k: v for k, v in (reference or {}).items() if k in REFERENCE_KEYS}
    opts = quant_options(cfg)
    runs = {r.run: r for r in batches.read_batch(paths.batch_file(batch))}
    results: dict[str, RunQuant] = {}
    on_disk: list[OnDisk] = []
    for row in downloaded:
        d = RunDownload.from_dict(row)
        run = runs[d.run]
        if d.status == "failed":
            results[run.run] = RunQuant(run=run.run, status="failed", stage="download", reason=d.reason)
        elif is_quantified(paths.quant, run.run):
            results[run.run] = RunQuant(run=run.run, status="ok", reason="already quantified")
        elif d.status == STREAMED:
            status(f"{cfg.species} batch {batch}: streaming {run.run} into kallisto", None)
            log = RunLog(paths.run_log(run.run))
            setup = streaming.fetch_setup(cfg, policy or RetryPolicy(), tools)
            extra = ref | {"capped": yes_no(False)}
            results[run.run] = streaming.quantify_streamed_run(
                cfg,
                paths,
                run,
                setup,
                extra,
                log,
                lambda r, dd, lg: _quantify_one(cfg, paths, opts, tools, ref, OnDisk(r, dd, lg)),
            )
        else:
            on_disk.append(OnDisk(run, d, RunLog(paths.run_log(run.run))))
    started = iter(range(len(on_disk)))

    def one(job: OnDisk, prepared=None) -> RunQuant:
        i = next(started, len(on_disk) - 1)
        status(
            f"{cfg.species} batch {batch}: {cfg.quant_tool} {job.run.run} ({i + 1}/{len(on_disk)})",
            100 * i / max(1, len(on_disk)),
        )
        return _quantify_one(cfg, paths, opts, tools, ref, job, prepared)

    if on_disk:
        status(
            f"{cfg.species} batch {batch}: sampling {len(on_disk)} runs' heads ({cfg.strandedness} strandedness)", None
        )
    prepared = quantifier.prepare_many(
        [quantifier.RunFiles(job.run.run, job.fastqs(paths), job.log, job.extra(ref)) for job in on_disk],
        paths.quant_index(cfg.quant_tool),
        paths.quant,
        opts,
        tools,
    )
    if cfg.quant_tool != "kallisto" or cfg.batch_mode == "per_run":
        results |= {job.run.run: one(job, prepared[job.run.run]) for job in on_disk}
    else:
        results |= _quantify_batched(cfg, paths, batch, tools, on_disk, prepared, one, status)
    for res in results.values():
        run = runs[res.run]
        if not res.ok and not res.stage:
            res.stage = "quant"
        if run.layout and res.layout and run.layout != res.layout and not res.layout_note:
            res.layout_note = f"metadata says {run.layout}, files give {res.layout}"
            RunLog(paths.run_log(run.run)).write("layout: " + res.layout_note)
    ordered = [results[RunDownload.from_dict(row).run] for row in downloaded]
    return {
        "batch": batch,
        "runs": [r.to_dict() for r in ordered],
        "ok": sum(r.ok for r in ordered),
        "failed": sum(r.status == "failed" for r in ordered),
    }


@dataclass
class OnDisk:
    """A downloaded run whose files are in ``fastq/RUN/``, to quantify."""

    run: Run
    d: RunDownload
    log: RunLog

    def fastqs(self, paths: SpeciesPaths) -> list[Path]:
        return [paths.run_fastq(self.run.run) / name for name in self.d.files]

    def extra(self, ref: dict) -> dict:
        return {"source": run_source(self.run, self.d), "capped": yes_no(self.d.capped_bases is not None)} | ref


def _quantify_one(cfg, paths: SpeciesPaths, opts, tools: Tools, ref: dict, job: OnDisk, prepared=None) -> RunQuant:
    return quantifier.quantify(
        job.run.run,
        job.fastqs(paths),
        paths.quant_index(cfg.quant_tool),
        paths.quant,
        opts,
        tools,
        expected_reads=job.d.expected_reads,
        verified=bool(job.d.verified),
        log=job.log,
        extra=job.extra(ref),
        prepared=prepared,
    )


def _quantify_batched(cfg, paths: SpeciesPaths, batch: int, tools: Tools, on_disk, prepared: dict, one, status):
    """kallisto on the batch's runs on disk after one load of the index, each with the strand flag
    :func:`pipeline.quant.quantifier.prepare_many` found for it (``prepared``); a run the batch
    cannot take, or that fails in it, is quantified alone by ``one``."""
    from .quant import kallisto_batch  # numpy: imported only where a batch is quantified

    index = paths.quant_index(cfg.quant_tool)
    todo: list[kallisto_batch.BatchRun] = []
    for job in on_disk:
        call, record = prepared[job.run.run]
        flag = kallisto.STRAND_FLAGS.get(call.strandedness)
        todo.append(
            kallisto_batch.BatchRun(
                run=job.run.run,
                fastqs=job.fastqs(paths),
                expected_reads=job.d.expected_reads,
                log=job.log,
                extra=record,
                flags=(flag,) if flag else (),
            )
        )
    jobs = {job.run.run: job for job in on_disk}
    names = ", ".join(b.run for b in todo[:4]) + (f" and {len(todo) - 4} more" if len(todo) > 4 else "")
    status(f"{cfg.species} batch {batch}: kallisto on {len(todo)} runs: {names}", None)
    done = kallisto_batch.quantify_runs(
        todo,
        index,
        paths.quant,
        threads=cfg.threads,
        per_run=lambda b: one(jobs[b.run], prepared[b.run]),
        exe=tools.kallisto,
    )
    return {b.run: res for b, res in zip(todo, done)}


def quant_options(cfg: SpeciesConfig) -> quantifier.QuantOptions:
    """A species' ``quant`` settings for :func:`pipeline.quant.quantifier.quantify`."""
    return quantifier.QuantOptions(
        tool=cfg.quant_tool,
        strandedness=cfg.strandedness,
        strand_sample=cfg.strand_sample,
        threads=cfg.threads,
        fragment_length=cfg.fragment_length,
        fragment_sd=cfg.fragment_sd,
    )


def run_source(run: Run, d: RunDownload) -> str:
    """``ena``, ``sra`` or ``local`` (files of the user's own, given as paths or file:// URLs)."""
    if d.source == "ena" and run.files and all(f.url.startswith("file:") for f in run.files):
        return "local"
    return d.source
