"""download.mode: stream: reads flow from a real loopback HTTP server through FIFOs into real
kallisto, and never touch the disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import pandas as pd
import pytest
from conftest import need_shared, need_tool
from helpers import ena_row, files_under, md5, run_luigi, wait_for, write_metadata, write_species

from pipeline.fetch.retry import RetryPolicy
from pipeline.fetch.stream import ReaderGone, file_mode_reason
from pipeline.fetch.transfer import DownloadError
from pipeline.inputs.species_config import ConfigError, load_species_config
from pipeline.model import RemoteFile, Run
from pipeline.quant.quantify import build_index
from pipeline.quant.streamed import StreamFailed, _verified, quantify_streamed, writer_threads
from pipeline.runlog import RunLog
from pipeline.testing.fileserver import FileServer

RUN = "SRR0000001"
SPECIES = "Homo_sapiens_HOXC"
PREFIX = f"https://ftp.sra.ebi.ac.uk/vol1/fastq/SRR000/{RUN}"
MATES = ("/HOXC_1.fastq.gz", "/HOXC_2.fastq.gz")
#: kallisto's settings for one run quantified in this process
QUANT = {"threads": 1, "fragment_length": 200, "fragment_sd": 20}


@pytest.fixture(scope="module")
def kallisto_bin():
    return need_tool("kallisto")


@pytest.fixture(scope="module")
def hoxc():
    reads = need_shared("reads")
    return {
        "reads": reads,
        "files": [reads / "HOXC_1.fastq.gz", reads / "HOXC_2.fastq.gz"],
        "transcripts": need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz"),
        "expected": need_shared("expected", "kallisto048_hoxc_pe_abundance.tsv"),
    }


class FolderWatch:
    """Polls a folder every 10 ms and keeps the relative path of every regular file ever seen
    below it (no inotify: a plain walk)."""

    def __init__(self, root: Path):
        self.root, self.seen, self.polls = root, set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(0.01):
            self.polls += 1
            for dirpath, _dirs, names in os.walk(self.root):
                for n in names:
                    p = Path(dirpath) / n
                    try:
                        if p.is_file():
                            self.seen.add(str(p.relative_to(self.root)))
                    except OSError:
                        pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _hoxc_species(tmp_path, hoxc, server, row_edit=None, **download):
    row = ena_row(RUN, hoxc["files"], PREFIX.removeprefix("https://"), 10000)
    if row_edit:
        row_edit(row)
    meta = write_metadata(tmp_path / "cfg" / "hoxc.tsv", [row])
    download = {"mirrors": {PREFIX + "/": server.url + "/"}, "sources": ["ena"], "mode": "stream"} | download
    write_species(tmp_path / "cfg", SPECIES, hoxc["transcripts"], meta, download=download, disk={"min_free": 0},
                  quant={"strandedness": "unstranded"})  # fmt: skip
    return tmp_path / "out", tmp_path / "out" / SPECIES


def _kallisto_pids_under(root: Path) -> list[int]:
    """kallisto processes whose working folder is below ``root`` (any left behind)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "kallisto" and str(root) in os.readlink(d / "cwd"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_hoxc_streamed_gives_kallistos_reference_and_nothing_under_fastq(tmp_path, hoxc, kallisto_bin):
    """The HOXC pairs streamed into kallisto give its own abundance.tsv byte for byte, while no
    file ever appears under fastq/; the same watch does see the files of a file-mode run."""
    # ~2 s a mate, so the 10 ms watch takes a few hundred looks while the reads flow
    with FileServer(hoxc["reads"], throttle_bps=100_000) as server:
        out, sp = _hoxc_species(tmp_path, hoxc, server)
        (sp / "fastq").mkdir(parents=True)
        with FolderWatch(sp / "fastq") as watch:
            r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
        gets = sorted(q["path"] for q in server.requests if q["method"] == "GET")
        assert gets == sorted(MATES)
    assert watch.polls > 50 and watch.seen == set()
    quant = sp / "quant" / RUN
    assert (quant / "abundance.tsv").read_bytes() == hoxc["expected"].read_bytes()
    assert sorted(p.name for p in quant.iterdir() if not p.is_file()) == []  # no FIFO kept
    record = json.loads((quant / "pipeline_run.json").read_text())
    assert record["source"] == "stream" and record["n_processed"] == 10000
    assert [s["md5"] for s in record["streamed"]] == [md5(f) for f in hoxc["files"]]
    qc = pd.read_csv(sp / "merged" / f"{SPECIES}_qc.tsv", sep="\t").to_dict("records")[0]
    assert (qc["source"], qc["layout"], qc["n_processed"]) == ("stream", "PAIRED", 10000)
    download = json.loads((sp / "work" / "markers" / "download_00000.json").read_text())
    assert [r["status"] for r in download["runs"]] == ["stream"]

    # the control: in file mode the same watch sees the reads land in fastq/RUN/
    with FileServer(hoxc["reads"], throttle_bps=200_000) as server:
        out, sp = _hoxc_species(tmp_path / "file", hoxc, server, mode="file")
        (sp / "fastq").mkdir(parents=True)
        with FolderWatch(sp / "fastq") as watch:
            r = run_luigi(tmp_path / "file" / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
    assert watch.seen and all(f.startswith(f"{RUN}/") for f in watch.seen), watch.seen
    assert (sp / "quant" / RUN / "abundance.tsv").read_bytes() == hoxc["expected"].read_bytes()


def test_dropped_connections_mid_stream_resume_into_the_same_stream(tmp_path, hoxc, kallisto_bin):
    """Both mates lose their connection mid-body (one with a reset); each resumes with Range
    and kallisto's result is still the reference, byte for byte."""
    with FileServer(hoxc["reads"]) as server:
        server.set_fault(MATES[0], drop_after=70_000, times=1)
        server.set_fault(MATES[1], drop_after=150_000, reset=True, times=1)
        out, sp = _hoxc_species(tmp_path, hoxc, server)
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
        ranges = sorted((q["path"], q["range"] or "", q["status"]) for q in server.requests if q["method"] == "GET")
    # a reset loses what the kernel still held, so mate 2 resumes from where its bytes stopped
    resumed_at = int(ranges[3][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 150_000
    assert ranges == [
        (MATES[0], "", 200),
        (MATES[0], "bytes=70000-", 206),
        (MATES[1], "", 200),
        (MATES[1], f"bytes={resumed_at}-", 206),
    ]
    assert (sp / "quant" / RUN / "abundance.tsv").read_bytes() == hoxc["expected"].read_bytes()
    log = (sp / "work" / "logs" / f"{RUN}.log").read_text()
    assert "resuming from byte 70000" in log and f"resuming from byte {resumed_at}" in log
    assert files_under(sp / "fastq") == set()


def test_wrong_md5_leaves_no_result_and_the_file_mode_retry_fails_too(tmp_path, hoxc, kallisto_bin):
    """Mate 2's md5 in the metadata is wrong: the streamed result is thrown away, the file-mode
    retry (download.stream_fallback: file) fails its md5 check too, and the run is listed failed."""

    def wrong_md5(row):
        md5s = row["fastq_md5"].split(";")
        row["fastq_md5"] = f"{md5s[0]};{'0' * 32}"

    with FileServer(hoxc["reads"]) as server:
        out, sp = _hoxc_species(tmp_path, hoxc, server, wrong_md5, stream_fallback="file")
        r = run_luigi(tmp_path / "cfg", out)
        gets = [q["path"] for q in server.requests if q["method"] == "GET"]
    assert r.returncode != 0
    assert not (sp / "quant" / RUN).exists()
    assert not [p for p in files_under(sp / "quant") if RUN in p]
    failed = pd.read_csv(sp / "work" / "metadata" / "failed_runs.tsv", sep="\t").to_dict("records")
    assert [f["run"] for f in failed] == [RUN]
    assert "md5 mismatch" in failed[0]["reason"] and "streamed" in failed[0]["reason"]
    log = (sp / "work" / "logs" / f"{RUN}.log").read_text()
    assert "quant (streamed): failed, nothing kept" in log and "download.stream_fallback: file" in log
    # streamed once each, then mate 1 to disk and mate 2 twice (its one retry from scratch)
    assert sorted(gets) == sorted([MATES[0], MATES[1], MATES[0], MATES[1], MATES[1]])
    assert files_under(sp / "fastq") == set()
    assert _kallisto_pids_under(tmp_path) == []


def test_run_without_md5_or_read_count_is_fetched_in_file_mode(tmp_path, hoxc, kallisto_bin):
    def unverifiable(row):
        row["fastq_md5"], row["read_count"] = "", ""

    with FileServer(hoxc["reads"]) as server:
        out, sp = _hoxc_species(tmp_path, hoxc, server, unverifiable)
        r = run_luigi(tmp_path / "cfg", out)
        assert r.returncode == 0, r.stderr[-3000:]
    log = (sp / "work" / "logs" / f"{RUN}.log").read_text()
    assert "not streamed: the metadata has neither an md5 for each file nor a read count" in log
    assert "quant (streamed)" not in log
    record = json.loads((sp / "quant" / RUN / "pipeline_run.json").read_text())
    assert record["source"] == "ena" and "streamed" not in record
    assert (sp / "quant" / RUN / "abundance.tsv").read_bytes() == hoxc["expected"].read_bytes()


# -- one streamed run, in this process: what is left behind ------------------------------------


@pytest.fixture(scope="module")
def hoxc_index(tmp_path_factory, hoxc, kallisto_bin):
    d = tmp_path_factory.mktemp("index")
    build_index(hoxc["transcripts"], d / "hoxc.idx", d / "index.log")
    return d / "hoxc.idx"


def _stream_one(tmp_path, hoxc, server, index, read_count=10000, attempts=3, backoff=0.05):
    files = [
        RemoteFile(url=server.url + m, name=m[1:], md5=md5(f), bytes=f.stat().st_size)
        for m, f in zip(MATES, hoxc["files"])
    ]
    run = Run(run=RUN, read_count=read_count, files=files)
    before = set(threading.enumerate())
    res = quantify_streamed(
        run,
        index,
        tmp_path / "quant",
        **QUANT,
        mirrors={},
        policy=RetryPolicy(attempts=attempts, backoff_base=backoff, stall_seconds=5),
        log=RunLog(tmp_path / "run.log"),
    )
    # only the writers count: the loopback server's own handler threads may still be closing a
    # connection the client dropped
    left = [t.name for t in threading.enumerate() if t not in before and t.name.startswith(writer_threads(RUN))]
    assert left == [], f"a writer thread outlived the call: {left}"
    assert _kallisto_pids_under(tmp_path) == []
    return res


def test_a_200_answer_to_a_resume_is_read_past_what_kallisto_has(tmp_path, hoxc, hoxc_index):
    """Mate 2 drops at byte 120,000; the server then ignores the Range of the resume and sends
    the whole file (200): its first 120,000 bytes are dropped and the rest goes on."""
    with FileServer(hoxc["reads"]) as server:
        server.set_fault(MATES[1], drop_after=120_000, times=1)

        def then_ignore_range():  # once the drop is logged (the retry waits 0.25-0.5 s)
            if wait_for(lambda: any(q["fault"] for q in server.requests), timeout=30):
                server.set_fault(MATES[1], ignore_range=True, times=1)

        flip = threading.Thread(target=then_ignore_range)
        flip.start()
        res = _stream_one(tmp_path, hoxc, server, hoxc_index, backoff=0.5)
        flip.join()
        mate2 = [(q["range"], q["status"]) for q in server.requests if q["path"] == MATES[1]]
    assert res.ok, res.reason
    assert mate2 == [(None, 200), ("bytes=120000-", 200)]
    assert (tmp_path / "quant" / RUN / "abundance.tsv").read_bytes() == hoxc["expected"].read_bytes()


@pytest.mark.parametrize(
    "fault, words",
    [
        ({"status": 404}, "HTTP 404"),
        ({"drop_after": 60_000}, "failed after 3 attempts"),
        # kallisto stops at the bad gzip block (and exits 0): the stream cannot finish
        ({"corrupt": True}, "kallisto quant exited 0 before reading all of its input"),
        ({"corrupt": 210_000}, "md5 mismatch"),  # the gzip trailer's CRC: kallisto reads it all
    ],
)
def test_a_body_that_fails_stops_kallisto_and_leaves_nothing(tmp_path, hoxc, hoxc_index, fault, words):
    """A mate that 404s, keeps dropping or arrives corrupt: no result, no temp folder, no
    kallisto process and no writer thread left (checked in :func:`_stream_one`)."""
    with FileServer(hoxc["reads"]) as server:
        server.set_fault(MATES[1], **fault)
        res = _stream_one(tmp_path, hoxc, server, hoxc_index)
    assert res.status == "failed" and res.stage == "stream" and words in res.reason
    assert list((tmp_path / "quant").iterdir()) == []


@pytest.mark.parametrize("gone_first", [True, False])
def test_a_mates_own_failure_is_named_before_kallisto_exiting_on_its_short_input(gone_first):
    """A mate that 404s closes its FIFO; kallisto exits on the short input and the other writer
    finds it gone. Which of the two writers ends first is up to the scheduler: the 404 is the
    cause either way."""
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    gone, failed = Future(), Future()
    futures = {
        gone: (0, RemoteFile(url="u1", name="a_1.fastq.gz")),
        failed: (1, RemoteFile(url="u2", name="a_2.fastq.gz")),
    }
    order = [(gone, ReaderGone("u1: the reader stopped reading at byte 7973")), (failed, DownloadError("u2: HTTP 404"))]
    stopped = []

    def finish():
        for fut, err in order if gone_first else order[::-1]:
            fut.set_exception(err)
            threading.Event().wait(0.05)

    t = threading.Thread(target=finish)
    t.start()
    with pytest.raises(StreamFailed) as e:
        _verified(futures, proc, stop=lambda: stopped.append(1))
    t.join()
    assert str(e.value) == "u2: HTTP 404"
    assert stopped, "the first failure did not stop kallisto and the writers"


def test_read_count_that_disagrees_throws_the_result_away(tmp_path, hoxc, hoxc_index):
    with FileServer(hoxc["reads"]) as server:
        res = _stream_one(tmp_path, hoxc, server, hoxc_index, read_count=10001)
    assert res.status == "failed" and "processed 10000 reads but the metadata says 10001" in res.reason
    assert list((tmp_path / "quant").iterdir()) == []


# -- which runs stream, and the settings -------------------------------------------------------


def _run(files=2, md5=True, read_count=10, url="https://h/x", base_count=None):
    rfs = [
        RemoteFile(url=f"{url}_{i}.fastq.gz", name=f"x_{i}.fastq.gz", md5="a" * 32 if md5 else None)
        for i in range(files)
    ]
    return Run(run=RUN, files=rfs, read_count=read_count, base_count=base_count)


def test_which_runs_stream():
    assert file_mode_reason(_run(), ["ena", "sra"], {}, None) is None
    assert file_mode_reason(_run(md5=False), ["ena"], {}, None) is None  # the read count vouches
    assert file_mode_reason(_run(read_count=None), ["ena"], {}, None) is None  # the md5s vouch
    assert "neither an md5" in file_mode_reason(_run(md5=False, read_count=None), ["ena"], {}, None)
    assert ".sra" in file_mode_reason(_run(files=0), ["ena", "sra"], {}, None)
    assert ".sra" in file_mode_reason(_run(), ["sra"], {}, None)
    assert "not fetched over HTTP" in file_mode_reason(_run(url="file:///data/x"), ["ena"], {}, None)
    assert "not fetched over HTTP" in file_mode_reason(_run(), ["ena"], {"https://h/": "file:///d/"}, None)
    assert "max_bp" in file_mode_reason(_run(base_count=1000), ["ena"], {}, 100)
    assert file_mode_reason(_run(base_count=100), ["ena"], {}, 100) is None


def test_download_mode_settings(tmp_path):
    meta = write_metadata(tmp_path / "m.tsv", [])
    tx = tmp_path / "t.fa"
    tx.write_text(">a\nACGT\n")
    cfg = load_species_config(write_species(tmp_path, "S", tx, meta))
    assert (cfg.download_mode, cfg.stream_fallback, cfg.streams) == ("file", "file", False)
    cfg = load_species_config(
        write_species(
            tmp_path,
            "S",
            tx,
            meta,
            download={"mode": "stream", "stream_fallback": "fail"},
            quant={"strandedness": "fr"},
        )  # fmt: skip
    )
    assert (cfg.download_mode, cfg.stream_fallback, cfg.streams) == ("stream", "fail", True)
    # a stream feeds kallisto as the reads arrive: no files to sample the strandedness from, no salmon
    for quant in ({}, {"strandedness": "auto"}, {"tool": "salmon", "strandedness": "fr"}):
        with pytest.raises(ConfigError, match=r"key 'download.mode' is stream, which feeds kallisto"):
            load_species_config(write_species(tmp_path, "S", tx, meta, download={"mode": "stream"}, quant=quant))
    with pytest.raises(ConfigError, match=r"key 'download.mode' must be one of file, stream, got 'fifo'"):
        load_species_config(write_species(tmp_path, "S", tx, meta, download={"mode": "fifo"}))
    with pytest.raises(ConfigError, match=r"key 'download.stream_fallback' must be one of file, fail"):
        load_species_config(write_species(tmp_path, "S", tx, meta, download={"stream_fallback": "retry"}))


def test_fileserver_link_bps_shares_one_link_among_responses(tmp_path):
    """The benchmark's throttled link: bookings on the shared link queue behind each other."""
    server = FileServer(tmp_path, link_bps=1000)
    first, second, third = server._link_wait(500), server._link_wait(500), server._link_wait(1000)
    assert first == 0.0 and 0.4 < second <= 0.5 and 0.9 < third <= 1.0
    assert FileServer(tmp_path)._link_wait(10**9) == 0.0  # off unless asked for


def test_in_stream_mode_the_quant_task_also_holds_a_download(tmp_path):
    from pipeline import tasks

    meta = write_metadata(tmp_path / "m.tsv", [])
    tx = tmp_path / "t.fa"
    tx.write_text(">a\nACGT\n")
    for mode, wanted in (("file", {"cpu": 2}), ("stream", {"cpu": 2, "download": 1})):
        cfg = write_species(tmp_path / mode, "S", tx, meta, download={"mode": mode},
                            quant={"threads": 2, "strandedness": "unstranded"})  # fmt: skip
        task = tasks.BatchQuant(config_path=str(cfg), output_dir=str(tmp_path / "out"), batch=0)
        assert task.host_claim() == wanted  # what the machine holds, as Luigi or the worker counts it


def test_single_end_streamed_equals_single_end_from_the_file(tmp_path, hoxc, hoxc_index):
    from pipeline.quant.quantify import quantify_run

    mate = hoxc["files"][0]
    with FileServer(hoxc["reads"]) as server:
        rf = RemoteFile(url=server.url + MATES[0], name=mate.name, md5=md5(mate), bytes=mate.stat().st_size)
        streamed = quantify_streamed(
            Run(run=RUN, read_count=10000, files=[rf]),
            hoxc_index,
            tmp_path / "stream",
            **QUANT,
            mirrors={},
            policy=RetryPolicy(),
            log=RunLog(None),
        )
    from_file = quantify_run(
        RUN,
        [mate],
        hoxc_index,
        tmp_path / "file",
        **QUANT,
        expected_reads=10000,
        verified=True,
        log=RunLog(None),
    )
    assert streamed.ok and from_file.ok and streamed.layout == "SINGLE"
    got, want = (tmp_path / d / RUN / "abundance.tsv" for d in ("stream", "file"))
    assert got.read_bytes() == want.read_bytes()
