"""``rnaseq-batch``: the same behaviour wherever it starts, a short terminal, one line per foreseen
failure, Ctrl-C in one line and a resume. Real kallisto, a real loopback server, real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need_tool
from helpers import ROOT, env_without_config, free_port, loopback_species, sizes_of

from pipeline.testing import simulate
from pipeline.testing.fileserver import FileServer

CLI = str(Path(sys.executable).with_name("rnaseq-batch"))
LUIGI = str(Path(sys.executable).with_name("luigi"))
OK, TASK_FAILED, CONFIG_ERROR, INTERRUPTED = 0, 30, 35, 130


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    need_tool("kallisto")
    root = tmp_path_factory.mktemp("sim")
    ds = simulate.make_species_dataset(
        root, "Clia_testis", [f"DRR00010{i}" for i in range(1, 5)], "PAIRED", reads_per_run=3000, read_len=50,
        n_transcripts=25, seed=11,
    )  # fmt: skip
    return {"archive": root / "archive", "ds": ds}


def _species(cfg_dir: Path, sim, server, **sections) -> Path:
    return loopback_species(cfg_dir, "Clia_testis", sim["ds"], server, **sections)


def _elsewhere(tmp_path: Path) -> Path:
    """A working folder with no luigi.cfg anywhere above it that the pipeline could find."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


def _cli(args, cwd, timeout=300, **env):
    return subprocess.run([CLI, *map(str, args)], cwd=cwd, env=env_without_config(**env), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_every_subcommand_has_help(tmp_path):
    for sub in ("run", "status", "retry", "refresh", "report", "luigid"):
        r = _cli([sub, "--help"], cwd=tmp_path)
        assert r.returncode == 0, (sub, r.stderr)
        assert f"rnaseq-batch {sub}" in r.stdout, (sub, r.stdout)
    r = _cli([], cwd=tmp_path)
    assert r.returncode == 2 and "COMMAND" in r.stderr
    r = _cli(["--help"], cwd=tmp_path)
    assert r.returncode == 0 and all(sub in r.stdout for sub in ("run", "status", "retry", "refresh", "luigid"))


def test_run_from_another_folder_finishes_and_says_what_it_does(tmp_path, sim):
    """No luigi.cfg in reach: the packaged settings give kallisto its cpu, exit codes are set, and
    the terminal holds the pipeline's progress lines (MB, MB/s, time left), not Luigi's debug log."""
    with FileServer(sim["archive"]) as server:
        cfg = _species(tmp_path / "cfg", sim, server, batch={"size": 2}, quant={"threads": 2})
        out = tmp_path / "out"
        r = _cli(["run", "--config-dir", cfg.parent, "--output-dir", out], cwd=_elsewhere(tmp_path))
    assert r.returncode == OK, r.stderr[-3000:]
    merged = out / "Clia_testis" / "merged" / "Clia_testis_est_counts.tsv"
    assert merged.read_text().splitlines()[0].split("\t")[1:] == [f"DRR00010{i}" for i in range(1, 5)]
    lines = (r.stdout + r.stderr).splitlines()
    assert len(lines) <= 10, "\n".join(lines)
    assert not any("DEBUG" in x or "INFO:" in x for x in lines), "\n".join(lines)
    assert any("batch 1/2: downloaded 2/2 run(s)" in x and "MB/s" in x for x in lines), "\n".join(lines)
    assert any("batch 1/2 done" in x or "batch 2/2 done" in x for x in lines)
    assert any("batch 1/2 done" in x and "about " in x and " left" in x for x in lines) or any(
        "batch 2/2 done" in x and "about " in x and " left" in x for x in lines
    ), "\n".join(lines)
    log = (out / "run.log").read_text()
    assert "started: pid" in log and "ended: exit code 0" in log


def test_a_failed_run_exits_30_from_another_folder(tmp_path, sim):
    with FileServer(sim["archive"]) as server:
        server.set_fault("/vol1/fastq/DRR000/DRR000102/DRR000102_2.fastq.gz", corrupt=True)
        cfg = _species(tmp_path / "cfg", sim, server, batch={"size": 2})
        r = _cli(["run", "--config-dir", cfg.parent, "--output-dir", tmp_path / "out"], cwd=_elsewhere(tmp_path))
    assert r.returncode == TASK_FAILED, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "DRR000102" in r.stderr and "md5 mismatch" in r.stderr
    assert f"rnaseq-batch retry {(tmp_path / 'out').resolve()}" in r.stderr


@pytest.mark.parametrize("command", ["rnaseq-batch", "luigi"])
def test_config_errors_exit_35_from_another_folder_with_nothing_after_the_block(tmp_path, sim, command):
    """A bad key, and a quant.threads above [resources] cpu (which Luigi would skip silently)."""
    with FileServer(sim["archive"]) as server:
        cfg = _species(tmp_path / "cfg", sim, server, batch={"sise": 2})
        _species(tmp_path / "cfg2", sim, server, quant={"threads": 3})
    for cfg_dir, named in ((cfg.parent, "'batch.sise'"), (tmp_path / "cfg2", "'quant.threads'")):
        out = tmp_path / f"out-{cfg_dir.name}"
        if command == "luigi":
            argv = [LUIGI, "--module", "pipeline", "MultiSpecies", "--config-dir", str(cfg_dir), "--output-dir",
                    str(out), "--local-scheduler"]  # fmt: skip
        else:
            argv = [CLI, "run", "--config-dir", str(cfg_dir), "--output-dir", str(out)]
        r = subprocess.run(argv, cwd=_elsewhere(tmp_path / cfg_dir.name), env=env_without_config(), capture_output=True, text=True,
                           timeout=120)  # fmt: skip
        assert r.returncode == CONFIG_ERROR, r.stderr[-3000:]
        assert named in r.stderr and "Clia_testis" in r.stderr
        block_end = r.stderr.rindex("=" * 72)
        assert r.stderr[block_end + 72 :].strip() == "", r.stderr[block_end:]
        assert not (out / "Clia_testis").exists()


def test_an_output_folder_that_cannot_be_made_is_a_start_up_error(tmp_path, sim):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with FileServer(sim["archive"]) as server:
        cfg = _species(tmp_path / "cfg", sim, server)
    r = _cli(["run", "--config-dir", cfg.parent, "--output-dir", blocker / "out"], cwd=tmp_path, timeout=60)
    assert r.returncode == CONFIG_ERROR, r.stderr[-2000:]
    assert f"output directory {blocker / 'out'} cannot be used" in r.stderr and "Traceback" not in r.stderr


def test_ena_unreachable_is_one_line_naming_the_host(tmp_path, sim):
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "Clia_query.yaml").write_text(
        "species: Clia_query\n"
        f"reference: {{transcriptome: {sim['ds']['transcriptome']}}}\n"
        "metadata: {query: 'tax_eq(1)'}\n"
    )
    port = free_port()
    override = tmp_path / "luigi.cfg"
    override.write_text(f"[pipeline]\nena_portal_url = http://127.0.0.1:{port}/ena/portal/api\n"
                        "download_attempts = 2\nbackoff_base = 0.05\nbackoff_max = 0.1\n")  # fmt: skip
    r = _cli(["run", "--config-dir", cfg_dir, "--output-dir", tmp_path / "out"], cwd=_elsewhere(tmp_path),
             timeout=120, LUIGI_CONFIG_PATH=str(override))  # fmt: skip
    assert r.returncode == TASK_FAILED, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    named = [x for x in r.stderr.splitlines() if f"127.0.0.1:{port}" in x]
    assert len(named) == 1, r.stderr
    assert "connection refused" in named[0] and "2 attempts" in named[0] and "/search?" not in named[0]


