"""Tests of pipeline.fetch.sra: real .sra files from ../shared/data through the real fasterq-dump (no mocks)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conftest import need_shared, need_tool  # noqa: E402

from pipeline.fetch import sra  # noqa: E402
from pipeline.reads import fastq  # noqa: E402
from pipeline.runlog import RunLog  # noqa: E402

XML_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>\n"
)


def sra_file(name: str) -> Path:
    return need_shared("sra", f"{name}.sra")


def records(path) -> int:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        return sum(1 for _ in fh) // 4


def read_lengths(path) -> list[int]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        lines = fh.read().splitlines()
    return [len(s) for s in lines[1::4]]


# --- pure functions ---------------------------------------------------------------------------


def test_fasterq_dump_args_is_one_local_file_with_absolute_paths():
    args = sra.fasterq_dump_args("/data/SRR1.sra", "/o/out", "/o/tmp", threads=3, exe="/opt/fqd")
    assert args == [
        "/opt/fqd",
        "--split-3",
        "--skip-technical",
        "-O",
        "/o/out",
        "-t",
        "/o/tmp",
        "-e",
        "3",
        "--force",
        "/data/SRR1.sra",
    ]
    assert all(isinstance(a, str) for a in args)


def test_fasterq_dump_args_never_passes_a_bare_accession(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = sra.fasterq_dump_args("SRR1", "out", "tmp")
    # a bare "SRR1" that is not an existing file would be looked up at NCBI: always a path
    assert args[-1] == str(tmp_path / "SRR1")
    assert args[args.index("-O") + 1] == str(tmp_path / "out")
    assert args[args.index("-t") + 1] == str(tmp_path / "tmp")
    assert args[0] == "fasterq-dump" and args[args.index("-e") + 1] == "1"
    assert "prefetch" not in args
    with pytest.raises(ValueError):
        sra.fasterq_dump_args("/x.sra", "/o", "/t", threads=0)


@pytest.mark.parametrize(
    "names, chosen, ignored",
    [
        (["R_1.fastq", "R_2.fastq"], ["R_1.fastq", "R_2.fastq"], []),
        (["R_2.fastq", "R.fastq", "R_1.fastq"], ["R_1.fastq", "R_2.fastq"], ["R.fastq"]),  # stray unpaired
        (["R.fastq"], ["R.fastq"], []),
        (["x.part_1.fastq", "x.part_2.fastq"], ["x.part_1.fastq", "x.part_2.fastq"], []),  # named after the file
        (["R.fastq", "notes.txt"], ["R.fastq"], ["notes.txt"]),
    ],
)
def test_pick_outputs_by_suffix(names, chosen, ignored):
    assert sra.pick_outputs(names) == (chosen, ignored)


@pytest.mark.parametrize(
    "names, reason",
    [
        ([], "no reads"),
        (["notes.txt"], "no reads"),
        (["R_1.fastq"], "without its mate"),
        (["R_2.fastq", "R.fastq"], "without its mate"),
        (["R_1.fastq", "R_2.fastq", "R_3.fastq"], "more than two reads per spot"),
        (["A.fastq", "B.fastq"], "several single-end files"),
    ],
)
def test_pick_outputs_refuses_what_it_cannot_quantify(names, reason):
    with pytest.raises(sra.SraError, match=reason):
        sra.pick_outputs(names)


def test_check_sra_file_says_what_the_file_is(tmp_path):
    assert sra.is_sra_file(sra_file("SRR600096"))
    sra.check_sra_file(sra_file("SRR600096"))
    cases = {
        "xml.sra": (XML_ERROR_BODY, "XML/HTML error body"),
        "html.sra": (b"\n<!DOCTYPE html><html><body>503</body></html>", "XML/HTML error body"),
        "json.sra": (b'{"error": "not found"}', "JSON"),
        "gz.sra": (gzip.compress(b"@r\nACGT\n+\nIIII\n"), "gzip"),
        "fq.sra": (b"@r\nACGT\n+\nIIII\n", "FASTQ"),
        "empty.sra": (b"", "empty file"),
        "bin.sra": (b"\x00\x01NCBI.sra", "not a .sra file"),
    }
    for name, (data, reason) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        assert not sra.is_sra_file(p)
        with pytest.raises(sra.SraError, match=reason) as e:
            sra.check_sra_file(p)
        assert name in str(e.value)
    with pytest.raises(sra.SraError, match="no such file"):
        sra.check_sra_file(tmp_path / "absent.sra")
    assert not sra.is_sra_file(tmp_path / "absent.sra")


def test_parse_stats_and_stderr_tail():
    err = "spots read      : 10,000\nreads read      : 20,000\nreads written   : 19,998\nreads 0-length  : 2\n"
    assert sra.parse_stats(err) == {
        "spots read": 10000,
        "reads read": 20000,
        "reads written": 19998,
        "reads 0-length": 2,
    }
    err = (
        "2026-01-01T00:00:00 fasterq-dump.3.0.3 warn: can't open CM000681.1 as a RefSeq\n"
        "2026-01-01T00:00:00 fasterq-dump.3.0.3 err: a\n2026-01-01T00:00:00 fasterq-dump.3.0.3 err: b\n"
        "fasterq-dump quit with error code 3\n"
    )
    tail = sra.stderr_tail(err)
    assert tail.startswith("fasterq-dump.3.0.3 warn: can't open CM000681.1")  # the cause, timestamp cut
    assert tail.endswith("err: b | fasterq-dump quit with error code 3")
    assert sra.stderr_tail("") == "(no stderr)"


# --- real fasterq-dump ------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_hoxc_paired_sra_quantifies_like_the_fastq_route(tmp_path, monkeypatch, compress):
    exe = need_tool("fasterq-dump")
    need_tool("kallisto")
    src = sra_file("SRRHOXC")
    ref = need_shared("reference", "hoxc_ensembl_transcripts.fasta.gz")
    expected = need_shared("expected", "kallisto048_hoxc_pe_abundance.tsv")
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    dest = tmp_path / "fastq" / "SRRHOXC"
    log = RunLog(tmp_path / "logs" / "SRRHOXC.log")

    paths = sra.sra_to_fastq(src, dest, "SRRHOXC", threads=2, log=log, compress=compress, exe=exe)

    ext = ".fastq.gz" if compress else ".fastq"
    assert [p.name for p in paths] == [f"SRRHOXC_1{ext}", f"SRRHOXC_2{ext}"]
    assert sorted(os.listdir(dest)) == [p.name for p in paths]  # temp folder gone, nothing else
    assert [records(p) for p in paths] == [10000, 10000]
    assert fastq.count_fastq_records(paths[0]) == 10000
    assert os.listdir(home) == [] and os.listdir(cwd) == []  # nothing written to HOME or the cwd
    text = log.path.read_text()
    assert "$ " + exe + " --split-3" in text and "10000 spots read, 20000 reads written" in text

    idx, out = tmp_path / "hoxc.idx", tmp_path / "quant"
    subprocess.run(
        ["kallisto", "index", "-i", str(idx), str(ref)], check=True, capture_output=True, stdin=subprocess.DEVNULL
    )
    subprocess.run(
        ["kallisto", "quant", "-i", str(idx), "-o", str(out), str(paths[0]), str(paths[1])],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    assert (out / "abundance.tsv").read_bytes() == expected.read_bytes()


def test_hoxc_single_end_sra(tmp_path):
    exe = need_tool("fasterq-dump")
    dest = tmp_path / "SRRHOXCSE"
    paths = sra.sra_to_fastq(sra_file("SRRHOXCSE"), dest, "SRRHOXCSE", compress=True, exe=exe)
    assert [p.name for p in paths] == ["SRRHOXCSE.fastq.gz"]
    assert os.listdir(dest) == ["SRRHOXCSE.fastq.gz"]
    assert records(paths[0]) == 10000
    assert set(read_lengths(paths[0])) == {50}


def test_real_illumina_paired_and_454_runs(tmp_path):
    exe = need_tool("fasterq-dump")
    paths = sra.sra_to_fastq(sra_file("SRR600096"), tmp_path / "a", "SRR600096", compress=True, exe=exe)
    assert [p.name for p in paths] == ["SRR600096_1.fastq.gz", "SRR600096_2.fastq.gz"]
    assert [records(p) for p in paths] == [16, 16]
    # 454: one spot of four reads; --skip-technical keeps the one biological read -> single-end
    for run, length in (("SRR045450", 54), ("SRR053325", 258)):
        paths = sra.sra_to_fastq(sra_file(run), tmp_path / run, run, compress=False, exe=exe)
        assert [p.name for p in paths] == [f"{run}.fastq"]
        assert read_lengths(paths[0]) == [length]


def test_csra_needing_remote_references_is_a_clean_error(tmp_path):
    exe = need_tool("fasterq-dump")
    dest = tmp_path / "SRR2096940"
    log = RunLog(tmp_path / "logs" / "SRR2096940.log")
    with pytest.raises(sra.SraError) as e:
        sra.sra_to_fastq(sra_file("SRR2096940"), dest, "SRR2096940", log=log, exe=exe)
    msg = str(e.value)
    assert msg.startswith("SRR2096940: fasterq-dump exited 3 on ") and "SRR2096940.sra" in msg
    assert "CM000681.1" in msg and "quit with error code 3" in msg  # cause and end of stderr
    assert os.listdir(dest) == []  # no temp folder, no partial FASTQ
    assert "exited 3" in log.path.read_text()


def test_xml_error_body_is_refused_before_fasterq_dump_runs(tmp_path):
    bad = tmp_path / "x.sra"
    bad.write_bytes(XML_ERROR_BODY)
    dest = tmp_path / "out"
    log = RunLog(tmp_path / "x.log")
    # a missing executable would fail differently: the file is refused before anything is run
    with pytest.raises(sra.SraError, match=r"^SRR1: .*x\.sra: starts with an XML/HTML error body"):
        sra.sra_to_fastq(bad, dest, "SRR1", log=log, exe=str(tmp_path / "no-such-fasterq-dump"))
    assert not dest.exists()
    assert "$ " not in log.path.read_text()


def test_missing_executable_and_stale_temp_folder(tmp_path):
    src = sra_file("SRR600096")
    dest = tmp_path / "SRR600096"
    with pytest.raises(sra.SraError, match="not found"):
        sra.sra_to_fastq(src, dest, "SRR600096", exe=str(tmp_path / "no-such-fasterq-dump"))
    assert os.listdir(dest) == []
    exe = need_tool("fasterq-dump")
    stale = dest / ".SRR600096.fqd.tmp" / "out"
    stale.mkdir(parents=True)
    (stale / "SRR600096.fastq").write_text("@old\nA\n+\nI\n")  # left by a killed earlier attempt
    paths = sra.sra_to_fastq(src, dest, "SRR600096", compress=False, exe=exe)
    assert sorted(os.listdir(dest)) == ["SRR600096_1.fastq", "SRR600096_2.fastq"]
    assert [records(p) for p in paths] == [16, 16]
    with pytest.raises(sra.SraError, match="invalid run name"):
        sra.sra_to_fastq(src, dest, "../x", exe=exe)


def test_fasterq_dump_version_command_and_its_answer():
    assert sra.version_args("/opt/fqd") == ["/opt/fqd", "--version"]
    assert sra.parse_version("\nfasterq-dump : 3.0.3 ( 3.0.2 )\n\n") == "3.0.3"
    assert sra.parse_version("usage: ...") is None
