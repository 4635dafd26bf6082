"""The Luigi wiring, run inside the test process with ``luigi.build`` and the local scheduler.

A small simulated species is served by a loopback FileServer; the tests check which markers the
tasks write, in which order they ran (the markers' own start and finish times), what
``requires()`` returns for each prefetch, what a failed run does to the build's result, and that
a second build on a finished tree runs nothing.

Luigi reads ``luigi.cfg`` from the current directory: the tests run from the project root so that
its ``[resources]`` (cpu = 2, download = 2) apply.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import luigi
import luigi.task_register
import pytest
from conftest import need_tool
from helpers import ROOT, files_under, tree_snapshot, write_species
from luigi.execution_summary import LuigiStatusCode, _summary_dict

from pipeline.paths import BATCH_STAGES, CLEANUP, INDEX, SPECIES, SPLIT, SpeciesPaths
from pipeline.tasks import BatchCleanup, BatchDownload, BatchQuant, BuildIndex, MultiSpecies, Species, SplitMetadata
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

NAME = "Simulata_wiring"
RUNS = [f"DRR00010{i}" for i in range(1, 5)]
N_TRANSCRIPTS = 20
READS = 2000


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    """luigi.cfg is read from the current directory."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def kallisto_bin():
    return need_tool("kallisto")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Four paired runs of 2,000 pairs in ENA's archive layout, with their ENA-style metadata."""
    root = tmp_path_factory.mktemp("sim_tasks")
    ds = simulate.make_species_dataset(
        root, NAME, RUNS, "PAIRED", reads_per_run=READS, read_len=50, n_transcripts=N_TRANSCRIPTS, seed=11
    )
    return {"archive": root / "archive", **ds}


def _config(cfg_dir: Path, sim, server, metadata_file=None, **sections) -> Path:
    sections.setdefault("download", {})
    sections["download"] = {"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}, **sections["download"]}
    sections.setdefault("quant", {"threads": 1})
    return write_species(cfg_dir, NAME, sim["transcriptome"], metadata_file or sim["metadata"], **sections)


def _build(tasks, workers=1):
    return luigi.build(tasks, local_scheduler=True, detailed_summary=True, workers=workers)


def _families(tasks) -> set[str]:
    return {t.get_task_family() for t in tasks}


def _marker(path: Path) -> dict:
    return json.loads(path.read_text())


def _all_markers(paths: SpeciesPaths, n_batches: int) -> dict[str, Path]:
    names = {SPLIT: paths.marker(SPLIT), INDEX: paths.marker(INDEX), SPECIES: paths.marker(SPECIES)}
    for b in range(n_batches):
        for stage in BATCH_STAGES:
            names[f"{stage}_{b}"] = paths.batch_marker(stage, b)
    return names


def _timeline(paths: SpeciesPaths, n_batches: int) -> dict[str, dict]:
    return {k: _marker(p) for k, p in _all_markers(paths, n_batches).items() if p.exists()}


def _read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _kallisto_version(exe: str) -> str:
    out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"version\s+(\S+)", out.stdout + out.stderr)
    assert m, f"`kallisto version` printed no version: {out.stdout!r} {out.stderr!r}"
    return m.group(1)


# -- 1. a whole species -----------------------------------------------------------------------


