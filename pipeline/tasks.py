"""Luigi tasks: thin wiring of inputs to outputs around the domain modules.

Per species: SplitMetadata -> (BatchDownload -> BatchQuant -> BatchCleanup) per batch, BuildIndex,
and Species (merge + failure report); MultiSpecies requires every species. Each task's output is
a JSON marker under ``work/markers/`` written atomically after its data is in place.
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import luigi

from . import batches, disk, download, ena, merge, metadata, quant, sources
from .config import SpeciesConfig, load_all, load_species_config
from .model import InputError
from .layout import SpeciesLayout
from .runlog import RunLog
from .util import atomic_write_json, atomic_write_text, read_json

logger = logging.getLogger("luigi-interface")


class pipeline(luigi.Config):
    """``[pipeline]`` in luigi.cfg: transfer settings shared by every species."""

    download_attempts = luigi.IntParameter(default=6, description="transfer attempts per file")
    stall_seconds = luigi.FloatParameter(default=60.0, description="abort an attempt after this long without data")
    backoff_base = luigi.FloatParameter(default=2.0, description="first retry delay in seconds; doubles")
    backoff_max = luigi.FloatParameter(default=120.0, description="cap on the retry delay")
    max_retry_after = luigi.FloatParameter(default=600.0, description="cap on a server's Retry-After")
    ena_portal_url = luigi.Parameter(default=ena.DEFAULT_BASE_URL, description="ENA portal API base URL")
    disk_limit = luigi.Parameter(default="", description="cap on bytes under the output directory, e.g. 500G "
                                 "(empty: only the file system's free space counts)")

    def retry_policy(self, stall_seconds=None) -> download.RetryPolicy:
        return download.RetryPolicy(attempts=self.download_attempts, backoff_base=self.backoff_base,
                                    backoff_max=self.backoff_max, max_retry_after=self.max_retry_after,
                                    stall_seconds=stall_seconds or self.stall_seconds)


def fetch_ena_metadata(cfg: SpeciesConfig, layout: SpeciesLayout, refresh: bool = False,
                       portal_url: str | None = None) -> dict:
    """A species' ``metadata.query`` answer at ``layout.ena_search``: the saved one, unless it is
    missing or ``refresh`` asks ENA again (see :func:`pipeline.ena.fetch_search`)."""
    return ena.fetch_search(cfg.metadata_query, layout.ena_search, base_url=portal_url or pipeline().ena_portal_url,
                            policy=pipeline().retry_policy(), log=RunLog(layout.logs / "metadata.log"), refresh=refresh)


@functools.lru_cache(maxsize=256)
def _config(path: str) -> SpeciesConfig:
    return load_species_config(path)


class SpeciesTask(luigi.Task):
    config_path = luigi.Parameter(description="the species YAML")
    output_dir = luigi.Parameter(default="output/amalgkit")

    @property
    def cfg(self) -> SpeciesConfig:
        return _config(str(Path(self.config_path).resolve()))

    @property
    def paths(self) -> SpeciesLayout:
        return SpeciesLayout(self.output_dir, self.cfg.species)

    def marker(self, name: str) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.paths.marker(name)))

    def _begin(self) -> float:
        self._started_at = time.time()
        return time.monotonic()

    def write_marker(self, figures: dict) -> None:
        """The task's output, written last: its figures plus when it started and finished."""
        stamps = {"started_at": getattr(self, "_started_at", None), "finished_at": time.time()}
        atomic_write_json(self.output().path, figures | stamps)

    def species_args(self) -> dict:
        return {"config_path": self.config_path, "output_dir": self.output_dir}

    def _status(self, message: str, percent: float | None = None) -> None:
        try:
            self.set_status_message(message)
            if percent is not None:
                self.set_progress_percentage(int(percent))
        except Exception:  # the scheduler being away must not fail the data work
            pass


class BatchTask(SpeciesTask):
    batch = luigi.IntParameter()

    def runs(self):
        return batches.read_batch(self.paths.batch_file(self.batch))


