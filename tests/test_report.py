"""The HTML report (pipeline.report): built from a real pipeline output, mid-run, at 1,000 runs, and
loaded in a real headless chromium."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_tool
from helpers import run_luigi, tree_snapshot, write_species

from pipeline.paths import SpeciesPaths
from pipeline.report import write_report
from pipeline.report.expr import expression
from pipeline.report.page import SECTIONS
from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

SPECIES = "Simulata_report"
RUNS = [f"DRR00010{i}" for i in range(1, 6)]
BAD = "DRR000102"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# -- reading the page back -------------------------------------------------------------------------


def report_data(html_text: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html_text, re.S)
    assert m, "no report-data block"
    return json.loads(m.group(1).replace("<\\/", "</"))


class _Tables(HTMLParser):
    """The cells of every <table> with an id, and the data-section of every section."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.sections: list[str] = []
        self._table = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("data-section"):
            self.sections.append(a["data-section"])
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_tables(html_text: str) -> _Tables:
    p = _Tables()
    p.feed(html_text)
    return p


# -- a real pipeline output ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_out(tmp_path_factory):
    """5 paired simulated runs in batches of 2, DRR000102 served corrupt from its only source (ena)."""
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("report")
    ds = simulate.make_species_dataset(
        root / "sim", SPECIES, RUNS, "PAIRED", reads_per_run=3000, read_len=50, n_transcripts=25, seed=11
    )
    with FileServer(root / "sim" / "archive") as server:
        server.set_fault(f"/vol1/fastq/DRR000/{BAD}/{BAD}_2.fastq.gz", corrupt=True)
        write_species(
            root / "cfg",
            SPECIES,
            ds["transcriptome"],
            ds["metadata"],
            batch={"size": 2, "max_bytes": "10M"},
            download={"sources": ["ena"], "mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
        )
        r = run_luigi(root / "cfg", root / "out")
    assert r.returncode != 0, "the corrupt run should fail the species"
    assert (root / "out" / SPECIES / "work" / "metadata" / "summary.json").is_file(), r.stderr[-3000:]
    return root / "out"


def test_report_holds_every_section_with_the_qc_tables_values(real_out):
    # the pipeline wrote the report when the species finished; building it again changes nothing else
    assert (real_out / "report.html").is_file()
    before = {k: v for k, v in tree_snapshot(real_out).items() if k != "report.html"}
    path = write_report(real_out)
    assert path == real_out / "report.html"
    after = tree_snapshot(real_out)
    assert {k: v for k, v in after.items() if k != "report.html"} == before, "the report changed a result"
    assert not [p for p in os.listdir(real_out) if p.endswith(".tmp")]
    text = path.read_text()
    assert "<script src=" not in text and "<link " not in text, "an external resource"
    tables = parse_tables(text)
    assert tables.sections == list(SECTIONS)

    sp = SpeciesPaths(real_out, SPECIES)
    data = report_data(text)
    (species,) = data["species"]
    qc = pd.read_csv(sp.merged / f"{SPECIES}_qc.tsv", sep="\t", keep_default_na=False)
    summary = json.loads(sp.summary.read_text())
    failed = pd.read_csv(sp.failed_runs, sep="\t")

    # overview = summary.json
    o = species["overview"]
    assert (o["runs"], o["quantified"], o["failed"], o["to_go"]) == (
        summary["runs"],
        summary["quantified"],
        summary["failed"],
        0,
    )
    assert o["tool_versions"] == summary["tool_versions"]
    assert o["retry_command"] == f"rnaseq-batch retry {real_out.resolve()}"
    assert o["bytes_downloaded"] == sum(
        json.loads(p.read_text())["bytes"] for p in sp.batch_markers("download").values()
    )
    assert o["wall_s"] > 0 and o["state"] == "finished with failures"

    # per-run QC: every row of the QC table, value for value, in the data block and in the HTML table
    by_run = {r["run"]: r for r in species["runs"]}
    assert [r["run"] for r in species["runs"]] == RUNS
    assert sorted(qc["run"]) == sorted(r for r in RUNS if r != BAD)
    html_rows = {row[0]: row for row in tables.tables[f"qc-{SPECIES}"][1:]}
    header = tables.tables[f"qc-{SPECIES}"][0]
    for row in qc.to_dict("records"):
        got = by_run[row["run"]]
        assert got["status"] == "ok"
        for k in ("n_processed", "n_pseudoaligned"):
            assert got[k] == row[k]
        assert got["p_pseudoaligned"] == pytest.approx(row["p_pseudoaligned"])
        for k in ("layout", "source", "capped"):
            assert got[k] == str(row[k])
        cells = dict(zip(header, html_rows[row["run"]]))
        assert cells["reads processed"].replace(",", "") == str(row["n_processed"])
        assert float(cells["% pseudoaligned"]) == pytest.approx(row["p_pseudoaligned"], abs=0.005)
        assert (
            cells["source"] == row["source"] and cells["layout"] == row["layout"] and cells["capped"] == row["capped"]
        )
    assert by_run[BAD]["status"] == "failed" and html_rows[BAD][2] == "failed"

    # failures = failed_runs.tsv, with the run's log
    assert [(f["run"], f["batch"], f["stage"], f["reason"]) for f in species["failures"]] == list(
        failed.itertuples(index=False, name=None)
    )
    assert species["failures"][0]["log"] == str(sp.run_log(BAD)) and species["failures"][0]["log_exists"]
    assert "md5 mismatch" in species["failures"][0]["reason"]

    # expression: the TPM table's runs; PCA over them
    e = species["expression"]
    tpm = pd.read_csv(sp.merged / f"{SPECIES}_tpm.tsv", sep="\t")
    assert e["available"] and e["runs"] == list(tpm.columns[1:])
    assert len(e["pcs"]) == 2 and len(e["pcs"][0]) == len(e["runs"])

    # timeline: a bar per marker; shares within [0, 1]
    t = species["timeline"]
    stages = {(b["stage"], b["batch"]) for b in t["bars"]}
    assert {("download", 0), ("quant", 1), ("cleanup", 2), ("index", None)} <= stages
    assert 0 < t["quant_share"] <= 1 and 0 < t["download_share"] <= 1

    # disk: the budget from the split marker (or the YAML's batch.max_bytes), min_free from the YAML
    d = species["disk"]
    assert d["budget_bytes"] == (d["prefetch"] + 1) * 10 * 1024**2
    assert d["min_free"] == 1024**3 and d["source"] == "markers" and d["samples"]

    # throughput: per-run rates from the markers
    ok = [r for r in species["runs"] if r["status"] == "ok"]
    assert all(r["download_mb_s"] > 0 and r["reads_per_s"] > 0 for r in ok)


def test_report_mid_run_shows_the_batches_done_so_far(real_out, tmp_path):
    """A copy of the output as it stood after batch 0 was cleaned and batch 1 downloaded."""
    out = tmp_path / "out"
    shutil.copytree(real_out, out, symlinks=True)
    sp = SpeciesPaths(out, SPECIES)
    for p in (sp.marker("species"), sp.summary, sp.failed_runs, out / "report.html"):
        p.unlink(missing_ok=True)
    shutil.rmtree(sp.merged)
    for stage, b in (("quant", 1), ("cleanup", 1), ("download", 2), ("quant", 2), ("cleanup", 2)):
        sp.batch_marker(stage, b).unlink()
    for run in ("DRR000103", "DRR000104", "DRR000105"):
        shutil.rmtree(sp.run_quant(run))
    text = write_report(out).read_text()
    (species,) = report_data(text)["species"]
    o = species["overview"]
    assert (o["runs"], o["quantified"], o["failed"], o["to_go"]) == (5, 1, 1, 3)
    assert (o["batches_done"], o["batches_downloaded"], o["batches_quantified"]) == (1, 2, 1)
    assert not o["summary"] and o["state"] == "stopped"
    assert {(b["stage"], b["batch"]) for b in species["timeline"]["bars"] if b["batch"] is not None} == {
        ("download", 0),
        ("quant", 0),
        ("cleanup", 0),
        ("download", 1),
    }
    status = {r["run"]: r["status"] for r in species["runs"]}
    assert status == {
        "DRR000101": "ok",
        BAD: "failed",
        "DRR000103": "pending",
        "DRR000104": "pending",
        "DRR000105": "pending",
    }
    assert not species["expression"]["available"]
    assert parse_tables(text).sections == list(SECTIONS)


# -- a real browser --------------------------------------------------------------------------------


def chromium_or_skip() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is missing under CI: `apt-get install -y chromium` (make test-browser-deps)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def load_in_chromium(page: Path, workdir: Path) -> tuple[str, str, Path]:
    """``(dumped DOM, chromium's log, screenshot)`` of ``page`` in a fresh headless profile."""
    exe = chromium_or_skip()
    shot = workdir / "shot.png"
    profile = workdir / "profile"
    r = subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing the page asks for could leave the machine
            "--enable-logging=stderr",
            "--v=1",  # logs every console message (CONSOLE) and every URL request (NotifyBeforeURLRequest)
            "--virtual-time-budget=15000",
            "--window-size=1280,3000",
            f"--screenshot={shot}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, r.stderr, shot


def page_problems(dom: str, log: str, page: Path) -> list[str]:
    """What is wrong with a loaded page: errors the page's hook wrote into the DOM, console messages of
    the page in chromium's log, requests for any URL but the page itself, a page that did not render."""
    problems = []
    m = re.search(r'<pre id="report-errors">(.*?)</pre>', dom, re.S)
    if m is None:
        problems.append("no report-errors element: the page did not load")
    elif m.group(1).strip():
        problems.append("page errors: " + m.group(1).strip())
    if 'data-report-status="rendered"' not in dom:
        problems.append("the render script did not finish")
    if 'data-resources="0"' not in dom:
        problems.append("the page fetched resources (resource timing)")
    uri = page.resolve().as_uri()
    for line in log.splitlines():
        if ":CONSOLE" in line and uri in line:
            problems.append("console: " + line.split("]", 1)[-1].strip())
        # chromium's own services (update checks, account probes) also log their requests here
        if "NotifyBeforeURLRequest:" in line:
            url = line.split("NotifyBeforeURLRequest:", 1)[1].strip()
            host = re.sub(r"^[a-z]+://([^/:]+).*", r"\1", url)
            if not re.search(r"(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)$", host) and url != uri:
                problems.append(f"request for {url}")
    return problems


def png_colours(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 24)
    return len(colours or [])


def test_page_loads_in_headless_chromium(real_out, tmp_path):
    page = write_report(real_out)
    dom, log, shot = load_in_chromium(page, tmp_path)
    assert page_problems(dom, log, page) == []
    assert dom.count('class="main-svg"') >= 8, "the plots were not drawn"
    assert shot.is_file() and png_colours(shot) > 1, "blank screenshot"


def test_browser_check_catches_errors_and_fetches(tmp_path):
    """The check above is not blind: a page with a script error, a console.error and an external
    image (blocked by the report's CSP) fails it."""
    from pipeline.report.page import CSP, HOOK_JS

    page = tmp_path / "bad.html"
    page.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<script>{HOOK_JS}</script></head><body><pre id="report-errors"></pre>'
        '<img src="http://example.invalid/x.png"><script>console.error("boom"); noSuchFunction();</script>'
        "</body></html>"
    )
    dom, log, _ = load_in_chromium(page, tmp_path)
    problems = "\n".join(page_problems(dom, log, page))
    assert "noSuchFunction" in problems and "boom" in problems and "blocked by CSP" in problems


