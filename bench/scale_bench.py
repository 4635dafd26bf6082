#!/usr/bin/env python3
"""How the orchestration scales: 10,000, 50,000 and 100,000 runs, in one species and over 10.

    .venv/bin/python bench/scale_bench.py [--sizes 10000,50000,100000] [--out bench/out]

For each size and shape (one species of N runs; ten species of N/10), from fresh output:

1  plan: ``SplitMetadata`` of every species through ``luigi.build`` (local scheduler, one worker);
2  first scheduling pass: a Luigi worker adds ``MultiSpecies`` to a local scheduler, nothing
   planned is finished yet; the scheduler's task count is what Luigi holds for the study;
3  resumed walk: every batch's markers fabricated as finished (no species marker), the same pass;
4  no-op: the finished study (species markers fabricated too), ``luigi --module pipeline
   MultiSpecies --local-scheduler``, the command a user re-runs.

Each step runs in a child process of its own, so its wall time and peak RSS (``ru_maxrss``) are
its own. The metadata comes from scripts/make_scale_metadata.py (cached under OUT/data/). Only
planning and scheduling are measured: nothing is downloaded. Prints one table and writes
OUT/scale_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_scale_metadata.py"
TARGET_S = 30.0  # plan + no-op at 100,000 runs
TARGET_MIB = 1024.0

SCHEDULE = """
import json, resource, sys, time
import luigi, luigi.scheduler, luigi.worker
from pipeline import scheduler
from pipeline.tasks import MultiSpecies
scheduler.MADE["local"] = True  # the scheduler below is local (made here, not by Luigi's factory)
sch = luigi.scheduler.Scheduler()
t = time.perf_counter()
with luigi.worker.Worker(scheduler=sch, worker_processes=1) as w:
    ok = w.add(MultiSpecies(config_dir=sys.argv[1], output_dir=sys.argv[2]))
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "ok": ok, "tasks": len(sch._state.get_active_tasks()),
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

NOOP = """
import json, resource, sys, time
import luigi.retcodes
t = time.perf_counter()
try:
    luigi.retcodes.run_with_retcodes(["--module", "pipeline", "MultiSpecies", "--config-dir", sys.argv[1],
                                      "--output-dir", sys.argv[2], "--local-scheduler"])
    code = 0
except SystemExit as e:
    code = e.code
print(json.dumps({"seconds": time.perf_counter() - t, "exit": code,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PLAN = """
import json, resource, sys, time
import luigi
from pipeline.tasks import SplitMetadata
t = time.perf_counter()
res = luigi.build([SplitMetadata(config_path=c, output_dir=sys.argv[1]) for c in sys.argv[2:]],
                  local_scheduler=True, workers=1, detailed_summary=True)
print(json.dumps({"seconds": time.perf_counter() - t, "ok": res.scheduling_succeeded,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(code: str, *args, cwd: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("LUIGI_CONFIG_PATH", None)
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def species_setup(data: Path, n_runs: int, n_species: int) -> Path:
    """A config folder of ``n_species`` YAMLs, each over its own table of n_runs / n_species runs."""
    per = n_runs // n_species
    src = data / f"table_{per}"
    if not (src / "metadata.tsv").is_file():
        subprocess.run([sys.executable, str(SCRIPT), "--runs", str(per), "--out", str(src), "--seed", "1"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    cfg = data / f"cfg_{n_runs}_{n_species}"
    shutil.rmtree(cfg, ignore_errors=True)
    cfg.mkdir(parents=True)
    yaml = (src / "Scale_test.yaml").read_text()
    for k in range(n_species):
        name = "Scale_test" if n_species == 1 else f"Scale_test{k:02d}"
        text = yaml.replace("species: Scale_test", f"species: {name}")
        text = text.replace("transcripts.fa", str(src / "transcripts.fa")).replace(
            "metadata.tsv", str(src / "metadata.tsv")
        )
        (cfg / f"{name}.yaml").write_text(text)
    return cfg


def fabricate(out: Path, finished_species: bool) -> int:
    """Markers of every planned batch (and the index), as a finished run leaves them; with
    ``finished_species`` the species markers too. Returns the batches marked."""
    now = time.time()
    stamp = json.dumps({"started_at": now, "finished_at": now, "seconds": 0.0, "fabricated_by": "bench/scale_bench.py"})
    n = 0
    for markers in out.glob("*/work/markers"):
        batches = json.loads((markers / "split.json").read_text())["batches"]
        (markers / "index.json").write_text(stamp)
        for b in range(batches):
            for stage in ("download", "quant", "cleanup"):
                (markers / f"{stage}_{b:05d}.json").write_text(stamp)
        n += batches
        if finished_species:
            (markers / "species.json").write_text(stamp)
    return n


def one(work: Path, data: Path, n_runs: int, n_species: int) -> dict:
    cfg = species_setup(data, n_runs, n_species)
    root = work / f"s_{n_runs}_{n_species}"
    shutil.rmtree(root, ignore_errors=True)
    out = root / "out"
    root.mkdir(parents=True)
    plan = child(PLAN, out, *sorted(cfg.glob("*.yaml")), cwd=root)
    first = child(SCHEDULE, cfg, out, cwd=root)
    batches = fabricate(out, finished_species=False)
    resumed = child(SCHEDULE, cfg, out, cwd=root)
    fabricate(out, finished_species=True)
    noop = child(NOOP, cfg, out, cwd=root)  # the command a user re-runs, on a finished study
    shutil.rmtree(root, ignore_errors=True)
    return {"runs": n_runs, "species": n_species, "batches": batches, "plan": plan, "first_pass": first,
            "resumed_pass": resumed, "noop": noop}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    a = ap.parse_args()
    out = Path(a.out)
    data, work = out / "data" / "scale", out / "scale_bench.work"
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        for n_species in (1, 10):
            rows.append(one(work, data, n, n_species))
            r = rows[-1]
            print(
                f"{n:>7,} runs in {n_species:>2} species ({r['batches']:>6,} batches): "
                f"plan {r['plan']['seconds']:6.1f} s {r['plan']['rss_mib']:5.0f} MiB | "
                f"first pass {r['first_pass']['seconds']:5.1f} s, {r['first_pass']['tasks']:>5} tasks, "
                f"{r['first_pass']['rss_mib']:4.0f} MiB | resumed pass {r['resumed_pass']['seconds']:5.1f} s, "
                f"{r['resumed_pass']['tasks']:>4} tasks | no-op {r['noop']['seconds']:5.2f} s",
                flush=True,
            )
    big = [r for r in rows if r["runs"] == 100_000]
    for r in big:
        total = r["plan"]["seconds"] + r["noop"]["seconds"]
        worst = max(r["plan"]["rss_mib"], r["first_pass"]["rss_mib"], r["resumed_pass"]["rss_mib"])
        print(
            f"100,000 runs / {r['species']} species: plan + no-op {total:.1f} s (target < {TARGET_S:.0f} s "
            f"{'met' if total < TARGET_S else 'MISSED'}), largest orchestrator {worst:.0f} MiB (target < "
            f"{TARGET_MIB:.0f} MiB {'met' if worst < TARGET_MIB else 'MISSED'})"
        )
    (out / "scale_bench.json").write_text(json.dumps(rows, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