def test_multispecies_writes_every_marker_in_dependency_order(tmp_path, sim, kallisto_bin):
    out = tmp_path / "out"
    with FileServer(sim["archive"]) as server:
        _config(tmp_path / "cfg", sim, server, batch={"size": 2, "prefetch": 0}, download={"parallel": 2})
        t0 = time.time()
        result = _build([MultiSpecies(config_dir=str(tmp_path / "cfg"), output_dir=str(out))])
        t1 = time.time()
        gets = sorted(q["path"].rsplit("/", 1)[1] for q in server.requests if q["method"] == "GET")
        assert not server.errors, server.errors
    assert result.scheduling_succeeded, result.summary_text
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert gets == sorted(f"{r}_{m}.fastq.gz" for r in RUNS for m in (1, 2)), "each file fetched exactly once"

    paths = SpeciesPaths(out, NAME)
    assert _marker(paths.marker(SPLIT))["batches"] == 2
    markers = _all_markers(paths, 2)
    missing = sorted(k for k, p in markers.items() if not p.is_file())
    assert not missing, f"markers missing: {missing}"
    # no marker beyond the planned batches, and nothing else in markers/
    assert {p.name for p in paths.markers.iterdir()} == {p.name for p in markers.values()}
    t = {k: _marker(p) for k, p in markers.items()}
    for k, m in t.items():
        assert isinstance(m.get("seconds"), (int, float)) and m["seconds"] >= 0, (k, m)
        assert t0 <= m["started_at"] <= m["finished_at"] <= t1, (k, m)
        # "seconds" is the same interval as started_at..finished_at (measured on another clock)
        assert abs((m["finished_at"] - m["started_at"]) - m["seconds"]) < 0.5, (k, m)

    # each task started only after what it requires had finished
    def before(a: str, b: str) -> None:
        assert t[a]["finished_at"] <= t[b]["started_at"], f"{b} started before {a} finished"

    for b in range(2):
        before(SPLIT, f"download_{b}")
        before(f"download_{b}", f"quant_{b}")
        before(INDEX, f"quant_{b}")
        before(f"quant_{b}", f"cleanup_{b}")
        before(f"cleanup_{b}", SPECIES)
    before("cleanup_0", "download_1")  # prefetch 0: strictly one batch of reads at a time

    # the markers' figures: the batch files' runs, each downloaded, quantified and freed
    for b, runs in enumerate((RUNS[:2], RUNS[2:])):
        assert [r["run"] for r in t[f"download_{b}"]["runs"]] == runs
        assert (t[f"download_{b}"]["ok"], t[f"download_{b}"]["failed"]) == (2, 0)
        assert [r["run"] for r in t[f"quant_{b}"]["runs"]] == runs
        assert (t[f"quant_{b}"]["ok"], t[f"quant_{b}"]["failed"]) == (2, 0)
        assert t[f"cleanup_{b}"]["bytes_freed"] == t[f"download_{b}"]["bytes"] > 0

    assert paths.fastq.is_dir() and files_under(paths.fastq) == set(), "reads left behind"
    for run in RUNS:
        assert (paths.run_quant(run) / "abundance.tsv").is_file()
    for table in ("est_counts", "tpm", "eff_length"):
        rows = _read_tsv(paths.merged / f"{NAME}_{table}.tsv")
        assert len(rows) == N_TRANSCRIPTS and list(rows[0]) == ["target_id", *RUNS], table
    qc = _read_tsv(paths.merged / f"{NAME}_qc.tsv")
    assert [r["run"] for r in qc] == RUNS and {r["n_processed"] for r in qc} == {str(READS)}
    assert _read_tsv(paths.failed_runs) == []

    summary = json.loads(paths.summary.read_text())
    assert summary["tool_versions"]["kallisto"] == _kallisto_version(kallisto_bin)
    assert (summary["runs"], summary["quantified"], summary["failed"]) == (4, 4, 0)
    assert {k: v for k, v in t[SPECIES].items() if k not in ("seconds", "started_at", "finished_at", "host")} == summary


# -- 2. the requires() wiring and prefetch ----------------------------------------------------


def _planned(tmp_path: Path, sim, server, prefetch: int) -> dict:
    """A species of 4 one-run batches with ``prefetch``, planned by SplitMetadata alone."""
    cfg = _config(tmp_path / f"cfg_p{prefetch}", sim, server, batch={"size": 1, "prefetch": prefetch})
    args = {"config_path": str(cfg), "output_dir": str(tmp_path / f"out_p{prefetch}")}
    result = _build([SplitMetadata(**args)])
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert _families(_summary_dict(result.worker)["completed"]) == {"SplitMetadata"}, result.summary_text
    paths = SpeciesPaths(args["output_dir"], NAME)
    assert _marker(paths.marker(SPLIT))["batches"] == 4
    assert not paths.fastq.exists() or files_under(paths.fastq) == set(), "planning downloaded reads"
    return args


def _cleanups(task) -> set[int]:
    return {d.batch for d in luigi.task.flatten(task.requires()) if isinstance(d, BatchCleanup)}


