#!/usr/bin/env python3
"""The whole pipeline (luigi, real kallisto, a real HTTP server on 127.0.0.1) against its limits.

    .venv/bin/python bench/pipeline_bench.py [--runs 16] [--reads 500000] [--out bench/out] [--quick]

1  prefetch: the same simulated species downloaded through a throttled loopback server and
   quantified, with batch.prefetch 0, 1 and 2 (fresh output each). Wall time against the physical
   limit max(sum of download seconds, sum of quant seconds), both taken from the run's own markers.
2  peak disk: {out}/{species}/fastq sampled at 20 Hz during each of those runs, against the budget
   (prefetch + 1) x batch.max_bytes.
3  orchestration overhead: the pipeline on local files (an integrate table; the files are
   hard-linked, not copied) against a plain loop of the same kallisto calls, interleaved; the
   pipeline with the species default quant.strandedness auto (a sample of each run decides) and
   with it set to unstranded (what the loop runs).
4  scale: a 10,000-run species (scripts/make_scale_metadata.py): planning (SplitMetadata), a walk
   of every batch's completeness + merge over fabricated markers, and the no-op re-run.

Luigi runs as a child process with --local-scheduler and LUIGI_CONFIG_PATH pointing at a copy of
the project's luigi.cfg written into --out with ``[resources] download = 1, cpu = 1``. Generated
data is cached under OUT/data/; everything else under OUT/pipeline_bench.work/ is removed at the
end (unless --keep). Prints one table and writes OUT/pipeline_bench.json. Only 127.0.0.1 is
contacted; every child process gets an argument list, never a shell string.
"""

from __future__ import annotations

import argparse
import configparser
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.reads.fastq import count_fastq_records  # noqa: E402
from pipeline.testing import simulate  # noqa: E402
from pipeline.testing.disk_sampler import DiskSampler  # noqa: E402
from pipeline.testing.fileserver import FileServer  # noqa: E402

SPECIES = "Bench_sim"
SCALE_SPECIES = "Scale_test"  # what scripts/make_scale_metadata.py names its species
SEED = 20241125
MB = 1_000_000
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
TARGET_PREFETCH = 1.15  # wall / physical limit, prefetch >= 1
TARGET_OVERHEAD = 0.05  # pipeline / plain kallisto loop - 1
TARGET_BATCH_QUANT = 0.7  # the BatchQuant tasks' time / plain kallisto loop (the throughput issue)
TARGET_NOOP_S = 10.0  # no-op re-run at 10,000 runs
FAKE = "bench/pipeline_bench.py (fabricated)"