# -- expression edge cases -------------------------------------------------------------------------


def _tpm(path: Path, runs: list[str], rows: list[list[float]]) -> Path:
    lines = ["\t".join(["target_id", *runs])] + ["\t".join([f"t{i}", *map(str, row)]) for i, row in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_expression_one_two_runs_and_constant_rows(tmp_path):
    one = expression(_tpm(tmp_path / "a.tsv", ["R1"], [[1.0], [5.0], [0.0]]))
    assert one["available"] and one["pcs"] == [] and "one run" in one["note"]
    assert one["corr"] in ([[None]], [[1.0]])
    two = expression(_tpm(tmp_path / "b.tsv", ["R1", "R2"], [[1.0, 2.0], [5.0, 9.0], [3.0, 3.0], [0.0, 0.0]]))
    assert two["n_transcripts"] == 2 and len(two["pcs"]) == 1 and two["corr"][0][1] == pytest.approx(1.0)
    const = expression(_tpm(tmp_path / "c.tsv", ["R1", "R2", "R3"], [[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    assert const["n_transcripts"] == 0 and "nothing to correlate" in const["note"]
    assert all(v is None for row in const["corr"] for v in row)
    flat = expression(_tpm(tmp_path / "d.tsv", ["R1", "R2", "R3"], [[1.0, 1.0, 3.0], [1.0, 2.0, 4.0]]))
    assert flat["corr"][0][0] is None and flat["corr"][1][2] == pytest.approx(1.0)  # R1 is flat once logged
    assert expression(tmp_path / "missing.tsv")["available"] is False


# -- 1,000 runs ------------------------------------------------------------------------------------


def fabricate(output_dir: Path, species: str, n_runs: int, batch_size: int = 4, n_transcripts: int = 2000) -> dict:
    """A finished species of ``n_runs`` runs as the pipeline leaves it: plan, markers, merged tables,
    summary and disk samples, with run 7's mapping rate low and run 11's read count off."""
    rng = random.Random(1)
    sp = SpeciesPaths(output_dir, species)
    for d in (sp.markers, sp.metadata / "batches", sp.merged, sp.logs):
        d.mkdir(parents=True, exist_ok=True)
    runs = [f"SRR{9000000 + i}" for i in range(n_runs)]
    batches = [runs[i : i + batch_size] for i in range(0, n_runs, batch_size)]
    t = 1_700_000_000.0
    w = lambda p, obj: p.write_text(json.dumps(obj))  # noqa: E731
    w(
        sp.marker("split"),
        {
            "batches": len(batches),
            "runs": n_runs,
            "prefetch": 1,
            "max_bytes": 4 * 10**9,
            "skipped": 0,
            "started_at": t,
            "finished_at": t + 1,
        },
    )
    w(sp.marker("index"), {"started_at": t + 1, "finished_at": t + 30, "kallisto_version": "0.48.0"})
    meta, qc, disk = (
        ["run\tlayout\tread_count"],
        ["run\tlayout\tn_processed\tn_pseudoaligned\tp_pseudoaligned\tsource\tcapped"],
        [],
    )
    t = t + 30
    failed = []
    for b, names in enumerate(batches):
        w(sp.batch_file(b), {"batch": b, "runs": [{"run": r, "layout": "PAIRED", "read_count": 10**6} for r in names]})
        dl, q = [], []
        for r in names:
            i = runs.index(r) if n_runs < 50 else int(r[3:]) - 9000000
            src = "ena" if i % 5 else "sra"
            nbytes = rng.randint(50, 150) * 10**6
            ok = i != 13
            dl.append(
                {
                    "run": r,
                    "status": "ok" if ok else "failed",
                    "bytes": nbytes if ok else 0,
                    "seconds": nbytes / 2e7,
                    "source": src if ok else "",
                    "reason": "" if ok else "md5 mismatch",
                }
            )
            meta.append(f"{r}\tPAIRED\t{10**6}")
            if not ok:
                q.append({"run": r, "status": "failed", "stage": "download", "reason": "md5 mismatch"})
                failed.append(r)
                continue
            n = 10**6 if i != 11 else 4 * 10**5
            p = 5.0 if i == 7 else rng.uniform(70, 90)
            q.append(
                {
                    "run": r,
                    "status": "ok",
                    "n_processed": n,
                    "n_pseudoaligned": int(n * p / 100),
                    "p_pseudoaligned": round(p, 1),
                    "seconds": n / 5e5,
                    "layout": "PAIRED",
                }
            )
            qc.append(f"{r}\tPAIRED\t{n}\t{int(n * p / 100)}\t{round(p, 1)}\t{src}\tno")
        total = sum(x["bytes"] for x in dl)
        w(
            sp.batch_marker("download", b),
            {
                "batch": b,
                "bytes": total,
                "runs": dl,
                "started_at": t,
                "finished_at": t + 20,
                "free_at_start": 500 * 10**9 - b * 10**7,
            },
        )
        w(sp.batch_marker("quant", b), {"batch": b, "runs": q, "started_at": t + 20, "finished_at": t + 28})
        w(
            sp.batch_marker("cleanup", b),
            {"batch": b, "bytes_freed": total, "started_at": t + 28, "finished_at": t + 28.5},
        )
        disk += [f"{t + k}\t{species}\t{total * min(k, 20) // 20}\t{400 * 10**9}" for k in range(0, 30, 3)]
        t += 22 + (5 if b % 50 == 49 else 0)
    (sp.metadata / "runs.tsv").write_text("\n".join(meta) + "\n")
    (sp.merged / f"{species}_qc.tsv").write_text("\n".join(qc) + "\n")
    ok_runs = [r for r in runs if r not in failed]
    base = [rng.lognormvariate(2, 2) for _ in range(n_transcripts)]
    with open(sp.merged / f"{species}_tpm.tsv", "w") as fh:
        fh.write("\t".join(["target_id", *ok_runs]) + "\n")
        for k, v in enumerate(base):
            fh.write(f"tx{k}\t" + "\t".join(f"{v * rng.uniform(0.5, 2):.3f}" for _ in ok_runs) + "\n")
    w(
        sp.summary,
        {"runs": n_runs, "quantified": len(ok_runs), "failed": len(failed), "tool_versions": {"kallisto": "0.48.0"}},
    )
    w(sp.marker("species"), {"finished_at": t + 60})
    folder = output_dir / ".rnaseq-batch"
    folder.mkdir(exist_ok=True)
    (folder / "disk.tsv").write_text("time\tspecies\tfastq_bytes\tfree_bytes\n" + "\n".join(disk) + "\n")
    return {"runs": runs, "failed": failed}


def test_outliers_and_disk_samples(tmp_path):
    fabricate(tmp_path, "Fabricata", 40)
    (species,) = report_data(write_report(tmp_path).read_text())["species"]
    flagged = {r["run"] for r in species["runs"] if r["outlier"]}
    assert flagged == {"SRR9000007", "SRR9000011"}
    assert species["disk"]["source"] == "disk.tsv" and species["disk"]["budget_bytes"] == 8 * 10**9
    assert [f["run"] for f in species["failures"]] == ["SRR9000013"]


def test_report_at_1000_runs_is_small_and_quick(tmp_path):
    fabricate(tmp_path, "Fabricata", 1000, n_transcripts=5000)
    t0 = time.perf_counter()
    path = write_report(tmp_path)
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    print(f"\n1,000 runs: report.html {size / 1e6:.2f} MB in {seconds:.2f} s")
    assert size < 12e6 and seconds < 20
    (species,) = report_data(path.read_text())["species"]
    assert len(species["runs"]) == 1000 and species["overview"]["quantified"] == 999