def test_requires_follow_prefetch(tmp_path, sim):
    with FileServer(sim["archive"]) as server:
        p0 = _planned(tmp_path, sim, server, prefetch=0)
        p1 = _planned(tmp_path, sim, server, prefetch=1)
        assert server.requests == [], "planning a species with a local table fetched something"

    # prefetch 0: batch n downloads only once batch n - 1 is cleaned up
    # the index comes first too: no read is fetched for a species whose reference cannot be had
    assert BatchDownload(batch=0, **p0).requires() == [SplitMetadata(**p0), BuildIndex(**p0)]
    assert BatchCleanup(batch=0, **p0) in BatchDownload(batch=1, **p0).requires()
    assert [_cleanups(BatchDownload(batch=n, **p0)) for n in range(4)] == [set(), {0}, {1}, {2}]
    # prefetch 1: batch 1 may download while batch 0 is quantified; batch 2 waits for batch 0's cleanup
    assert _cleanups(BatchDownload(batch=1, **p1)) == set()
    assert BatchCleanup(batch=0, **p1) in BatchDownload(batch=2, **p1).requires()
    assert [_cleanups(BatchDownload(batch=n, **p1)) for n in range(4)] == [set(), set(), {0}, {1}]
    for n in range(4):
        assert SplitMetadata(**p1) in BatchDownload(batch=n, **p1).requires()
        assert BuildIndex(**p1) in BatchDownload(batch=n, **p1).requires()

    # the rest of the chain, the same for any prefetch
    for args in (p0, p1):
        assert BatchQuant(batch=2, **args).requires() == {
            "download": BatchDownload(batch=2, **args),
            "index": BuildIndex(**args),
        }
        assert BatchCleanup(batch=2, **args).requires() == BatchQuant(batch=2, **args)
        # once planned, the batches are requirements every worker of a scheduler sees
        cleanups = [BatchCleanup(batch=n, **args) for n in range(4)]
        assert Species(**args).requires() == {
            "plan": SplitMetadata(**args),
            "index": BuildIndex(**args),
            "batches": cleanups,
        }
        # and run() puts the same before the scheduler (for a plan made after it was scheduled)
        steps = iter(Species(**args).run())
        assert next(steps) == BuildIndex(**args)
        assert next(steps) == cleanups
        assert not SpeciesPaths(args["output_dir"], NAME).marker(SPECIES).exists()
    # the kallisto task claims quant.threads of the shared cpu resource, downloads one download slot
    assert BatchQuant(batch=0, **p0).resources == {"cpu": 1}
    assert BatchDownload(batch=0, **p0).resources == {"download": 1}


@pytest.mark.parametrize("prefetch", [0, 1])
def test_prefetch_bounds_batches_in_flight_with_two_workers(tmp_path, sim, kallisto_bin, prefetch):
    """With two workers, nothing but the requires() chain keeps a download from starting early."""
    out = tmp_path / "out"
    with FileServer(sim["archive"]) as server:
        _config(tmp_path / "cfg", sim, server, batch={"size": 1, "prefetch": prefetch}, download={"parallel": 1})
        result = _build([MultiSpecies(config_dir=str(tmp_path / "cfg"), output_dir=str(out))], workers=2)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    paths = SpeciesPaths(out, NAME)
    t = _timeline(paths, 4)
    assert len(t) == 3 + 3 * 4, sorted(t)
    for n in range(prefetch + 1, 4):
        earlier = n - prefetch - 1
        assert t[f"cleanup_{earlier}"]["finished_at"] <= t[f"download_{n}"]["started_at"], (
            f"batch {n} started downloading before batch {earlier} was cleaned up (prefetch {prefetch})"
        )
    assert files_under(paths.fastq) == set()


# -- 3. a failed run --------------------------------------------------------------------------