# -- small helpers --------------------------------------------------------------------------------


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def luigi_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("luigi")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "luigi"]


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def tail(path: Path, n: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_species_yaml(config_dir: Path, species: str, transcriptome, metadata_file, **sections) -> Path:
    """A species YAML (YAML is a superset of JSON, so json.dumps writes it unambiguously)."""
    doc = {
        "species": species,
        "reference": {"transcriptome": str(transcriptome)},
        "metadata": {"file": str(metadata_file)},
        **sections,
    }
    path = config_dir / f"{species}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


class Luigi:
    """Runs ``luigi --module pipeline ...`` as a child; wall seconds and the child's peak RSS."""

    def __init__(self, cfg_path: Path, log_dir: Path):
        self.cfg_path = cfg_path
        self.log_dir = log_dir
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["LUIGI_CONFIG_PATH"] = str(cfg_path)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        self.env = env

    def run(self, name: str, args: list[str], cwd: Path) -> dict:
        """Run to the end. cwd is a folder without luigi.cfg, so only the bench cfg is read.

        Peak RSS comes from ``os.wait4`` on this child: the kernel folds in the peaks of the
        child's own reaped children (luigi's worker processes, kallisto), so it is the largest
        process of the tree, not a sum."""
        log = self.log_dir / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        cmd = luigi_cmd() + ["--module", "pipeline"] + [str(a) for a in args]
        with open(log, "wb") as fh:
            fh.write(("$ " + " ".join(cmd) + "\n").encode())
            fh.flush()
            epoch0, t0 = time.time(), time.perf_counter()
            p = subprocess.Popen(
                cmd, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT
            )
            try:
                _, status, usage = os.wait4(p.pid, 0)
            except BaseException:
                p.kill()
                p.wait()
                raise
            p.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.perf_counter() - t0
            epoch1 = time.time()
        return {
            "rc": p.returncode,
            "seconds": seconds,
            "maxrss_mib": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime,  # the child's and its reaped children's
            "started_epoch": epoch0,
            "ended_epoch": epoch1,
            "log": str(log),
        }

    def check(self, res: dict, what: str) -> dict:
        if res["rc"] != 0:
            raise RuntimeError(f"{what}: luigi exited {res['rc']}; log {res['log']}:\n{tail(Path(res['log']))}")
        return res


def write_bench_cfg(path: Path) -> dict:
    """The project's luigi.cfg with [resources] download = 1 and cpu = 1."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(REPO / "luigi.cfg")
    if not cp.has_section("resources"):
        cp.add_section("resources")
    cp.set("resources", "download", "1")
    cp.set("resources", "cpu", "1")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(
            "# Written by bench/pipeline_bench.py: a copy of the project's luigi.cfg with\n"
            "# [resources] download = 1 and cpu = 1 (one batch downloading at a time through one\n"
            "# pipe, one kallisto at a time).\n"
        )
        cp.write(fh)
    return {s: dict(cp.items(s)) for s in cp.sections()}


def markers_of(out_dir: Path, species: str) -> dict:
    d = out_dir / species / "work" / "markers"
    return {p.stem: read_json(p) for p in sorted(d.glob("*.json"))}


def seed_index(out_dir: Path, species: str, index: Path, transcriptome: str, index_seconds: float) -> None:
    """Put the bench's prebuilt index where BuildIndex would, with its marker, so no pipeline
    run spends time on the index (it is excluded from every timing here)."""
    genome = out_dir / species / "genome"
    genome.mkdir(parents=True, exist_ok=True)
    dest = genome / "transcriptome.idx"
    try:
        os.link(index, dest)
    except OSError:
        shutil.copyfile(index, dest)
    now = time.time()
    write_json(
        out_dir / species / "work" / "markers" / "index.json",
        {
            "index": str(dest),
            "bytes": dest.stat().st_size,
            "transcriptome": transcriptome,
            "seconds": index_seconds,
            "started_at": now,
            "finished_at": now,
            "fabricated_by": FAKE,
        },
    )


# -- inputs ---------------------------------------------------------------------------------------


def make_dataset(data_root: Path, runs: int, reads: int, read_len: int, n_tx: int) -> dict:
    accessions = [f"DRR{900001 + i}" for i in range(runs)]
    t0 = time.perf_counter()
    ds = simulate.make_species_dataset(str(data_root), SPECIES, accessions, "PAIRED", reads, read_len, n_tx, SEED)
    seconds = time.perf_counter() - t0
    sizes = {}
    with open(ds["metadata"], newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            sizes[row["run_accession"]] = sum(int(b) for b in row["fastq_bytes"].split(";"))
    files = {r["run"]: [str(Path(f).resolve()) for f in r["files"]] for r in ds["runs"]}
    return {
        "transcriptome": str(Path(ds["transcriptome"]).resolve()),
        "metadata": str(Path(ds["metadata"]).resolve()),
        "archive": str((data_root / "archive").resolve()),
        "runs": accessions,
        "files": files,
        "run_bytes": sizes,
        "cached": ds["skipped"],
        "seconds": round(seconds, 2),
    }


def build_index(kallisto: str, transcriptome: str, index: Path) -> tuple[float, bool]:
    """kallisto index, cached beside the data (rebuilt when the transcriptome is newer)."""
    if index.is_file() and index.stat().st_mtime >= Path(transcriptome).stat().st_mtime:
        stamp = index.with_suffix(".seconds")
        return (float(stamp.read_text()) if stamp.is_file() else 0.0), True
    tmp = index.with_name(index.name + ".tmp")
    t0 = time.perf_counter()
    subprocess.run(
        [kallisto, "index", "-i", str(tmp), transcriptome],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    seconds = time.perf_counter() - t0
    os.replace(tmp, index)
    index.with_suffix(".seconds").write_text(f"{seconds:.3f}\n")
    return seconds, False


def kallisto_loop(kallisto: str, index: Path, ds: dict, dest: Path) -> dict:
    """The plain loop: ``kallisto quant -i IDX -o DIR -t 1 R1 R2`` per run, one after another."""
    fresh(dest)
    per_run = {}
    t0 = time.perf_counter()
    for run in ds["runs"]:
        t = time.perf_counter()
        subprocess.run(
            [kallisto, "quant", "-i", str(index), "-o", str(dest / run), "-t", "1", *ds["files"][run]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        per_run[run] = time.perf_counter() - t
    total = time.perf_counter() - t0
    shutil.rmtree(dest, ignore_errors=True)
    return {"seconds": total, "per_run": per_run}


# -- 1 + 2: prefetch and peak disk ----------------------------------------------------------------


def batch_durations(m: dict, kind: str) -> list[float]:
    n = m["split"]["batches"]
    return [m[f"{kind}_{i:05d}"]["finished_at"] - m[f"{kind}_{i:05d}"]["started_at"] for i in range(n)]


def ideal_makespan(d: list[float], q: list[float], prefetch: int) -> float:
    """The schedule with zero orchestration delay, given each batch's download and quant time:
    one download at a time, one kallisto at a time, download n after cleanup n - prefetch - 1
    (cleanup taken as instant)."""
    dl_end, q_end = [0.0] * len(d), [0.0] * len(d)
    for i in range(len(d)):
        start = dl_end[i - 1] if i else 0.0
        if i - prefetch - 1 >= 0:
            start = max(start, q_end[i - prefetch - 1])
        dl_end[i] = start + d[i]
        q_end[i] = max(dl_end[i], q_end[i - 1] if i else 0.0) + q[i]
    return q_end[-1] if q_end else 0.0


def prefetch_run(
    lg: Luigi,
    work: Path,
    ds: dict,
    index: Path,
    index_s: float,
    server: FileServer,
    prefetch: int,
    max_bytes: int,
    workers: int,
    name: str,
) -> dict:
    root = fresh(work / name)
    out = root / "out"
    write_species_yaml(
        root / "config",
        SPECIES,
        ds["transcriptome"],
        ds["metadata"],
        batch={"size": 100, "max_bytes": max_bytes, "prefetch": prefetch},
        # the simulated archive has FASTQ only; with the .sra route among the sources each
        # batch would also keep room for one conversion (batches.sra_room)
        download={"parallel": 1, "sources": ["ena"], "mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
        quant={"threads": 1},
        disk={"min_free": 0},
    )
    seed_index(out, SPECIES, index, ds["transcriptome"], index_s)
    server.clear_requests()
    fastq = out / SPECIES / "fastq"
    with DiskSampler([fastq], interval=0.05) as sampler:
        res = lg.run(
            name,
            [
                "MultiSpecies",
                "--config-dir",
                root / "config",
                "--output-dir",
                out,
                "--local-scheduler",
                "--workers",
                workers,
            ],
            cwd=root,
        )
    lg.check(res, f"prefetch {prefetch}")
    m = markers_of(out, SPECIES)
    d, q = batch_durations(m, "download"), batch_durations(m, "quant")
    n = m["split"]["batches"]
    sum_d, sum_q = sum(d), sum(q)
    limit = max(sum_d, sum_q)
    first_start = min(m[f"download_{i:05d}"]["started_at"] for i in range(n))
    last_quant = max(m[f"quant_{i:05d}"]["finished_at"] for i in range(n))
    gets = [r for r in server.requests if r["method"] == "GET"]
    # overlap actually achieved: seconds during which a download and a kallisto ran at once
    overlap = 0.0
    for i in range(n):
        a0, a1 = m[f"download_{i:05d}"]["started_at"], m[f"download_{i:05d}"]["finished_at"]
        for j in range(n):
            b0, b1 = m[f"quant_{j:05d}"]["started_at"], m[f"quant_{j:05d}"]["finished_at"]
            overlap += max(0.0, min(a1, b1) - max(a0, b0))
    ideal = ideal_makespan(d, q, prefetch)
    budget = (prefetch + 1) * max_bytes
    left = sorted(p.name for p in fastq.rglob("*") if p.is_file()) if fastq.exists() else []
    return {
        "prefetch": prefetch,
        "batches": n,
        "max_bytes": max_bytes,
        "wall_s": res["seconds"],
        "maxrss_mib": res["maxrss_mib"],
        "download_batch_s": d,
        "quant_batch_s": q,
        "sum_download_s": sum_d,
        "sum_quant_s": sum_q,
        "sum_download_run_s": sum(r["seconds"] for i in range(n) for r in m[f"download_{i:05d}"]["runs"]),
        "sum_quant_run_s": sum(r.get("seconds", 0) for i in range(n) for r in m[f"quant_{i:05d}"]["runs"]),
        "physical_limit_s": limit,
        "wall_over_limit": res["seconds"] / limit,
        "ideal_schedule_s": ideal,
        "wall_over_ideal": res["seconds"] / ideal,
        "span_s": last_quant - first_start,
        "span_over_limit": (last_quant - first_start) / limit,
        "startup_s": first_start - res["started_epoch"],
        "after_last_quant_s": res["ended_epoch"] - last_quant,
        "download_quant_overlap_s": overlap,
        "http_gets": len(gets),
        "http_bytes": sum(r.get("bytes_sent") or 0 for r in gets),
        "disk": {
            "path": str(fastq),
            "peak_bytes": sampler.peak,
            "peak_at_s": sampler.peak_at,
            "budget_bytes": budget,
            "peak_over_budget": sampler.peak / budget,
            "samples": len(sampler.samples),
            "interval_s": sampler.interval,
            "hz": len(sampler.samples) / max(res["seconds"], 1e-9),
            "left_after": left,
        },
        "log": res["log"],
    }


# -- 3: orchestration overhead --------------------------------------------------------------------


def local_pipeline_run(
    lg: Luigi,
    work: Path,
    ds: dict,
    index: Path,
    index_s: float,
    table: Path,
    name: str,
    workers: int,
    mirrors: Optional[dict] = None,
    strandedness: str = "auto",
    batch_size: int = 2,
) -> dict:
    root = fresh(work / name)
    out = root / "out"
    write_species_yaml(
        root / "config",
        SPECIES,
        ds["transcriptome"],
        table,
        batch={"size": batch_size, "prefetch": 1},
        download={"parallel": 1, "sources": ["ena"], "mirrors": mirrors or {}},
        quant={"threads": 1, "strandedness": strandedness},
        disk={"min_free": 0},
    )
    seed_index(out, SPECIES, index, ds["transcriptome"], index_s)
    res = lg.check(
        lg.run(
            name,
            [
                "MultiSpecies",
                "--config-dir",
                root / "config",
                "--output-dir",
                out,
                "--local-scheduler",
                "--workers",
                workers,
            ],
            cwd=root,
        ),
        name,
    )
    m = markers_of(out, SPECIES)
    n = m["split"]["batches"]
    first = min(v["started_at"] for k, v in m.items() if k != "index")
    last_q = max(m[f"quant_{i:05d}"]["finished_at"] for i in range(n))
    sources_used = {r.get("source") for i in range(n) for r in m[f"download_{i:05d}"]["runs"]}
    quant_runs = [r["seconds"] for i in range(n) for r in m[f"quant_{i:05d}"]["runs"]]
    verified = all(r.get("verified") for i in range(n) for r in m[f"download_{i:05d}"]["runs"])
    return {
        "wall_s": res["seconds"],
        "maxrss_mib": res["maxrss_mib"],
        "startup_s": first - res["started_epoch"],
        "sum_quant_batch_s": sum(batch_durations(m, "quant")),
        "sum_download_batch_s": sum(batch_durations(m, "download")),
        "after_last_quant_s": res["ended_epoch"] - last_q,
        "sources": sorted(s for s in sources_used if s),
        "sum_quantify_run_s": sum(quant_runs),
        "outside_quantify_s": res["seconds"] - sum(quant_runs),
        "verified_by_md5": verified,
        "log": res["log"],
    }


# -- 4: scale -------------------------------------------------------------------------------------


def scale_inputs(data: Path, n_runs: int) -> tuple[Path, float, bool]:
    folder = data / f"scale_{n_runs}"
    stamp = folder / ".bench_params.json"
    params = {"runs": n_runs, "seed": 1, "script": "scripts/make_scale_metadata.py"}
    yaml_path = folder / f"{SCALE_SPECIES}.yaml"
    if stamp.is_file() and read_json(stamp) == params and yaml_path.is_file() and (folder / "metadata.tsv").is_file():
        return yaml_path, 0.0, True
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_scale_metadata.py"),
            "--runs",
            str(n_runs),
            "--out",
            str(folder),
            "--seed",
            "1",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    write_json(stamp, params)
    return yaml_path, time.perf_counter() - t0, False


def fabricate_finished_tree(out: Path, species: str, transcripts_fa: Path) -> dict:
    """What a finished run leaves, minus species.json: index.json, download/quant/cleanup markers
    of every batch (every run ok), and quant/RUN/{abundance.tsv, run_info.json,
    pipeline_run.json} for every run, so the merge reads as many files as a real one would.
    The transcriptome is the scale set-up's 20 transcripts, so each abundance.tsv is small."""
    t0 = time.perf_counter()
    root = out / species
    markers, quant_dir = root / "work" / "markers", root / "quant"
    names, lens, cur = [], [], 0
    for line in transcripts_fa.read_text().splitlines():
        if line.startswith(">"):
            if names:
                lens.append(cur)
            names.append(line[1:].split()[0])
            cur = 0
        else:
            cur += len(line.strip())
    lens.append(cur)
    abundance = "target_id\tlength\teff_length\test_counts\ttpm\n" + "".join(
        f"{t}\t{n}\t{max(1, n - 199)}.0\t{100 + i}.0\t{1e6 / len(names):.4f}\n"
        for i, (t, n) in enumerate(zip(names, lens))
    )
    now = time.time()
    stamps = {"started_at": now, "finished_at": now, "fabricated_by": FAKE}
    idx = root / "genome" / "transcriptome.idx"
    idx.parent.mkdir(parents=True, exist_ok=True)
    idx.write_bytes(b"")
    write_json(
        markers / "index.json",
        {"index": str(idx), "bytes": 0, "transcriptome": str(transcripts_fa), "seconds": 0.0} | stamps,
    )
    batch_files = sorted((root / "work" / "metadata" / "batches").glob("batch_*.json"))
    n_runs = 0
    for bf in batch_files:
        b = read_json(bf)
        i = b["batch"]
        dl, qt = [], []
        for r in b["runs"]:
            run, spots = r["run"], r.get("read_count") or 1000
            files = [f["name"] for f in r["files"]]
            fbytes = sum(f.get("bytes") or 0 for f in r["files"])
            dl.append(
                {
                    "run": run,
                    "status": "ok",
                    "source": "ena",
                    "files": files,
                    "bytes": fbytes,
                    "expected_reads": spots,
                    "verified": True,
                    "seconds": 1.0,
                    "reason": "",
                }
            )
            qt.append(
                {
                    "run": run,
                    "status": "ok",
                    "layout": "PAIRED",
                    "n_processed": spots,
                    "n_pseudoaligned": int(spots * 0.8),
                    "p_pseudoaligned": 80.0,
                    "reason": "",
                    "seconds": 1.0,
                }
            )
            d = quant_dir / run
            d.mkdir(parents=True, exist_ok=True)
            (d / "abundance.tsv").write_text(abundance)
            (d / "run_info.json").write_text(
                json.dumps(
                    {
                        "n_targets": len(names),
                        "n_processed": spots,
                        "n_pseudoaligned": int(spots * 0.8),
                        "p_pseudoaligned": 80.0,
                    }
                )
                + "\n"
            )
            (d / "pipeline_run.json").write_text(
                json.dumps(
                    {
                        "run": run,
                        "layout": "PAIRED",
                        "n_processed": spots,
                        "source": "ena",
                        "capped": False,
                        "fabricated_by": FAKE,
                    }
                )
                + "\n"
            )
            n_runs += 1
        write_json(
            markers / f"download_{i:05d}.json",
            {
                "batch": i,
                "runs": dl,
                "bytes": sum(x["bytes"] for x in dl),
                "expected_bytes": b.get("expected_bytes"),
                "free_at_start": 0,
                "ok": len(dl),
                "failed": 0,
                "seconds": 1.0,
            }
            | stamps,
        )
        write_json(
            markers / f"quant_{i:05d}.json",
            {"batch": i, "runs": qt, "ok": len(qt), "failed": 0, "seconds": 1.0} | stamps,
        )
        write_json(markers / f"cleanup_{i:05d}.json", {"batch": i, "bytes_freed": 0, "seconds": 0.0} | stamps)
    return {
        "batches": len(batch_files),
        "runs": n_runs,
        "files_written": 1 + 3 * len(batch_files) + 3 * n_runs,
        "seconds": time.perf_counter() - t0,
    }


def scale_section(lg: Luigi, work: Path, data: Path, n_runs: int) -> dict:
    yaml_path, gen_s, cached = scale_inputs(data, n_runs)
    root = fresh(work / "scale")
    out = root / "out"
    # (a) planning only: SplitMetadata alone, nothing is downloaded
    a = lg.check(
        lg.run(
            "scale_a_split",
            ["SplitMetadata", "--config-path", yaml_path, "--output-dir", out, "--local-scheduler", "--workers", "1"],
            cwd=root,
        ),
        "scale (a)",
    )
    split = read_json(out / SCALE_SPECIES / "work" / "markers" / "split.json")
    fab = fabricate_finished_tree(out, SCALE_SPECIES, yaml_path.parent / "transcripts.fa")
    # (b) every batch complete (fabricated), no species.json: Species walks all batches and merges
    b = lg.check(
        lg.run(
            "scale_b_walk_merge",
            [
                "MultiSpecies",
                "--config-dir",
                yaml_path.parent,
                "--output-dir",
                out,
                "--local-scheduler",
                "--workers",
                "1",
            ],
            cwd=root,
        ),
        "scale (b)",
    )
    species_json = out / SCALE_SPECIES / "work" / "markers" / "species.json"
    summary = read_json(species_json)
    before = species_json.stat().st_mtime_ns
    # (c) the same command again: nothing to do
    c = lg.check(
        lg.run(
            "scale_c_noop",
            [
                "MultiSpecies",
                "--config-dir",
                yaml_path.parent,
                "--output-dir",
                out,
                "--local-scheduler",
                "--workers",
                "1",
            ],
            cwd=root,
        ),
        "scale (c)",
    )
    noop_ran_nothing = species_json.stat().st_mtime_ns == before
    return {
        "runs": n_runs,
        "inputs_cached": cached,
        "inputs_seconds": gen_s,
        "yaml": str(yaml_path),
        "plan": {
            "seconds": a["seconds"],
            "maxrss_mib": a["maxrss_mib"],
            "batches": split["batches"],
            "split_task_seconds": split.get("seconds"),
            "log": a["log"],
        },
        "fabricated": fab,
        "walk_merge": {
            "seconds": b["seconds"],
            "maxrss_mib": b["maxrss_mib"],
            "species_task_seconds": summary.get("seconds"),
            "quantified": summary.get("quantified"),
            "batches": summary.get("batches"),
            "log": b["log"],
        },
        "noop": {
            "seconds": c["seconds"],
            "maxrss_mib": c["maxrss_mib"],
            "species_json_untouched": noop_ran_nothing,
            "log": c["log"],
        },
    }


def merge_probe(work: Path, n_runs: int, n_tx: int, runs_at_scale: int) -> dict:
    """Species' merge (pipeline.merge.merge_species) at a realistic transcriptome width, in a child
    process so its peak RSS is its own; its time (not its memory, which the merge bounds by reading
    ``pipeline.merge.BLOCK`` runs at a time) is extrapolated linearly to ``runs_at_scale`` runs.
    The scale test above uses 20 transcripts, where the merge's memory does not show."""
    root = fresh(work / "merge_probe")
    rng = __import__("random").Random(SEED)
    text = "target_id\tlength\teff_length\test_counts\ttpm\n" + "".join(
        f"tx{i:06d}\t{1000 + i % 2000}\t{801 + i % 2000}.0\t{rng.random() * 100:.4f}\t{rng.random() * 10:.6f}\n"
        for i in range(n_tx)
    )
    info = json.dumps({"n_processed": 1000, "n_pseudoaligned": 800, "p_pseudoaligned": 80.0})
    runs = [f"SRR{2000000 + i}" for i in range(n_runs)]
    for run in runs:
        d = root / "quant" / run
        d.mkdir(parents=True)
        (d / "abundance.tsv").write_text(text)
        (d / "run_info.json").write_text(info)
    code = (
        "import json, resource, sys, time; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        "from pipeline.quant import merge; q = Path(sys.argv[2]); runs = sorted(p.name for p in q.iterdir()); "
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t = time.perf_counter(); "
        "merge.merge_species('Probe', q, runs, Path(sys.argv[3]), {}); "
        "print(json.dumps({'seconds': time.perf_counter() - t, 'rss0_kib': r0, "
        "'rss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(REPO), str(root / "quant"), str(root / "merged")],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(p.stdout.strip().splitlines()[-1])
    merged_bytes = sum(f.stat().st_size for f in (root / "merged").iterdir())
    shutil.rmtree(root, ignore_errors=True)
    grow_mib = (r["rss_kib"] - r["rss0_kib"]) / 1024
    k = runs_at_scale / n_runs
    from pipeline.quant.merge import BLOCK

    return {
        "runs": n_runs,
        "transcripts": n_tx,
        "block": BLOCK,
        "seconds": r["seconds"],
        "rss_mib": r["rss_kib"] / 1024,
        "rss_growth_mib": grow_mib,
        "merged_bytes": merged_bytes,
        "scale_runs": runs_at_scale,
        "extrapolated_seconds": r["seconds"] * k,
        "extrapolated_rss_growth_gib": grow_mib * k / 1024,
        "extrapolated_merged_gb": merged_bytes * k / 1e9,
    }


# -- report ---------------------------------------------------------------------------------------


def verdict(ok: Optional[bool]) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def fmt_table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _err(rows, sec, what, r):
    rows.append((sec, what, "ERROR: " + r["error"].splitlines()[0][:90], "", "MISS"))


def _prefetch_rows(rows: list, label: str, r: dict, target: bool) -> None:
    rows.append(("1", f"{label}: wall", f"{r['wall_s']:.2f} s  ({r['batches']} batches)", "", ""))
    rows.append(
        (
            "1",
            f"{label}: sum download D / sum quant Q (markers)",
            f"{r['sum_download_s']:.2f} s / {r['sum_quant_s']:.2f} s",
            "",
            "",
        )
    )
    rows.append(
        (
            "1",
            f"{label}: wall / physical limit max(D,Q)",
            f"{r['wall_over_limit']:.3f}",
            f"<= {TARGET_PREFETCH:.2f}" if target else "(none)",
            verdict(r["wall_over_limit"] <= TARGET_PREFETCH) if target else "",
        )
    )
    rows.append(
        (
            "1",
            f"{label}:   ideal schedule / limit; wall / ideal",
            f"{r['ideal_schedule_s'] / r['physical_limit_s']:.3f}; {r['wall_over_ideal']:.3f}",
            "",
            "",
        )
    )
    rows.append(
        (
            "1",
            f"{label}:   startup; after last quant; D-Q overlap",
            f"{r['startup_s']:.2f}; {r['after_last_quant_s']:.2f}; {r['download_quant_overlap_s']:.2f} s",
            "",
            "",
        )
    )


def report(res: dict) -> str:
    cfg = res["config"]
    out = []
    out.append("pipeline_bench: batched download -> kallisto -> delete, end to end on this machine")
    out.append(
        f"machine: {res['machine']['cpus']} CPUs, Python {res['machine']['python']}, "
        f"{res['machine']['kallisto']}, luigi {res['machine']['luigi']}; total {res['total_seconds']:.0f} s"
        + ("   [--quick: smoke sizes, figures not meaningful]" if cfg["quick"] else "")
    )
    out.append(f"luigi: child process, --local-scheduler, LUIGI_CONFIG_PATH={res['luigi_cfg']}")
    out.append("  = the project's luigi.cfg with [resources] download=1, cpu=1: one batch downloads at a time, through")
    out.append(
        f"  one connection (download.parallel 1), one kallisto at a time (quant.threads 1); --workers {cfg['workers']}"
    )
    ds = res.get("data", {})
    if ds:
        gen = "cached" if ds["cached"] else f"generated in {ds['seconds']:.0f} s"
        out.append(
            f"data: {cfg['runs']} paired runs x {cfg['reads']} pairs of {cfg['read_len']} bp, "
            f"{cfg['transcripts']} transcripts, {ds['mean_run_mb']:.1f} MB/run ({gen})"
        )
        out.append(
            f"index: kallisto index {res['index_seconds']:.1f} s, built once by the bench and excluded from "
            "every timing (hard-linked into each output dir with an index.json marker)"
        )
    cal = res.get("calibration")
    if cal:
        out.append(
            f"calibration: plain kallisto loop {cal['loop_s']:.2f} s = {cal['quant_s_per_run']:.2f} s/run -> "
            f"server throttle {cal['throttle_bps'] / MB:.1f} MB/s per connection (a run downloads in about "
            "one run's kallisto time)"
        )
    out.append("")
    rows = [("#", "measure", "value", "target", "")]
    pf = res.get("prefetch") or {}
    for p in sorted(pf, key=int):
        if "error" in pf[p]:
            _err(rows, "1", f"prefetch {p}", pf[p])
        else:
            _prefetch_rows(rows, f"prefetch {p}", pf[p], int(p) >= 1)
    if all(k in pf and "error" not in pf[k] for k in ("0", "1")):
        rows.append(("1", "prefetch-0 wall / prefetch-1 wall", f"{pf['0']['wall_s'] / pf['1']['wall_s']:.3f}", "", ""))
    for label, r in (res.get("prefetch_extra") or {}).items():
        if "error" in r:
            _err(rows, "1", label, r)
        else:
            _prefetch_rows(rows, label, r, True)
    for label, r in [(f"prefetch {p}", pf[p]) for p in sorted(pf, key=int)] + list(
        (res.get("prefetch_extra") or {}).items()
    ):
        if "error" in r:
            continue
        dk = r["disk"]
        rows.append(
            (
                "2",
                f"{label}: peak fastq/ / (p+1) x max_bytes",
                f"{dk['peak_bytes'] / MB:.1f} / {dk['budget_bytes'] / MB:.1f} MB = {dk['peak_over_budget']:.4f}",
                "<= 1",
                verdict(dk["peak_bytes"] <= dk["budget_bytes"] and not dk["left_after"]),
            )
        )
        rows.append(
            ("2", f"{label}:   samples", f"{dk['samples']} ({dk['hz']:.1f} Hz)", ">= 10 Hz", verdict(dk["hz"] >= 10))
        )
    ov = res.get("overhead")
    if ov and "error" not in ov:
        rows.append(("3", "plain kallisto loop, median", f"{ov['loop_median_s']:.2f} s  {ov['loop_s_fmt']}", "", ""))
        rows.append(
            (
                "3",
                "pipeline, integrate table, median",
                f"{ov['pipeline_median_s']:.2f} s  {ov['pipeline_s_fmt']}",
                "",
                "",
            )
        )
        rows.append(
            (
                "3",
                "overhead: pipeline / loop - 1 (medians)",
                f"{100 * ov['overhead']:+.1f} %",
                f"< {100 * TARGET_OVERHEAD:.0f} %",
                verdict(ov["overhead"] < TARGET_OVERHEAD),
            )
        )
        if "set_overhead" in ov:
            rows.append(
                (
                    "3",
                    "  same, quant.strandedness set (unstranded: no sample)",
                    f"{ov['set_pipeline_median_s']:.2f} s  {ov['set_pipeline_s_fmt']}: {100 * ov['set_overhead']:+.1f} %",
                    f"< {100 * TARGET_OVERHEAD:.0f} %",
                    verdict(ov["set_overhead"] < TARGET_OVERHEAD),
                )
            )
        if "paired_overheads" in ov:
            _round_rows(
                rows,
                "pipeline",
                ov["paired_overheads"],
                ov["paired_median"],
                ov["outside_quantify_median_s"],
                ov["loop_median_s"],
            )
            rows.append(
                (
                    "3",
                    "  sum of quantify_run - loop (kallisto slowed by the rest)",
                    f"{ov['quantify_minus_loop_median_s']:+.2f} s",
                    "",
                    "",
                )
            )
        rows.append(
            (
                "3",
                "  startup; after last quant",
                f"{ov['startup_median_s']:.2f}; {ov['after_last_quant_median_s']:.2f} s",
                "",
                "",
            )
        )
        rows.append(
            ("3", "  read-through: count_fastq_records on every file", f"{ov['precount_all_runs_s']:.2f} s", "", "")
        )
        if "set_quant_tasks_over_loop" in ov:
            rows.append(
                (
                    "3",
                    f"BatchQuant tasks / loop, {ov['batch_size']} runs a batch: strandedness set; auto",
                    f"{ov['set_quant_tasks_over_loop']:.2f}; {ov['quant_tasks_over_loop']:.2f}",
                    f"<= {TARGET_BATCH_QUANT}",
                    verdict(ov["set_quant_tasks_over_loop"] <= TARGET_BATCH_QUANT),
                )
            )
        if "md5_pipeline_median_s" in ov:
            rows.append(
                (
                    "3",
                    "diagnostic: same files as ENA table + md5 (file:// mirror)",
                    f"{ov['md5_pipeline_median_s']:.2f} s  {ov['md5_pipeline_s_fmt']} = "
                    f"{100 * ov['md5_overhead']:+.1f} %",
                    f"< {100 * TARGET_OVERHEAD:.0f} %",
                    verdict(ov["md5_overhead"] < TARGET_OVERHEAD),
                )
            )
            if "md5_paired_overheads" in ov:
                _round_rows(
                    rows,
                    "diagnostic",
                    ov["md5_paired_overheads"],
                    ov["md5_paired_median"],
                    ov["md5_outside_quantify_median_s"],
                    ov["loop_median_s"],
                )
    elif ov:
        _err(rows, "3", "overhead", ov)
    sc = res.get("scale")
    if sc and "error" not in sc:
        n = sc["runs"]
        rows.append(
            (
                "4",
                f"{n} runs (a) plan: SplitMetadata alone",
                f"{sc['plan']['seconds']:.2f} s, {sc['plan']['maxrss_mib']:.0f} MiB, {sc['plan']['batches']} batches",
                "",
                "",
            )
        )
        rows.append(
            (
                "4",
                f"{n} runs (b) walk all batches + merge [FABRICATED]",
                f"{sc['walk_merge']['seconds']:.2f} s, {sc['walk_merge']['maxrss_mib']:.0f} MiB "
                f"(Species.run {sc['walk_merge']['species_task_seconds']:.2f} s)",
                "",
                "",
            )
        )
        big = n >= 10_000
        rows.append(
            (
                "4",
                f"{n} runs (c) no-op re-run",
                f"{sc['noop']['seconds']:.2f} s, {sc['noop']['maxrss_mib']:.0f} MiB",
                f"< {TARGET_NOOP_S:.0f} s" + ("" if big else " at 10,000"),
                verdict(sc["noop"]["seconds"] < TARGET_NOOP_S and sc["noop"]["species_json_untouched"]) if big else "",
            )
        )
    elif sc:
        _err(rows, "4", "scale", sc)
    mp = res.get("merge_probe")
    if mp and "error" not in mp:
        rows.append(
            (
                "4",
                f"(d) merge alone, {mp['runs']} runs x {mp['transcripts']} transcripts",
                f"{mp['seconds']:.2f} s, RSS +{mp['rss_growth_mib']:.0f} MiB",
                "",
                "",
            )
        )
        rows.append(
            (
                "4",
                f"    linear extrapolation to {mp['scale_runs']} runs",
                f"~{mp['extrapolated_seconds']:.0f} s, {mp['extrapolated_merged_gb']:.1f} GB of tables "
                f"(memory bounded by {mp.get('block', '?')}-run blocks)",
                "",
                "",
            )
        )
    elif mp:
        _err(rows, "4", "merge probe", mp)
    out.append(fmt_table(rows))
    out.append("")
    out.append("Notes")
    out.append("1: D and Q: sums over batches of finished_at - started_at of the download_/quant_ markers of that same")
    out.append("   run. limit = max(D, Q). 'ideal schedule' replays those batch times with no orchestration delay; it")
    out.append(
        "   includes the first download and the last kallisto, which nothing can overlap, so with n equal batches"
    )
    out.append("   and D = Q it is limit x (n + 1) / n. startup = child launch to first download.")
    if res.get("max_bytes"):
        out.append(
            f"2: DiskSampler on {{out}}/{{species}}/fastq every 0.05 s. batch.size 100, batch.max_bytes = the largest "
            f"run's bytes + 1000 = {res['max_bytes']} B,"
        )
        out.append("   so every batch holds 1 run (the extra row: 2 runs' bytes + 1000, 2 runs per batch).")
    out.append(
        "3: integrate table (run, read1_path, read2_path: absolute paths, hard-linked into fastq/), batch.size "
        + str(ov.get("batch_size", 2) if ov else 2)
        + ","
    )
    out.append(
        "   prefetch 1, index excluded from both sides; loop and pipelines interleaved (loop, pipeline, diagnostic,"
    )
    out.append("   loop, ...). The diagnostic lists the same files with md5 and read_count (the simulated ENA table,")
    out.append("   mirror https://ftp.sra.ebi.ac.uk/ -> file://), so they count as verified and are not read through.")
    out.append(
        "   The integrate table's files have no md5: each is read through (count_fastq_records) in a thread while"
    )
    out.append("   kallisto runs on it. quantify_run seconds come from the quant markers; the loop is kallisto alone.")
    if sc and "error" not in sc:
        out.append(
            f"4: (b) uses FABRICATED markers: download/quant/cleanup_NNNNN.json of all {sc['plan']['batches']} "
            "batches (every run ok),"
        )
        out.append("   index.json, and quant/RUN/{abundance.tsv, run_info.json, pipeline_run.json} for every run")
        out.append("   (20-transcript abundance files), but no species.json: MultiSpecies -> Species checks every")
        out.append(
            "   BatchCleanup and merges. Nothing was downloaded or quantified. RSS: peak of the luigi process tree"
        )
        out.append(
            "   (os.wait4). Section 4 runs luigi with --workers 1. (d) runs pipeline.merge.merge_species in a child"
        )
        out.append("   process on fabricated abundance files, then scales its seconds and RSS growth linearly.")
    return "\n".join(out)


def _round_rows(rows: list, what: str, paired: list, median: float, outside_s: float, loop_s: float) -> None:
    """Section 3's rows for one kind of pipeline run: each round against its loop, and the time
    with no kallisto running (which does not depend on how fast kallisto happened to be)."""
    rows.append(
        (
            "3",
            f"  each round: {what} / the loop just before - 1",
            ", ".join(f"{100 * x:+.1f}" for x in paired) + f" %; median {100 * median:+.1f} %",
            "",
            "",
        )
    )
    rows.append(
        (
            "3",
            "  wall - sum of quantify_run (time with no kallisto running)",
            f"{outside_s:.2f} s = {100 * outside_s / loop_s:.1f} % of the loop",
            "",
            "",
        )
    )


def _section(res: dict, key: str, fn, *args):
    try:
        res[key] = fn(*args)
        return True
    except Exception as e:  # noqa: BLE001 - report and go on with the other sections
        res[key] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        say(f"  FAILED: {e}")
        return False


def overhead_section(
    lg: Luigi,
    work: Path,
    ds: dict,
    index: Path,
    index_s: float,
    kallisto: str,
    repeats: int,
    workers: int,
    data_root: Path,
    batch_size: int = 2,
) -> dict:
    table = data_root / "integrate.tsv"
    table.write_text(
        "run\tread1_path\tread2_path\n"
        + "".join(f"{r}\t{ds['files'][r][0]}\t{ds['files'][r][1]}\n" for r in ds["runs"])
    )
    file_mirror = {"https://ftp.sra.ebi.ac.uk/": Path(ds["archive"]).as_uri() + "/"}
    loops, pipes, md5s, sets = [], [], [], []
    for rep in range(repeats):
        say(f"section 3: loop {rep + 1}/{repeats}")
        loops.append(kallisto_loop(kallisto, index, ds, work / "loop"))
        say(f"section 3: pipeline {rep + 1}/{repeats}")
        pipes.append(
            local_pipeline_run(lg, work, ds, index, index_s, table, f"local{rep}", workers, batch_size=batch_size)
        )
        say(f"section 3: pipeline, strandedness set {rep + 1}/{repeats}")
        sets.append(
            local_pipeline_run(
                lg,
                work,
                ds,
                index,
                index_s,
                table,
                f"local_set{rep}",
                workers,
                strandedness="unstranded",
                batch_size=batch_size,
            )
        )
        say(f"section 3: diagnostic pipeline {rep + 1}/{repeats}")
        md5s.append(
            local_pipeline_run(
                lg,
                work,
                ds,
                index,
                index_s,
                Path(ds["metadata"]),
                f"local_md5_{rep}",
                workers,
                mirrors=file_mirror,
                batch_size=batch_size,
            )
        )
    t = time.perf_counter()
    for r in ds["runs"]:
        for f in ds["files"][r]:
            count_fastq_records(f)
    precount = time.perf_counter() - t
    loop_med = statistics.median(x["seconds"] for x in loops)
    pipe_med = statistics.median(x["wall_s"] for x in pipes)
    md5_med = statistics.median(x["wall_s"] for x in md5s)
    # each pipeline against the loop that ran just before it: slow drifts of the machine cancel
    paired = [p["wall_s"] / lp["seconds"] - 1 for p, lp in zip(pipes, loops)]
    md5_paired = [p["wall_s"] / lp["seconds"] - 1 for p, lp in zip(md5s, loops)]
    set_med = statistics.median(x["wall_s"] for x in sets)
    say(f"  loop {loop_med:.2f} s, pipeline {pipe_med:.2f} s, diagnostic {md5_med:.2f} s")
    return {
        "index": "excluded from both (built once, before)",
        "loops_s": [x["seconds"] for x in loops],
        "pipelines": pipes,
        "md5_pipelines": md5s,
        "loop_s_fmt": "(" + ", ".join(f"{x['seconds']:.2f}" for x in loops) + ")",
        "pipeline_s_fmt": "(" + ", ".join(f"{x['wall_s']:.2f}" for x in pipes) + ")",
        "md5_pipeline_s_fmt": "(" + ", ".join(f"{x['wall_s']:.2f}" for x in md5s) + ")",
        "loop_median_s": loop_med,
        "pipeline_median_s": pipe_med,
        "overhead": pipe_med / loop_med - 1,
        "md5_pipeline_median_s": md5_med,
        "md5_overhead": md5_med / loop_med - 1,
        "set_pipeline_s_fmt": "(" + ", ".join(f"{x['wall_s']:.2f}" for x in sets) + ")",
        "set_pipeline_median_s": set_med,
        "set_overhead": set_med / loop_med - 1,
        "paired_overheads": paired,
        "paired_median": statistics.median(paired),
        "md5_paired_overheads": md5_paired,
        "md5_paired_median": statistics.median(md5_paired),
        "outside_quantify_median_s": statistics.median(x["outside_quantify_s"] for x in pipes),
        "md5_outside_quantify_median_s": statistics.median(x["outside_quantify_s"] for x in md5s),
        "quantify_minus_loop_median_s": statistics.median(
            p["sum_quantify_run_s"] - lp["seconds"] for p, lp in zip(pipes, loops)
        ),
        "startup_median_s": statistics.median(x["startup_s"] for x in pipes),
        "after_last_quant_median_s": statistics.median(x["after_last_quant_s"] for x in pipes),
        "quant_tasks_minus_loop_s": statistics.median(x["sum_quant_batch_s"] for x in pipes) - loop_med,
        # the throughput issue's measure: the BatchQuant tasks' time against the loop (each pipeline
        # against the loop run just before it), strandedness set (what the loop runs) and auto
        "batch_size": batch_size,
        "set_quant_tasks_over_loop": statistics.median(
            p["sum_quant_batch_s"] / lp["seconds"] for p, lp in zip(sets, loops)
        ),
        "quant_tasks_over_loop": statistics.median(
            p["sum_quant_batch_s"] / lp["seconds"] for p, lp in zip(pipes, loops)
        ),
        "precount_all_runs_s": precount,
    }


# -- main -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="simulated paired runs (default 16; 4 with --quick)")
    ap.add_argument("--reads", type=int, default=None, help="read pairs per run (default 500000; 50000 with --quick)")
    ap.add_argument("--read-len", type=int, default=75)
    ap.add_argument("--transcripts", type=int, default=None, help="transcripts (default 2000; 200 with --quick)")
    ap.add_argument(
        "--scale-runs", type=int, default=None, help="runs of the scale test (default 10000; 1000 with --quick)"
    )
    ap.add_argument(
        "--probe-runs",
        type=int,
        default=None,
        help="runs of the merge probe, 4d (default 200; 20 with --quick; 0 skips it)",
    )
    ap.add_argument("--probe-transcripts", type=int, default=30_000, help="transcripts of the merge probe")
    ap.add_argument("--repeats", type=int, default=3, help="loop/pipeline rounds in section 3 (default 3)")
    ap.add_argument("--batch-size", type=int, default=2, help="batch.size of section 3's pipelines (default 2)")
    ap.add_argument("--workers", type=int, default=3, help="luigi --workers for sections 1-3 (default 3)")
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of well under a minute")
    ap.add_argument("--skip", default="", help="sections to skip, any of 1 3 4 (1 includes 2), e.g. --skip 4")
    ap.add_argument("--keep", action="store_true", help="keep OUT/pipeline_bench.work/ (pipeline outputs)")
    args = ap.parse_args(argv)
    runs = args.runs or (4 if args.quick else 16)
    reads = args.reads or (50_000 if args.quick else 500_000)
    n_tx = args.transcripts or (200 if args.quick else 2000)
    scale_runs = args.scale_runs or (1000 if args.quick else 10_000)
    probe_runs = args.probe_runs if args.probe_runs is not None else (20 if args.quick else 600)
    probe_tx = 3000 if args.quick and args.probe_transcripts == 30_000 else args.probe_transcripts
    if runs < 2 or runs % 2:
        ap.error("--runs must be even and >= 2 (two runs per batch)")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")

    kallisto = shutil.which("kallisto")
    if not kallisto:
        print("kallisto not found on PATH", file=sys.stderr)
        return 2
    t_all = time.perf_counter()
    out = Path(args.out).resolve()
    work = out / "pipeline_bench.work"
    logs = out / "pipeline_bench.logs"
    fresh(work)
    fresh(logs)
    cfg_path = out / "pipeline_bench.luigi.cfg"
    write_bench_cfg(cfg_path)
    lg = Luigi(cfg_path, logs)
    import luigi

    res: dict = {
        "config": {
            "runs": runs,
            "reads": reads,
            "read_len": args.read_len,
            "transcripts": n_tx,
            "scale_runs": scale_runs,
            "probe_runs": probe_runs,
            "probe_transcripts": probe_tx,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "quick": args.quick,
            "out": str(out),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "luigi": getattr(luigi, "__version__", "?"),
            "kallisto": subprocess.run([kallisto, "version"], capture_output=True, text=True).stdout.strip(),
            "loadavg_1min_at_start": os.getloadavg()[0],
        },
        "luigi_cfg": str(cfg_path),
        "targets": {
            "prefetch_wall_over_limit_max": TARGET_PREFETCH,
            "overhead_max": TARGET_OVERHEAD,
            "noop_seconds_max": TARGET_NOOP_S,
        },
    }
    ok = True
    try:
        if not {"1", "3"} <= set(args.skip):
            data_root = out / "data" / f"sim_{runs}x{reads}x{args.read_len}_{n_tx}tx"
            say(f"data: {runs} runs x {reads} pairs under {data_root}")
            ds = make_dataset(data_root, runs, reads, args.read_len, n_tx)
            sizes = list(ds["run_bytes"].values())
            res["data"] = {
                "root": str(data_root),
                "cached": ds["cached"],
                "seconds": ds["seconds"],
                "run_bytes": ds["run_bytes"],
                "mean_run_mb": statistics.mean(sizes) / MB,
            }
            index = data_root / "transcriptome.idx"
            index_s, idx_cached = build_index(kallisto, ds["transcriptome"], index)
            res["index_seconds"], res["index_cached"] = index_s, idx_cached
            say(f"index: {index_s:.1f} s{' (cached)' if idx_cached else ''}; calibration loop")
            cal = kallisto_loop(kallisto, index, ds, work / "loop_cal")
            per_run_q = cal["seconds"] / runs
            throttle = statistics.mean(sizes) / per_run_q
            res["calibration"] = {
                "loop_s": cal["seconds"],
                "per_run": cal["per_run"],
                "quant_s_per_run": per_run_q,
                "throttle_bps": throttle,
            }

            if "1" not in args.skip:
                # one run a batch: with n equal batches and D = Q nothing can beat (n + 1) / n x the
                # limit (the first download and the last kallisto overlap nothing), so more batches
                # make the prefetch rows say more about the scheduling and less about fill and drain
                max_bytes = max(sizes) + 1000
                res["max_bytes"] = max_bytes
                res["prefetch"], res["prefetch_extra"] = {}, {}
                plan = [(res["prefetch"], str(p), p, max_bytes, f"prefetch{p}") for p in (0, 1, 2)]
                plan.append(
                    (
                        res["prefetch_extra"],
                        "prefetch 1, 2 runs/batch",
                        1,
                        max(a + b for a, b in zip(sizes, sizes[1:])) + 1000,
                        "prefetch1_2runs",
                    )
                )
                with FileServer(ds["archive"], throttle_bps=throttle) as server:
                    for where, key, p, mb, name in plan:
                        say(f"section 1/2: {name}")
                        ok &= _section(
                            where, key, prefetch_run, lg, work, ds, index, index_s, server, p, mb, args.workers, name
                        )
                        r = where[key]
                        if "error" not in r:
                            say(
                                f"  wall {r['wall_s']:.2f} s, D {r['sum_download_s']:.2f} s, Q {r['sum_quant_s']:.2f} s, "
                                f"peak {r['disk']['peak_bytes'] / MB:.1f} MB"
                            )
                    res["server_errors"] = server.errors

            if "3" not in args.skip:
                ok &= _section(
                    res,
                    "overhead",
                    overhead_section,
                    lg,
                    work,
                    ds,
                    index,
                    index_s,
                    kallisto,
                    args.repeats,
                    args.workers,
                    data_root,
                    args.batch_size,
                )

        if "4" not in args.skip:
            say(f"section 4: scale, {scale_runs} runs")
            if _section(res, "scale", scale_section, lg, work, out / "data", scale_runs):
                s = res["scale"]
                say(
                    f"  plan {s['plan']['seconds']:.2f} s, walk+merge {s['walk_merge']['seconds']:.2f} s, "
                    f"no-op {s['noop']['seconds']:.2f} s"
                )
            else:
                ok = False
            if probe_runs:
                say(f"section 4d: merge probe, {probe_runs} runs x {probe_tx} transcripts")
                ok &= _section(res, "merge_probe", merge_probe, work, probe_runs, probe_tx, scale_runs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["total_seconds"] = time.perf_counter() - t_all
    text = report(res)
    res["table"] = text
    write_json(out / "pipeline_bench.json", res)
    sys.stderr.flush()
    print(text)
    print(f"\nwrote {out / 'pipeline_bench.json'}; luigi logs in {logs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