class SplitMetadata(SpeciesTask):
    """Read and select the runs, write ``runs.tsv``, ``skipped.tsv`` and one JSON file per batch."""

    def output(self):
        return self.marker("split")

    def run(self):
        t0 = self._begin()
        p, cfg = self.paths, self.cfg
        source = cfg.metadata_file
        if cfg.metadata_query:
            # the answer is kept and re-used on resume, so batches stay as they were planned
            self._status(f"{cfg.species}: querying ENA")
            source = Path(fetch_ena_metadata(cfg, p)["path"])
        runs, skipped = metadata.load_runs(source, cfg.selection)
        metadata.write_runs_tsv(runs, p.metadata / "runs.tsv")
        metadata.write_skipped_tsv(skipped, p.metadata / "skipped.tsv")
        kept = self._started_batches()
        sra_route = "sra" in cfg.sources
        groups = batches.extend_plan(kept, runs, cfg.batch_size, cfg.max_bytes, sra_route=sra_route)
        if kept:
            logger.info("%s: re-planning: batches 0-%d were started and keep their runs; %d new batch(es)",
                        cfg.species, len(kept) - 1, len(groups) - len(kept))
        if cfg.max_bytes:
            for r, b in batches.oversized_runs(runs, cfg.max_bytes, sra_route=sra_route):
                logger.warning("%s: run %s is expected to take %s%s, more than batch.max_bytes %s: it gets a batch "
                               "of its own", cfg.species, r.run, disk.human(b),
                               " if it is converted from .sra" if sra_route else "", disk.human(cfg.max_bytes))
            unknown = batches.unknown_size_runs(runs, sra_route=sra_route)
            if unknown:
                logger.warning("%s: %d run(s) have no size in the metadata; each is counted as batch.max_bytes "
                               "and gets a batch of its own: %s", cfg.species, len(unknown),
                               ", ".join(r.run for r in unknown[:20]))
        for i, group in enumerate(groups[len(kept):], len(kept)):
            batches.write_batch(p.batch_file(i), i, group)
        for stale in range(len(groups), len(groups) + 100_000):  # a re-plan may need fewer batches
            if not p.batch_file(stale).exists():
                break
            p.batch_file(stale).unlink()
        self.write_marker({"runs": len(runs), "skipped": len(skipped), "batches": len(groups),
                           "max_bytes": cfg.max_bytes,
                           "largest_batch_bytes": max((batches.batch_bytes(g)[0] for g in groups), default=0),
                           "metadata": str(source), "seconds": round(time.monotonic() - t0, 3)})


    def _started_batches(self) -> list:
        """When planning again (``python -m pipeline.refresh``), the batches up to the last one whose
        download started keep their runs; an unfinished tail is planned afresh."""
        p = self.paths
        planned, last = [], -1
        for i in range(100_000):
            if not p.batch_file(i).exists():
                break
            planned.append(batches.read_batch(p.batch_file(i)))
            if p.marker(f"download_{i:05d}").exists() or any(sources.run_dir(p.fastq, r.run).exists()
                                                              for r in planned[i]):
                last = i
        return planned[:last + 1]


class BuildIndex(SpeciesTask):
    """Fetch the transcriptome into genome/ when it is a URL, and build the kallisto index once."""

    resources = {"cpu": 1}

    def output(self):
        return self.marker("index")

    def run(self):
        t0 = self._begin()
        p = self.paths
        p.genome.mkdir(parents=True, exist_ok=True)
        fasta = self.cfg.transcriptome
        if self.cfg.transcriptome_is_url:
            name = download.safe_name(fasta.rstrip("/").rsplit("/", 1)[-1], "transcriptome.fa.gz")
            self._status(f"downloading transcriptome {fasta}")
            info = download.fetch(download.RemoteFile(url=fasta, name=name), p.genome / name, self.cfg.mirrors,
                                  pipeline().retry_policy(), RunLog(p.logs / "index.log"))
            fasta = info["path"]
        self._status(f"kallisto index {Path(fasta).name}")
        figures = quant.build_index(fasta, p.index, p.logs / "index.log")
        self.write_marker(figures | {"transcriptome": str(fasta), "seconds": round(time.monotonic() - t0, 3)})