def test_failed_runs_fail_the_build_not_the_other_runs(tmp_path, sim, kallisto_bin):
    """DRR000102's md5 in the metadata is wrong (batch 0); DRR000103's mate 1 is missing from the
    server (batch 1). Both batches finish, the species does not, and a second build stays failed."""
    rows = _read_tsv(Path(sim["metadata"]))
    for r in rows:
        if r["run_accession"] == "DRR000102":
            r["fastq_md5"] = ";".join(["0" * 32, r["fastq_md5"].split(";")[1]])
    meta = tmp_path / "meta.tsv"
    with open(meta, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    archive = tmp_path / "archive"
    shutil.copytree(sim["archive"], archive)
    gone = next(archive.rglob("DRR000103_1.fastq.gz"))
    gone.unlink()

    out = tmp_path / "out"
    with FileServer(archive) as server:
        # ena only: the .sra fallback would ask the real AWS Open Data bucket for these accessions
        _config(
            tmp_path / "cfg",
            sim,
            server,
            metadata_file=meta,
            batch={"size": 2, "prefetch": 1},
            download={"sources": ["ena"]},
        )
        ms = MultiSpecies(config_dir=str(tmp_path / "cfg"), output_dir=str(out))
        result = _build([ms])
        assert not result.scheduling_succeeded, result.summary_text
        assert result.status == LuigiStatusCode.FAILED, result.summary_text
        s = _summary_dict(result.worker)
        assert _families(s["failed"]) == {"Species"}, result.summary_text
        assert _families(s["upstream_failure"]) == {"MultiSpecies"}, result.summary_text
        assert {"SplitMetadata", "BuildIndex", "BatchDownload", "BatchQuant", "BatchCleanup"} <= _families(
            s["completed"]
        )

        paths = SpeciesPaths(out, NAME)
        assert not paths.marker(SPECIES).exists()
        assert not ms.complete()
        for b in range(2):
            for stage in BATCH_STAGES:
                assert paths.batch_marker(stage, b).is_file(), (stage, b)
        failed = {r["run"]: r for r in _read_tsv(paths.failed_runs)}
        assert sorted(failed) == ["DRR000102", "DRR000103"]
        assert (failed["DRR000102"]["batch"], failed["DRR000102"]["stage"]) == ("0", "download")
        assert "md5 mismatch" in failed["DRR000102"]["reason"]
        assert (failed["DRR000103"]["batch"], failed["DRR000103"]["stage"]) == ("1", "download")
        assert "404" in failed["DRR000103"]["reason"]
        for run in ("DRR000101", "DRR000104"):
            assert (paths.run_quant(run) / "abundance.tsv").is_file(), run
        for run in failed:
            assert not paths.run_quant(run).exists(), run
        assert files_under(paths.fastq) == set(), "a failed run's reads were left behind"
        est = _read_tsv(paths.merged / f"{NAME}_est_counts.tsv")
        assert list(est[0]) == ["target_id", "DRR000101", "DRR000104"]
        summary = json.loads(paths.summary.read_text())
        assert (summary["quantified"], summary["failed"]) == (2, 2)
        assert "fasterq-dump" not in summary["tool_versions"]  # sources: [ena]

        # The same build again: only Species runs (and fails) again; no batch is redone.
        n_requests = len(server.requests)
        batch_markers = {p: p.stat().st_mtime_ns for p in paths.markers.glob("*_0000*.json")}
        again = _build([ms])
        assert again.status == LuigiStatusCode.FAILED, again.summary_text
        assert _families(_summary_dict(again.worker)["failed"]) == {"Species"}
        assert len(server.requests) == n_requests, "the second build downloaded again"
        assert {p: p.stat().st_mtime_ns for p in batch_markers} == batch_markers
        assert len(batch_markers) == 6


# -- 4. a finished tree -----------------------------------------------------------------------


def test_rebuild_of_finished_tree_runs_nothing(tmp_path, sim, kallisto_bin):
    out = tmp_path / "out"
    with FileServer(sim["archive"]) as server:
        _config(tmp_path / "cfg", sim, server, batch={"size": 2})
        ms = MultiSpecies(config_dir=str(tmp_path / "cfg"), output_dir=str(out))
        first = _build([ms])
        assert first.status == LuigiStatusCode.SUCCESS, first.summary_text
        assert "ran successfully" in first.summary_text
        n_requests = len(server.requests)
        assert n_requests == 2 * len(RUNS)
        before = tree_snapshot(out)
        assert any(k.endswith("species.json") for k in before)

        again = _build([MultiSpecies(config_dir=str(tmp_path / "cfg"), output_dir=str(out))])
        assert len(server.requests) == n_requests, "the second build fetched something"
    assert again.status == LuigiStatusCode.SUCCESS and again.scheduling_succeeded, again.summary_text
    s = _summary_dict(again.worker)
    assert s["completed"] == set() and s["failed"] == set(), again.summary_text
    # MultiSpecies is found complete (its every Species marker exists), so nothing below it is even checked
    assert _families(s["already_done"]) == {"MultiSpecies"}, again.summary_text
    assert "Did not run any tasks" in again.summary_text and "ran successfully" not in again.summary_text
    assert tree_snapshot(out) == before, "the second build wrote files"


def test_species_puts_its_batches_before_the_scheduler_a_window_at_a_time(tmp_path, sim):
    """[pipeline] batch_window: the unfinished batches a Species requires (and yields) at once."""
    with FileServer(sim["archive"]) as server:
        args = _planned(tmp_path, sim, server, prefetch=0)
    paths = SpeciesPaths(args["output_dir"], NAME)
    config = luigi.configuration.get_config()
    config.set("pipeline", "batch_window", "3")
    try:
        luigi.task_register.Register.clear_instance_cache()
        assert [d.batch for d in Species(**args).requires()["batches"]] == [0, 1, 2]
        # batches 0 and 2 finished (a cleanup marker each): the window moves past them
        for b in (0, 2):
            paths.batch_marker(CLEANUP, b).write_text("{}")
        luigi.task_register.Register.clear_instance_cache()
        species = Species(**args)
        assert [d.batch for d in species.requires()["batches"]] == [1, 3]
        # a task object keeps its requirements (Luigi checks them again just before run())
        paths.batch_marker(CLEANUP, 1).write_text("{}")
        assert [d.batch for d in species.requires()["batches"]] == [1, 3]
        # run() yields the index, then each window of what is still unfinished
        steps = iter(species.run())
        assert next(steps) == BuildIndex(**args)
        assert next(steps) == [BatchCleanup(batch=3, **args)]
    finally:
        config.remove_option("pipeline", "batch_window")
        luigi.task_register.Register.clear_instance_cache()