def test_ctrl_c_mid_download_says_one_line_and_the_same_command_resumes(tmp_path, sim):
    with FileServer(sim["archive"], throttle_bps=60_000) as server:  # per connection: a file takes seconds
        cfg = _species(tmp_path / "cfg", sim, server, batch={"size": 4})
        out = tmp_path / "out"
        argv = [CLI, "run", "--config-dir", str(cfg.parent), "--output-dir", str(out), "--workers", "2"]
        p = subprocess.Popen(argv, cwd=tmp_path, env=env_without_config(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)  # fmt: skip
        fastq = out / "Clia_testis" / "fastq"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(n > 20_000 for n in sizes_of(fastq, "*.part")):
            time.sleep(0.1)
        os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole process group
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == INTERRUPTED, stderr[-3000:]
        assert "interrupted (SIGINT); run the same command again to resume" in stderr
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
        partial = sum(sizes_of(fastq, "*.part"))
        assert partial > 0
        first = len(server.requests)
        r = subprocess.run(argv, cwd=tmp_path, env=env_without_config(), capture_output=True, text=True, timeout=300)
        assert r.returncode == OK, r.stderr[-3000:]
        resumed = [q for q in server.requests[first:] if q.get("range")]
        sent = sum(q.get("bytes_sent", 0) for q in server.requests if q["method"] == "GET")
    assert resumed, "the re-run did not resume any file with a Range request"
    total = sum(f.stat().st_size for f in sim["archive"].rglob("*.fastq.gz"))
    assert sent < 1.2 * total, f"{sent} bytes sent for {total} bytes of reads: partial files were not reused"
    log = (out / "run.log").read_text()
    assert "interrupted (SIGINT)" in log and "resuming: the previous run" in log


def test_an_installed_copy_runs_from_outside_the_checkout(tmp_path, sim):
    """``pip install`` into a fresh virtual environment, then ``rnaseq-batch run`` from elsewhere."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "output", ".git", "__pycache__", "*.egg-info",
                                                              "data", "bench"))  # fmt: skip
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    if pip.returncode != 0 and not os.environ.get("CI"):
        pytest.skip(f"pip install failed here (no package index?): {pip.stderr[-500:]}")
    assert pip.returncode == 0, pip.stderr[-2000:]
    shutil.rmtree(src)  # the installed copy must not need the checkout
    with FileServer(sim["archive"]) as server:
        cfg = _species(tmp_path / "cfg", sim, server, quant={"threads": 2})
        r = subprocess.run([str(venv / "bin" / "rnaseq-batch"), "run", "--config-dir", str(cfg.parent),
                            "--output-dir", str(tmp_path / "out")], cwd=_elsewhere(tmp_path), env=env_without_config(),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == OK, r.stderr[-3000:]
    assert (tmp_path / "out" / "Clia_testis" / "merged" / "Clia_testis_tpm.tsv").is_file()


def test_luigid_subcommand_keeps_its_state_under_the_output_folder(tmp_path):
    """`rnaseq-batch luigid OUT` works on a fresh folder: it makes OUT/luigid/ and serves the API."""
    import json
    import urllib.request

    port = free_port()
    out = tmp_path / "fresh" / "out"
    p = subprocess.Popen([CLI, "luigid", str(out), "--port", str(port)], cwd=_elsewhere(tmp_path), env=env_without_config(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        answer = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={{}}", timeout=2) as r:
                    answer = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert answer is not None and "response" in answer, p.stderr.read() if p.poll() is not None else ""
        assert (out / "luigid").is_dir()
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
    assert (out / "luigid" / "state.pickle").is_file()  # written when the scheduler stops