class BatchDownload(BatchTask):
    """Download the batch's runs, ``download.parallel`` files at a time, each verified.

    Batch n waits for the cleanup of batch n - prefetch - 1, so at most ``prefetch + 1`` batches
    of reads are on disk at once (``prefetch: 0`` is strictly download, quantify, delete).
    """

    resources = {"download": 1}

    def requires(self):
        deps = [SplitMetadata(**self.species_args())]
        earlier = self.batch - self.cfg.prefetch - 1
        if earlier >= 0:
            deps.append(BatchCleanup(batch=earlier, **self.species_args()))
        return deps

    def output(self):
        return self.marker(f"download_{self.batch:05d}")

    def run(self):
        t0 = self._begin()
        p, cfg = self.paths, self.cfg
        runs = self.runs()
        need, free_at_start = self._wait_for_space(runs)
        policy = pipeline().retry_policy(cfg.stall_seconds)
        lock = threading.Lock()
        sra_lock = threading.Lock()  # one .sra conversion at a time: the batch keeps room for one
        state = {"done": 0, "bytes": 0, "last": 0.0}
        expected = batches.batch_bytes(runs)[0] or 1

        def progress(n):
            with lock:
                state["bytes"] += n
                now = time.monotonic()
                if now - state["last"] < 1.0:
                    return
                state["last"] = now
            self._status(f"{cfg.species} batch {self.batch}: {state['done']}/{len(runs)} runs, "
                         f"{state['bytes'] / 1e6:.1f} MB", min(99, 100 * state["bytes"] / expected))

        def one(run):
            if quant.is_quantified(p.quant, run.run):
                return {"run": run.run, "status": "quantified", "files": [], "bytes": 0, "seconds": 0.0,
                        "reason": "already quantified"}
            log = RunLog(p.run_log(run.run))
            log.write(f"download: batch {self.batch}, sources {', '.join(cfg.sources)}")
            res = sources.obtain_run(run, p.fastq, cfg.mirrors, policy, log, cfg.sources, progress,
                                     threads=cfg.threads, sra_lock=sra_lock)
            res = sources.apply_max_bp(run, res, p.fastq, cfg.max_bp, log)
            with lock:
                state["done"] += 1
            self._status(f"{cfg.species} batch {self.batch}: {run.run} {res['status']}")
            return res

        with ThreadPoolExecutor(max_workers=cfg.download_parallel) as pool:
            results = list(pool.map(one, runs))
        self.write_marker({"batch": self.batch, "runs": results, "bytes": sum(r["bytes"] for r in results),
                           "expected_bytes": need, "free_at_start": free_at_start,
                           "ok": sum(r["status"] == "ok" for r in results),
                           "failed": sum(r["status"] == "failed" for r in results),
                           "seconds": round(time.monotonic() - t0, 3)})


    def _wait_for_space(self, runs):
        """Never start a batch that cannot fit: its bytes still to come (with room for one .sra
        conversion when that route is a source), plus those of earlier batches still downloading,
        plus ``disk.min_free``. Waits up to ``disk.wait_seconds``."""
        p, cfg = self.paths, self.cfg

        def room_of(rs):
            return batches.sra_room(rs) if "sra" in cfg.sources else 0

        def remaining(rs, room):
            total, _ = batches.batch_bytes(rs)
            return max(0, total + room - sum(disk.tree_bytes(sources.run_dir(p.fastq, r.run)) for r in rs))

        room = room_of(runs)
        need = remaining(runs, room)
        room_note = (f" (of which {disk.human(room)} is room for one .sra conversion; download.sources: [ena] "
                     "keeps none)") if room else ""
        for k in range(max(0, self.batch - cfg.prefetch), self.batch):
            if not p.marker(f"download_{k:05d}").exists():
                earlier = batches.read_batch(p.batch_file(k))
                need += remaining(earlier, room_of(earlier))
        p.fastq.mkdir(parents=True, exist_ok=True)
        limit = batches.parse_size(pipeline().disk_limit) if pipeline().disk_limit else None
        self._status(f"{cfg.species} batch {self.batch}: checking free space for {disk.human(need)}")
        free = disk.wait_for_space(p.fastq, need, cfg.min_free, timeout_s=cfg.disk_wait_seconds, poll_s=10,
                                   log=RunLog(p.logs / "disk.log"), limit=limit, used_root=p.output_dir,
                                   what=f"{cfg.species} batch {self.batch}{room_note}")
        return need, free


class BatchQuant(BatchTask):
    """kallisto on every downloaded run of the batch, one after another with ``quant.threads``."""

    @property
    def resources(self):
        return {"cpu": self.cfg.threads}

    def requires(self):
        return {"download": BatchDownload(batch=self.batch, **self.species_args()),
                "index": BuildIndex(**self.species_args())}

    def output(self):
        return self.marker(f"quant_{self.batch:05d}")

    def run(self):
        t0 = self._begin()
        p, cfg = self.paths, self.cfg
        runs = {r.run: r for r in self.runs()}
        downloaded = read_json(self.input()["download"].path)["runs"]
        results = []
        for i, d in enumerate(downloaded):
            run = runs[d["run"]]
            if d["status"] == "failed":
                results.append({"run": run.run, "status": "failed", "stage": "download", "reason": d["reason"]})
                continue
            if quant.is_quantified(p.quant, run.run):
                results.append({"run": run.run, "status": "ok", "reason": "already quantified"})
                continue
            self._status(f"{cfg.species} batch {self.batch}: kallisto {run.run} ({i + 1}/{len(downloaded)})",
                         100 * i / max(1, len(downloaded)))
            fastqs = [sources.run_dir(p.fastq, run.run) / name for name in d["files"]]
            res = quant.quantify_run(run.run, fastqs, p.index, p.quant, threads=cfg.threads,
                                     fragment_length=cfg.fragment_length, fragment_sd=cfg.fragment_sd,
                                     expected_reads=d.get("expected_reads"), verified=d.get("verified", False),
                                     log=RunLog(p.run_log(run.run)),
                                     extra={"source": d.get("source", ""), "capped": "capped_bases" in d})
            if res["status"] != "ok":
                res["stage"] = "quant"
            if run.layout and res.get("layout") and run.layout != res["layout"]:
                res["layout_note"] = f"metadata says {run.layout}, files give {res['layout']}"
                RunLog(p.run_log(run.run)).write("layout: " + res["layout_note"])
            results.append(res)
        self.write_marker({"batch": self.batch, "runs": results,
                           "ok": sum(r["status"] == "ok" for r in results),
                           "failed": sum(r["status"] == "failed" for r in results),
                           "seconds": round(time.monotonic() - t0, 3)})


