#!/usr/bin/env python3
"""download.mode stream against file on a throttled link: wall time, reads on disk, CPU.

    .venv/bin/python bench/stream_bench.py [--runs 8] [--reads 400000] [--repeats 3] [--link-mbps M] [--quick] [--keep]

The same simulated species (paired runs) is run through the whole pipeline (luigi child process,
real kallisto, the loopback FileServer) in file mode and in stream mode, ``--repeats`` times each,
taking turns (file, stream, stream, file, ...) so that load from elsewhere hits both, from one
invocation, on fresh output folders with the index built beforehand. Rows are medians. The server's link is shared
by all responses (``FileServer(link_bps=...)``), set by default so that a run takes about as long
to download as kallisto takes on it (measured first on the local files), the case where
overlapping a run's download with its own quant matters most.

Both modes use the same settings: ``[resources] cpu = download = --slots`` (default 1: one
kallisto and one download at a time), ``--workers`` slots + 1, ``batch.size 2``,
``batch.prefetch 1``, ``download.parallel 1``, ``quant.threads 1``. Measured:

- wall: the luigi child's wall time;
- CPU: user + system seconds of the luigi child and its reaped children (workers, kallisto), from
  ``os.wait4``; the loopback server runs in this process and is not counted;
- reads on disk: sampled at 20 Hz, the bytes of regular files under ``{species}/fastq/`` plus any
  regular ``*.fastq*`` file in the run folders under ``{species}/quant/`` (where the stream
  mode's FIFOs live: a FIFO holds no bytes on disk); the peak and the mean over the run;
- identical results: every run's ``abundance.tsv``, byte for byte, between the two modes.

Prints one table with the ratios (stream / file) and writes OUT/stream_bench.json. Only
127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import stat
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from pipeline_bench import (  # noqa: E402
    SPECIES,
    Luigi,
    build_index,
    fmt_table,
    fresh,
    kallisto_loop,
    make_dataset,
    say,
    seed_index,
    write_bench_cfg,
    write_json,
    write_species_yaml,
)

from pipeline.testing.fileserver import FileServer  # noqa: E402

MB = 1_000_000
#: the figures reported as medians over the rounds of a mode
MEDIANS = (
    "wall_s",
    "cpu_s",
    "maxrss_mib",
    "peak_read_bytes",
    "mean_read_bytes",
    "samples",
    "hz",
    "http_gets",
    "http_bytes",
)


def read_bytes_on_disk(species_dir: Path) -> int:
    """Bytes of reads on disk now: regular files under fastq/, and FASTQ-named regular files in
    the run folders (final and temporary) under quant/. Folders renamed or removed during the walk
    are skipped."""
    total = 0
    for root, fastq_only in ((species_dir / "fastq", False), (species_dir / "quant", True)):
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                if fastq_only and ".fastq" not in name:
                    continue
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


class ReadSampler:
    """:func:`read_bytes_on_disk` every ``interval`` s in a thread: peak, mean and sample count."""

    def __init__(self, species_dir: Path, interval: float = 0.05):
        self.species_dir, self.interval = species_dir, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self.samples.append(read_bytes_on_disk(self.species_dir))
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> ReadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(read_bytes_on_disk(self.species_dir))


def one_mode(
    lg: Luigi, work: Path, ds: dict, index: Path, index_s: float, server: FileServer, mode: str, name: str, slots: int
) -> dict:
    root = fresh(work / name)
    out = root / "out"
    write_species_yaml(
        root / "config",
        SPECIES,
        ds["transcriptome"],
        ds["metadata"],
        batch={"size": 2, "prefetch": 1},
        download={
            "parallel": 1,
            "sources": ["ena"],
            "mode": mode,
            "stream_fallback": "fail",
            "mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"},
        },
        quant={"threads": 1, "strandedness": "unstranded"},
        disk={"min_free": 0},
    )
    seed_index(out, SPECIES, index, ds["transcriptome"], index_s)
    server.clear_requests()
    sp = out / SPECIES
    args = ["MultiSpecies", "--config-dir", root / "config", "--output-dir", out, "--local-scheduler"]
    with ReadSampler(sp) as sampler:
        res = lg.check(lg.run(name, args + ["--workers", str(slots + 1)], cwd=root), name)
    gets = [r for r in server.requests if r["method"] == "GET"]
    return {
        "mode": mode,
        "wall_s": res["seconds"],
        "cpu_s": res["cpu_s"],
        "maxrss_mib": res["maxrss_mib"],
        "peak_read_bytes": max(sampler.samples),
        "mean_read_bytes": statistics.mean(sampler.samples),
        "samples": len(sampler.samples),
        "hz": len(sampler.samples) / max(res["seconds"], 1e-9),
        "http_gets": len(gets),
        "http_bytes": sum(r.get("bytes_sent") or 0 for r in gets),
        "abundance": {r: (sp / "quant" / r / "abundance.tsv").read_bytes() for r in ds["runs"]},
        "sources": sorted(
            {json.loads((sp / "quant" / r / "pipeline_run.json").read_text())["source"] for r in ds["runs"]}
        ),
        "log": res["log"],
    }


def report(res: dict) -> str:
    f, s = res["file"], res["stream"]

    def ratio(a, b):
        return f"{b / a:.2f}" if a else ("0" if not b else "inf")

    rows = [
        ("", "file", "stream", "stream / file", "target"),
        ("wall, s", f"{f['wall_s']:.1f}", f"{s['wall_s']:.1f}", ratio(f["wall_s"], s["wall_s"]), "<= 1"),
        ("CPU (user+sys), s", f"{f['cpu_s']:.1f}", f"{s['cpu_s']:.1f}", ratio(f["cpu_s"], s["cpu_s"]), "-"),
        (
            "peak reads on disk, MB",
            f"{f['peak_read_bytes'] / MB:.1f}",
            f"{s['peak_read_bytes'] / MB:.1f}",
            ratio(f["peak_read_bytes"], s["peak_read_bytes"]),
            "stream 0",
        ),
        (
            "mean reads on disk, MB",
            f"{f['mean_read_bytes'] / MB:.1f}",
            f"{s['mean_read_bytes'] / MB:.1f}",
            ratio(f["mean_read_bytes"], s["mean_read_bytes"]),
            "-",
        ),
        ("disk samples (Hz)", f"{f['samples']} ({f['hz']:.0f})", f"{s['samples']} ({s['hz']:.0f})", "", ""),
        (
            "HTTP GETs, MB sent",
            f"{f['http_gets']}, {f['http_bytes'] / MB:.1f}",
            f"{s['http_gets']}, {s['http_bytes'] / MB:.1f}",
            "",
            "",
        ),
        ("peak RSS of a process, MiB", f"{f['maxrss_mib']:.0f}", f"{s['maxrss_mib']:.0f}", "", ""),
        ("source in pipeline_run.json", ",".join(f["sources"]), ",".join(s["sources"]), "", ""),
    ]
    cal = res["calibration"]
    head = (
        f"medians of {res['repeats']} rounds each; [resources] cpu = download = {res['slots']}; {res['runs']} paired runs x {res['reads']} pairs ({cal['mean_run_mb']:.1f} MB a run), link "
        f"{cal['link_bps'] / MB:.2f} MB/s shared, kallisto {cal['per_run_quant_s']:.2f} s a run on local files; "
        f"every run's abundance.tsv identical in all rounds of both modes: {res['identical']}; "
        f"peak reads on disk in any stream round: {max(r['peak_read_bytes'] for r in s['rounds'])} bytes"
    )
    return head + "\n" + fmt_table(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="simulated paired runs (default 8; 4 with --quick)")
    ap.add_argument("--reads", type=int, default=None, help="read pairs per run (default 400000; 50000 --quick)")
    ap.add_argument("--read-len", type=int, default=75)
    ap.add_argument("--transcripts", type=int, default=2000)
    ap.add_argument("--slots", type=int, default=1, help="[resources] cpu and download (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each mode, taking turns (default 3)")
    ap.add_argument("--link-mbps", type=float, default=None, help="the shared link, MB/s (default: calibrated)")
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep OUT/stream_bench.work/")
    args = ap.parse_args(argv)
    runs = args.runs or (4 if args.quick else 8)
    reads = args.reads or (50_000 if args.quick else 400_000)
    out = Path(args.out).resolve()
    data_root = out / "data" / f"stream_{runs}x{reads}x{args.read_len}_{args.transcripts}"
    work = fresh(out / "stream_bench.work")
    t0 = time.perf_counter()
    say(f"dataset: {runs} runs x {reads} pairs")
    ds = make_dataset(data_root, runs, reads, args.read_len, args.transcripts)
    kallisto = "kallisto"
    index = data_root / "transcriptome.idx"
    index_s, _ = build_index(kallisto, ds["transcriptome"], index)
    cal = kallisto_loop(kallisto, index, ds, work / "loop_cal")
    per_run_q = cal["seconds"] / runs
    mean_run = statistics.mean(ds["run_bytes"].values())
    link = args.link_mbps * MB if args.link_mbps else mean_run / per_run_q
    lg = Luigi(work / "luigi.cfg", work / "logs")
    write_bench_cfg(work / "luigi.cfg")
    if args.slots != 1:
        cp = configparser.ConfigParser(interpolation=None)
        cp.read(work / "luigi.cfg")
        cp.set("resources", "cpu", str(args.slots))
        cp.set("resources", "download", str(args.slots))
        with open(work / "luigi.cfg", "w") as fh:
            cp.write(fh)
    res: dict = {
        "runs": runs,
        "reads": reads,
        "repeats": args.repeats,
        "slots": args.slots,
        "calibration": {"per_run_quant_s": per_run_q, "mean_run_mb": mean_run / MB, "link_bps": link},
    }
    rounds: dict[str, list[dict]] = {"file": [], "stream": []}
    with FileServer(ds["archive"], link_bps=link) as server:
        for i in range(args.repeats):
            for mode in ("file", "stream") if i % 2 == 0 else ("stream", "file"):
                say(f"{mode} mode, round {i + 1}")
                rounds[mode].append(one_mode(lg, work, ds, index, index_s, server, mode, f"{mode}{i}", args.slots))
    results = [r.pop("abundance") for rs in rounds.values() for r in rs]
    res["identical"] = all(r == results[0] for r in results)
    for mode, rs in rounds.items():
        res[mode] = {k: statistics.median(r[k] for r in rs) for k in MEDIANS} | {
            "sources": sorted({s for r in rs for s in r["sources"]}),
            "rounds": rs,
        }
    res["seconds"] = time.perf_counter() - t0
    write_json(out / "stream_bench.json", res)
    print(report(res))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