class BatchCleanup(BatchTask):
    """Delete the batch's reads (failed runs' too), including partial downloads."""

    def requires(self):
        return BatchQuant(batch=self.batch, **self.species_args())

    def output(self):
        return self.marker(f"cleanup_{self.batch:05d}")

    def run(self):
        t0 = self._begin()
        freed = 0
        for run in self.runs():
            freed += sources.clear_run_dir(self.paths.fastq, run.run)
        self.write_marker({"batch": self.batch, "bytes_freed": freed, "seconds": round(time.monotonic() - t0, 3)})


class Species(SpeciesTask):
    """All batches of one species, then the merged tables and the failure report."""

    def requires(self):
        return SplitMetadata(**self.species_args())

    def output(self):
        return self.marker("species")

    def run(self):
        t0 = self._begin()
        p = self.paths
        n = read_json(self.input().path)["batches"]
        yield [BuildIndex(**self.species_args())] + \
            [BatchCleanup(batch=i, **self.species_args()) for i in range(n)]
        order, failures, qc_extra = [], [], {}
        for i in range(n):
            for r in read_json(p.marker(f"quant_{i:05d}"))["runs"]:
                order.append(r["run"])
                if r["status"] == "failed":
                    failures.append((r["run"], i, r.get("stage", ""), r.get("reason", "")))
        for run in order:
            info = p.quant / run / "pipeline_run.json"
            if info.is_file():
                d = read_json(info)
                qc_extra[run] = {k: d.get(k, "") for k in ("layout", "source", "capped")}
        merged = merge.merge_species(self.cfg.species, p.quant, order, p.merged, qc_extra)
        lines = ["run\tbatch\tstage\treason"] + [f"{r}\t{b}\t{s}\t{why}" for r, b, s, why in failures]
        atomic_write_text(p.failed_runs, "\n".join(lines) + "\n")
        summary = {"species": self.cfg.species, "batches": n, "runs": len(order), "quantified": len(merged["runs"]),
                   "failed": len(failures), "failed_runs": str(p.failed_runs), "merged": merged["files"],
                   "seconds": round(time.monotonic() - t0, 3)}
        atomic_write_json(p.metadata / "summary.json", summary)
        print(f"[{self.cfg.species}] {len(merged['runs'])}/{len(order)} runs quantified; merged tables in {p.merged}",
              file=sys.stderr)
        if failures:
            listing = "\n".join(f"  {r} (batch {b}, {s}): {why}" for r, b, s, why in failures)
            raise RuntimeError(f"{self.cfg.species}: {len(failures)} run(s) failed; merged tables hold the "
                               f"{len(merged['runs'])} that succeeded. Failed runs are listed in "
                               f"{p.failed_runs}:\n{listing}\nRetry just these with: "
                               f"python -m pipeline.retry {p.output_dir}")
        self.write_marker(summary)


class MultiSpecies(luigi.WrapperTask):
    """Every species whose YAML is in ``config_dir``. All configs are validated before any work."""

    config_dir = luigi.Parameter(default="config/species")
    output_dir = luigi.Parameter(default="output/amalgkit")

    def requires(self):
        cpu = luigi.configuration.get_config().getint("resources", "cpu", None)
        try:
            configs = load_all(self.config_dir, cpu_cap=cpu)
            species = [Species(config_path=str(c.path), output_dir=self.output_dir) for c in configs]
            # local metadata tables of unfinished species are checked before any species downloads
            for c, task in zip(configs, species):
                if c.metadata_file and not task.complete():
                    _check_metadata(str(c.path), c.metadata_file.stat().st_mtime_ns)
        except InputError as e:
            _report_input_error(e)
            raise
        return species


@functools.lru_cache(maxsize=64)
def _check_metadata(config_path: str, mtime_ns: int) -> None:
    """Read a species' local metadata table once per version of it (Luigi calls requires() often)."""
    cfg = _config(config_path)
    metadata.load_runs(cfg.metadata_file, cfg.selection)


def _report_input_error(e: Exception) -> None:
    """Configuration problems are the user's to fix: say them plainly, before Luigi's traceback."""
    bar = "=" * 72
    print(f"\n{bar}\nCannot start: the configuration or metadata has problems:\n{e}\n{bar}\n",
          file=sys.stderr, flush=True)
