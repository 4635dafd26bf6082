"""Tests for pipeline.inputs.metadata: every metadata format, mate picking, selection and reports."""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.inputs.metadata import (
    ODP_URL,
    detect_format,
    load_runs,
    normalise_url,
    pick_mates,
    read_table,
    write_runs_tsv,
    write_skipped_tsv,
)
from pipeline.model import PAIRED, SINGLE, InputError, Run
from pipeline.testing.simulate import METADATA_COLUMNS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ENA_ROW = "ena_filereport_SRR9320616_fetchngs_usage.tsv"
ENA_1000 = "ena_read_run_1000_from_pysradb.csv"
ENA_EDGE = "ena_read_run_edgecases_from_pysradb.tsv"
AMALGKIT = "amalgkit_metadata_yeast_14runs.tsv"
RUNINFO = "sra_runinfo_SRX079566_research_parasite_README.csv"


def shared(name: str) -> Path:
    p = SHARED / "metadata" / name
    if not p.is_file():
        pytest.skip(f"../shared/data is absent: {p} not found")
    return p


def write(tmp_path: Path, name: str, rows: list[list[str]], sep: str = "\t") -> Path:
    p = tmp_path / name
    p.write_text("".join(sep.join(r) + "\n" for r in rows))
    return p


ENA_HEADER = [c for c in METADATA_COLUMNS if c != "scientific_name"]


def ena_table(tmp_path, rows, name="ena.tsv", sep="\t", header=ENA_HEADER):
    return write(tmp_path, name, [header] + rows, sep)


def ena_row(run, layout="SINGLE", strategy="RNA-Seq", source="TRANSCRIPTOMIC", ftp=None, md5=None, size=None):
    ftp = ftp if ftp is not None else f"ftp.sra.ebi.ac.uk/vol1/fastq/{run[:6]}/{run}/{run}.fastq.gz"
    md5 = md5 if md5 is not None else "0" * 32
    size = size if size is not None else "100"
    return [run, layout, strategy, source, "10", "1000", ftp, md5, size]


# --------------------------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------------------------


def test_fetchngs_row_paired_layout_single_fastq():
    runs, skipped = load_runs(shared(ENA_ROW))
    assert skipped == []
    (r,) = runs
    assert r.run == "SRR9320616"
    assert r.layout == PAIRED  # what the metadata says; the pipeline decides from the files
    assert r.read_count == 120996825 and r.base_count == 11857688850
    (f,) = r.files
    assert f.url == "https://ftp.sra.ebi.ac.uk/vol1/fastq/SRR932/006/SRR9320616/SRR9320616.fastq.gz"
    assert f.name == "SRR9320616.fastq.gz"
    assert f.md5 == "98c939bbae1a1fcf9624905516485b67" and f.bytes == 7763114613
    # no sra_ftp column in this report: only the AWS Open Data candidate
    assert r.sra_urls == [ODP_URL.format(run="SRR9320616")]
    assert r.sra_md5 is None and r.sra_bytes is None


def test_every_one_of_1000_ena_rows_accounted_for():
    path = shared(ENA_1000)
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    accessions = [row["run_accession"] for row in table]
    assert len(accessions) == 1000 and len(set(accessions)) == 1000

    runs, skipped = load_runs(path)
    accounted = [r.run for r in runs] + [acc for acc, _ in skipped]
    assert sorted(accounted) == sorted(accessions)
    assert all(reason for _, reason in skipped)
    # with no selection nothing is skipped (no row lacks what a Run needs), in file order
    assert skipped == [] and [r.run for r in runs] == accessions

    no_fastq = [r for r in runs if not r.files]
    assert len(no_fastq) == 105
    for r in no_fastq:  # still usable through the .sra route
        assert r.sra_urls and r.sra_urls[-1] == ODP_URL.format(run=r.run)
    by_run = {r.run: r for r in runs}
    for row in table:
        r = by_run[row["run_accession"]]
        assert r.layout == row["library_layout"]
        if row["fastq_ftp"] == "<NA>":
            assert r.read_count is None and r.files == [] and r.sra_md5 is None
            assert r.sra_urls == [ODP_URL.format(run=r.run)]
            continue
        assert r.read_count == int(row["read_count"]) and r.base_count == int(row["base_count"])
        assert r.sra_urls == ["https://" + row["sra_ftp"], ODP_URL.format(run=r.run)]
        assert r.sra_md5 == row["sra_md5"] and r.sra_bytes == int(row["sra_bytes"])
        for f in r.files:
            assert f.url.startswith("https://ftp.sra.ebi.ac.uk/")
            assert f.name == f.url.rsplit("/", 1)[1] and f.name.startswith(r.run)
            assert len(f.md5) == 32 and f.bytes > 0
        assert r.fastq_bytes == sum(int(b) for b in row["fastq_bytes"].split(";"))
    paired = [r for r in runs if r.layout == PAIRED]
    assert len(paired) == 17
    assert sum(len(r.files) == 2 for r in paired) == 11
    assert sum(len(r.files) == 1 for r in paired) == 6
    for r in paired:
        if len(r.files) == 2:
            assert r.files[0].name == f"{r.run}_1.fastq.gz"
            assert r.files[1].name == f"{r.run}_2.fastq.gz"
    assert all(len(r.files) <= 1 for r in runs if r.layout == SINGLE)


def test_ena_1000_selection_by_strategy_names_the_key():
    runs, skipped = load_runs(shared(ENA_1000), {"library_strategy": ["rna-seq", "ssRNA-seq"]})
    assert len(runs) == 263 + 135
    assert len(runs) + len(skipped) == 1000
    assert all("library_strategy" in reason for _, reason in skipped)


def test_ena_edge_cases():
    runs, skipped = load_runs(shared(ENA_EDGE))
    assert skipped == []
    by_run = {r.run: r for r in runs}
    assert len(by_run) == 9
    # PAIRED with a single FASTQ -> single-file run, layout from metadata kept
    for acc in ("SRR6286686", "SRR6286687"):
        r = by_run[acc]
        assert r.layout == PAIRED
        assert [f.name for f in r.files] == [f"{acc}.fastq.gz"]
    r = by_run["SRR2047225"]
    assert [f.name for f in r.files] == ["SRR2047225_1.fastq.gz", "SRR2047225_2.fastq.gz"]
    assert [f.md5 for f in r.files] == ["d675a5ff56f35ae12c314d373fdb5e28", "e299e5e14018e5dd9bfff177ff29b3c5"]
    assert [f.bytes for f in r.files] == [2717968568, 2752431632]
    assert r.sra_urls[0] == "https://ftp.sra.ebi.ac.uk/vol1/srr/SRR204/005/SRR2047225"
    assert r.sra_md5 == "c87460c1d55a7f5acb6c9c4450a824a5" and r.sra_bytes == 5187457819
    # no fastq_ftp (only submitted_ftp): a run with no files, not skipped
    for acc in ("ERR2812329", "ERR2812330"):
        r = by_run[acc]
        assert r.files == [] and r.read_count is None and r.base_count is None
        assert r.sra_urls == [ODP_URL.format(run=acc)]


def test_amalgkit_real_file_is_sampled_filter():
    runs, skipped = load_runs(shared(AMALGKIT))
    # 14 rows: 8 with is_sampled=yes (exclusion=no on all), 6 with is_sampled=no
    assert len(runs) == 8 and len(skipped) == 6
    assert all(reason == "is_sampled=no" for _, reason in skipped)
    assert "SRR32425657" in dict(skipped) and "ERR2653627" in dict(skipped)
    r = {r.run: r for r in runs}["SRR32425658"]
    assert r.layout == PAIRED and r.files == []
    assert r.read_count == 21190203 and r.base_count == 6357060900
    # AWS_Link (which is the odp URL) then NCBI_Link; odp not repeated
    assert r.sra_urls == [
        ODP_URL.format(run="SRR32425658"),
        "https://sra-downloadb.be-md.ncbi.nlm.nih.gov/sos1/sra-pub-zq-38/SRR032/32425/SRR32425658/SRR32425658.lite.1",
    ]


def test_runinfo_real_file_uses_download_path():
    runs, skipped = load_runs(shared(RUNINFO))
    assert skipped == []
    assert [r.run for r in runs] == ["SRR292241", "SRR390728"]
    a, b = runs
    assert a.layout == PAIRED and a.read_count == 9721384 and a.base_count == 699939648
    assert a.files == []
    assert a.sra_urls == [
        "https://sra-downloadb.be-md.ncbi.nlm.nih.gov/sos5/sra-pub-run-32/SRR000/292/SRR292241/SRR292241.3",
        ODP_URL.format(run="SRR292241"),
    ]
    assert b.sra_urls[0].endswith("/SRR390728/SRR390728.lite.2")
    assert b.sra_urls[1] == ODP_URL.format(run="SRR390728")


def test_detect_format_on_real_headers():
    expected = {ENA_ROW: "ena", ENA_1000: "ena", ENA_EDGE: "ena", AMALGKIT: "amalgkit", RUNINFO: "runinfo"}
    for name, fmt in expected.items():
        p = shared(name)
        sep = "," if name.endswith(".csv") else "\t"
        with open(p, newline="") as fh:
            header = next(csv.reader(fh, delimiter=sep))
        assert detect_format(header) == fmt


# --------------------------------------------------------------------------------------------
# URL and mate helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        (
            "ftp.sra.ebi.ac.uk/vol1/fastq/SRR1/SRR1_1.fastq.gz",
            "https://ftp.sra.ebi.ac.uk/vol1/fastq/SRR1/SRR1_1.fastq.gz",
        ),
        ("  ftp.sra.ebi.ac.uk/vol1/x  ", "https://ftp.sra.ebi.ac.uk/vol1/x"),
        ("ftp://ftp.sra.ebi.ac.uk/vol1/x", "https://ftp.sra.ebi.ac.uk/vol1/x"),
        ("ftp://ftp.example.org/x.fastq.gz", "ftp://ftp.example.org/x.fastq.gz"),
        ("http://example.org/x", "http://example.org/x"),
        ("https://example.org/x", "https://example.org/x"),
        ("file:///data/x.fastq.gz", "file:///data/x.fastq.gz"),
        ("/data/x.fastq.gz", "file:///data/x.fastq.gz"),
        ("s3://sra-pub-run-odp/sra/SRR1/SRR1", "https://sra-pub-run-odp.s3.amazonaws.com/sra/SRR1/SRR1"),
        (
            "fasp.sra.ebi.ac.uk:/vol1/fastq/SRR1/SRR1.fastq.gz",
            "https://ftp.sra.ebi.ac.uk/vol1/fastq/SRR1/SRR1.fastq.gz",
        ),
    ],
)
def test_normalise_url(given, expected):
    assert normalise_url(given) == expected


@pytest.mark.parametrize("bad", ["", "   ", "gopher://x/y", "otherhost:/path"])
def test_normalise_url_rejects(bad):
    with pytest.raises(InputError):
        normalise_url(bad)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["X.fastq.gz"], [0]),
        (["X_1.fastq.gz"], [0]),
        (["X_1.fastq.gz", "X_2.fastq.gz"], [0, 1]),
        (["X_2.fastq.gz", "X_1.fastq.gz"], [1, 0]),  # by suffix, not position
        (["X.fastq.gz", "X_1.fastq.gz", "X_2.fastq.gz"], [1, 2]),  # stray unpaired first
        (["X_1.fastq.gz", "X.fastq.gz", "X_2.fastq.gz"], [0, 2]),
        (["s_R2_001.fastq.gz", "s_R1_001.fastq.gz"], [1, 0]),
        (["SRR12.fastq.gz", "SRR21.fastq.gz"], []),  # digits in the accession are not mates
        (["A.fastq.gz", "B.fastq.gz"], []),
        (["X_1.fastq.gz", "Y_1.fastq.gz", "X_2.fastq.gz"], []),
        ([], []),
    ],
)
def test_pick_mates(names, expected):
    urls = [f"https://h/vol1/{n}" for n in names]
    assert pick_mates(urls) == expected


# --------------------------------------------------------------------------------------------
# ENA inline tables
# --------------------------------------------------------------------------------------------


def test_ena_stray_unpaired_listed_first(tmp_path):
    base = "ftp.sra.ebi.ac.uk/vol1/fastq/SRR100/SRR100"
    p = ena_table(
        tmp_path,
        [
            ena_row(
                "SRR100",
                layout="PAIRED",
                ftp=f"{base}/SRR100.fastq.gz;{base}/SRR100_2.fastq.gz;{base}/SRR100_1.fastq.gz",
                md5="a" * 32 + ";" + "B" * 32 + ";" + "c" * 32,
                size="5;20;10",
            )
        ],
    )
    (r,), skipped = load_runs(p)
    assert skipped == []
    assert [f.name for f in r.files] == ["SRR100_1.fastq.gz", "SRR100_2.fastq.gz"]
    assert [f.url for f in r.files] == [f"https://{base}/SRR100_1.fastq.gz", f"https://{base}/SRR100_2.fastq.gz"]
    assert [f.md5 for f in r.files] == ["c" * 32, "b" * 32]  # aligned with their URLs
    assert [f.bytes for f in r.files] == [10, 20] and r.fastq_bytes == 30


def test_ena_mismatched_md5_list(tmp_path):
    base = "ftp.sra.ebi.ac.uk/vol1/fastq/SRR7"
    p = ena_table(
        tmp_path,
        [
            ena_row(
                "SRR7", layout="PAIRED", ftp=f"{base}/SRR7_1.fastq.gz;{base}/SRR7_2.fastq.gz", md5="a" * 32, size="1;2"
            )
        ],
    )
    with pytest.raises(InputError, match=r"SRR7.*fastq_md5|fastq_md5.*SRR7"):
        load_runs(p)


def test_ena_mismatched_bytes_list(tmp_path):
    p = ena_table(tmp_path, [ena_row("SRR7", size="1;2")])
    with pytest.raises(InputError, match="fastq_bytes") as e:
        load_runs(p)
    assert "SRR7" in str(e.value)


def test_ena_missing_tokens_and_csv(tmp_path):
    rows = [
        ena_row("SRR1"),
        ["SRR2", "PAIRED", "<NA>", "NA", "nan", "", "<NA>", "<NA>", "<NA>"],
        ["ERR3", "single", "RNA-Seq", "TRANSCRIPTOMIC", "NA", "NA", "", "", ""],
    ]
    p = ena_table(tmp_path, rows, name="ena.csv", sep=",")
    runs, skipped = load_runs(p)
    assert [r.run for r in runs] == ["SRR1", "SRR2", "ERR3"] and skipped == []
    assert runs[1].files == [] and runs[1].read_count is None and runs[1].layout == PAIRED
    assert runs[2].layout == SINGLE and runs[2].files == []


def test_ena_accession_only_table(tmp_path):
    p = write(tmp_path, "ids.tsv", [["run_accession"], ["SRR1"], ["DRR2"]])
    runs, skipped = load_runs(p)
    assert [(r.run, r.layout, r.files, r.sra_urls) for r in runs] == [
        ("SRR1", "", [], [ODP_URL.format(run="SRR1")]),
        ("DRR2", "", [], [ODP_URL.format(run="DRR2")]),
    ]


def test_invalid_accession_names_value_and_file(tmp_path):
    p = ena_table(tmp_path, [ena_row("SRR1"), ena_row("SRX12345")])
    with pytest.raises(InputError) as e:
        load_runs(p)
    assert "SRX12345" in str(e.value) and str(p) in str(e.value)


def test_blank_accession_is_an_error(tmp_path):
    p = ena_table(tmp_path, [ena_row("SRR1"), ena_row("")])
    with pytest.raises(InputError, match="invalid run accession"):
        load_runs(p)


def test_duplicate_run(tmp_path):
    p = ena_table(tmp_path, [ena_row("SRR1"), ena_row("SRR2"), ena_row("SRR1")])
    with pytest.raises(InputError, match="SRR1.*more than once"):
        load_runs(p)


def test_bad_number(tmp_path):
    row = ena_row("SRR1")
    row[4] = "lots"
    p = ena_table(tmp_path, [row])
    with pytest.raises(InputError, match=r"read_count.*'lots'"):
        load_runs(p)


def test_empty_tables(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.tsv"):
        load_runs(empty)
    header_only = ena_table(tmp_path, [], name="header.tsv")
    with pytest.raises(InputError, match="header.tsv"):
        load_runs(header_only)
    with pytest.raises(InputError, match="nope.tsv"):
        load_runs(tmp_path / "nope.tsv")


def test_unknown_format_names_file_and_columns(tmp_path):
    p = write(tmp_path, "odd.tsv", [["sample", "reads"], ["a", "b"]])
    with pytest.raises(InputError) as e:
        load_runs(p)
    assert "odd.tsv" in str(e.value) and "sample" in str(e.value) and "reads" in str(e.value)
    with pytest.raises(InputError, match="sample"):
        detect_format(["sample", "reads"])


def test_detect_format_columns():
    assert detect_format(["run_accession", "fastq_ftp"]) == "ena"
    assert detect_format(["run", "read1_path", "lib_layout"]) == "integrate"
    assert detect_format(["run", "lib_layout"]) == "amalgkit"
    assert detect_format(["Run", "LibraryLayout"]) == "runinfo"


# --------------------------------------------------------------------------------------------
# Table reading (stdlib csv)
# --------------------------------------------------------------------------------------------


def test_importing_metadata_does_not_import_pandas():
    code = "import sys, pipeline.inputs.metadata; print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_read_table_plain_strings(tmp_path):
    p = write(tmp_path, "t.csv", [["\ufeff run_accession ", "x", ""], ["SRR1", " a ", "NA"]], sep=",")
    columns, rows, fmt = read_table(p)
    assert columns == ["run_accession", "x", "Unnamed: 2"] and fmt == "ena"
    assert rows == [{"run_accession": "SRR1", "x": " a ", "Unnamed: 2": "NA"}]  # cells as written


def test_row_with_too_many_fields_names_file_and_line(tmp_path):
    p = ena_table(tmp_path, [ena_row("SRR1"), [], ena_row("SRR2") + ["extra"]])
    with pytest.raises(InputError) as e:
        load_runs(p)
    msg = str(e.value)
    assert str(p) in msg and "line 4" in msg and "10 fields" in msg and "header has 9" in msg, msg
    # blank trailing cells (a separator at the end of each row) carry nothing and are dropped
    p = ena_table(tmp_path, [ena_row("SRR1") + [""], ena_row("SRR2") + ["", " "]], name="trail.tsv")
    assert [r.run for r in load_runs(p)[0]] == ["SRR1", "SRR2"]


def test_duplicate_column_names_file_and_column(tmp_path):
    p = write(tmp_path, "dup.csv", [["run_accession", "read_count", "read_count "], ["SRR1", "1", "2"]], sep=",")
    with pytest.raises(InputError) as e:
        load_runs(p)
    assert str(p) in str(e.value) and "'read_count'" in str(e.value) and "more than once" in str(e.value)


@pytest.mark.parametrize("sep", [",", "\t"])
def test_quoted_field_holding_the_separator(tmp_path, sep):
    p = tmp_path / "q.txt"
    p.write_text(
        sep.join(["run_accession", "sample_title", "read_count"])
        + "\n"
        + sep.join(["SRR1", f'"liver{sep} ""day 2""\nrep 1"', "7"])
        + "\n"
        + sep.join(["SRR2", "plain", "8"])
        + "\n"
    )
    _, rows, _ = read_table(p)
    assert rows[0]["sample_title"] == f'liver{sep} "day 2"\nrep 1' and rows[0]["read_count"] == "7"
    assert [r.read_count for r in load_runs(p)[0]] == [7, 8]


def test_unclosed_quote_names_its_line(tmp_path):
    p = ena_table(tmp_path, [ena_row("SRR1"), ["SRR2", '"PAIRED'] + ena_row("SRR2")[2:], ena_row("SRR3")])
    with pytest.raises(InputError) as e:
        read_table(p)
    assert str(p) in str(e.value) and "line 3" in str(e.value) and "never closed" in str(e.value)


def test_short_row_padded(tmp_path):
    p = ena_table(tmp_path, [["SRR1", "PAIRED"], ena_row("SRR2")])
    _, rows, _ = read_table(p)
    assert rows[0] == {c: "" for c in ENA_HEADER} | {"run_accession": "SRR1", "library_layout": "PAIRED"}
    runs, skipped = load_runs(p)
    assert runs[0].layout == PAIRED and runs[0].files == [] and runs[0].read_count is None


def test_gzip_table(tmp_path):
    plain = ena_table(tmp_path, [ena_row("SRR1"), ena_row("SRR2")])
    gz = tmp_path / "ena.tsv.gz"
    gz.write_bytes(gzip.compress(b"\xef\xbb\xbf" + plain.read_bytes()))  # with a BOM too
    assert read_table(gz) == read_table(plain)
    assert load_runs(gz) == load_runs(plain)
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(gzip.compress(plain.read_bytes())[:40])
    with pytest.raises(InputError, match="bad.tsv.gz"):
        read_table(bad)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def selection_table(tmp_path):
    return ena_table(
        tmp_path,
        [
            ena_row("SRR1", layout="PAIRED", strategy="RNA-Seq"),
            ena_row("SRR2", layout="SINGLE", strategy="rna-seq"),
            ena_row("SRR3", layout="PAIRED", strategy="OTHER"),
            ena_row("SRR4", layout="PAIRED", strategy="RNA-Seq", source="GENOMIC"),
            ena_row("SRR5", layout="PAIRED", strategy="RNA-Seq"),
            ena_row("SRR6", layout="PAIRED", strategy="RNA-Seq"),
        ],
    )


def test_selection_keys(tmp_path):
    p = selection_table(tmp_path)
    runs, skipped = load_runs(
        p,
        {
            "library_strategy": "RNA-SEQ",
            "library_source": ["transcriptomic"],
            "layout": "paired",
            "exclude_runs": ["SRR5"],
            "max_runs": 1,
        },
    )
    assert [r.run for r in runs] == ["SRR1"]
    reasons = dict(skipped)
    assert [s[0] for s in skipped] == ["SRR2", "SRR3", "SRR4", "SRR5", "SRR6"]  # file order
    assert "layout" in reasons["SRR2"]
    assert "library_strategy" in reasons["SRR3"] and "OTHER" in reasons["SRR3"]
    assert "library_source" in reasons["SRR4"] and "GENOMIC" in reasons["SRR4"]
    assert "exclude_runs" in reasons["SRR5"]
    assert reasons["SRR6"] == "max_runs=1"


def test_selection_single_keys(tmp_path):
    p = selection_table(tmp_path)
    runs, skipped = load_runs(p, {"library_strategy": ["rna-seq"]})
    assert [r.run for r in runs] == ["SRR1", "SRR2", "SRR4", "SRR5", "SRR6"]
    runs, skipped = load_runs(p, {"layout": "SINGLE"})
    assert [r.run for r in runs] == ["SRR2"] and len(skipped) == 5
    runs, skipped = load_runs(p, {"max_runs": 4})
    assert [r.run for r in runs] == ["SRR1", "SRR2", "SRR3", "SRR4"]
    assert skipped == [("SRR5", "max_runs=4"), ("SRR6", "max_runs=4")]
    runs, skipped = load_runs(p, {"exclude_runs": "SRR1", "library_strategy": None})
    assert [s for s in skipped] == [("SRR1", "exclude_runs lists this run")]
    runs, skipped = load_runs(p, {})
    assert len(runs) == 6 and skipped == []


@pytest.mark.parametrize(
    "selection, message",
    [
        ({"strategy": "RNA-Seq"}, "strategy"),
        ({"max_runs": 0}, "max_runs"),
        ({"max_runs": "3"}, "max_runs"),
        ({"max_runs": True}, "max_runs"),
        ({"layout": "both"}, "layout"),
        ({"library_strategy": 5}, "library_strategy"),
        ({"exclude_runs": ["SRR1", "nope"]}, "nope"),
        ("RNA-Seq", "mapping"),
    ],
)
def test_selection_errors(tmp_path, selection, message):
    p = selection_table(tmp_path)
    with pytest.raises(InputError, match=message):
        load_runs(p, selection)


def test_selection_on_formats_without_the_column(tmp_path):
    # runinfo has LibraryStrategy; an accession-only ENA table has none -> filter not applied
    p = write(tmp_path, "ids.tsv", [["run_accession"], ["SRR1"]])
    runs, skipped = load_runs(p, {"library_strategy": "RNA-Seq"})
    assert [r.run for r in runs] == ["SRR1"]
    p = write(
        tmp_path,
        "runinfo.csv",
        [
            ["Run", "LibraryLayout", "LibraryStrategy", "LibrarySource", "spots", "bases", "download_path"],
            ["SRR1", "PAIRED", "RNA-Seq", "TRANSCRIPTOMIC", "5", "50", ""],
            ["Run", "LibraryLayout", "LibraryStrategy", "LibrarySource", "spots", "bases", "download_path"],
            ["SRR2", "SINGLE", "WGS", "GENOMIC", "", "", "https://h/SRR2"],
        ],
        sep=",",
    )
    runs, skipped = load_runs(p, {"library_strategy": "rna-seq"})
    assert [r.run for r in runs] == ["SRR1"]  # repeated header row dropped
    assert runs[0].sra_urls == [ODP_URL.format(run="SRR1")] and runs[0].read_count == 5
    assert skipped == [("SRR2", "library_strategy=WGS (selection library_strategy=rna-seq)")]


def test_amalgkit_inline_exclusion_and_strategy(tmp_path):
    p = write(
        tmp_path,
        "metadata.tsv",
        [
            [
                "run",
                "lib_layout",
                "lib_strategy",
                "is_sampled",
                "exclusion",
                "total_spots",
                "total_bases",
                "AWS_Link",
                "NCBI_Link",
            ],
            ["SRR1", "PAIRED", "RNA-Seq", "yes", "no", "10", "2000", "", "https://n/SRR1"],
            ["SRR2", "single", "RNA-Seq", "yes", "low_nspots", "1", "1", "", ""],
            ["SRR3", "Single", "RNA-Seq", "Yes", "No", "", "", "s3://sra-pub-run-odp/sra/SRR3/SRR3", ""],
            ["SRR4", "paired", "miRNA-Seq", "yes", "no", "", "", "", ""],
            ["SRR5", "paired", "RNA-Seq", "no", "no", "", "", "", ""],
        ],
    )
    runs, skipped = load_runs(p, {"library_strategy": "RNA-Seq"})
    assert [r.run for r in runs] == ["SRR1", "SRR3"]
    assert runs[0].layout == PAIRED and runs[1].layout == SINGLE
    assert runs[0].sra_urls == ["https://n/SRR1", ODP_URL.format(run="SRR1")]
    assert runs[1].sra_urls == [ODP_URL.format(run="SRR3")]  # s3:// link normalised, not repeated
    assert skipped == [
        ("SRR2", "exclusion=low_nspots"),
        ("SRR4", "library_strategy=miRNA-Seq (selection library_strategy=RNA-Seq)"),
        ("SRR5", "is_sampled=no"),
    ]


# --------------------------------------------------------------------------------------------
# integrate (local files)
# --------------------------------------------------------------------------------------------


def test_integrate_relative_and_absolute_paths(tmp_path):
    meta = tmp_path / "meta"
    (meta / "fq").mkdir(parents=True)
    for n in ("A_1.fq.gz", "A_2.fq.gz", "B.fq.gz"):
        (meta / "fq" / n).write_bytes(b"x")
    abs_b = str(meta / "fq" / "B.fq.gz")
    p = write(
        meta,
        "integrate.tsv",
        [
            ["run", "read1_path", "read2_path", "total_spots", "lib_layout"],
            ["SRR1", "fq/A_1.fq.gz", "fq/A_2.fq.gz", "12", "paired"],
            ["SRR2", abs_b, "", "", "paired"],
            ["SRR3", "fq/B.fq.gz", "unavailable", "NA", "single"],
        ],
    )
    runs, skipped = load_runs(p)
    assert skipped == []
    a, b, c = runs
    assert a.layout == PAIRED and a.read_count == 12
    assert [f.url for f in a.files] == [(meta / "fq" / "A_1.fq.gz").as_uri(), (meta / "fq" / "A_2.fq.gz").as_uri()]
    assert [f.name for f in a.files] == ["A_1.fq.gz", "A_2.fq.gz"]
    assert all(f.md5 is None and f.bytes is None for f in a.files)
    assert b.layout == SINGLE and b.files[0].url == Path(abs_b).as_uri()  # read2 blank
    assert c.layout == SINGLE and len(c.files) == 1 and c.read_count is None
    assert a.sra_urls == []  # local data: no remote candidates


def test_integrate_missing_file(tmp_path):
    (tmp_path / "A_1.fq.gz").write_bytes(b"x")
    p = write(
        tmp_path,
        "integrate.tsv",
        [
            ["run", "read1_path", "read2_path"],
            ["SRR1", "A_1.fq.gz", "A_2.fq.gz"],
        ],
    )
    with pytest.raises(InputError) as e:
        load_runs(p)
    assert "SRR1" in str(e.value) and str(tmp_path / "A_2.fq.gz") in str(e.value)
    # a run that selection leaves out is not checked
    runs, skipped = load_runs(p, {"exclude_runs": ["SRR1"]})
    assert runs == [] and skipped == [("SRR1", "exclude_runs lists this run")]


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def test_write_reports(tmp_path):
    runs = [
        Run(
            run="SRR1",
            layout=PAIRED,
            read_count=5,
            base_count=500,
            files=[
                {"url": "https://h/SRR1_1.fastq.gz", "name": "SRR1_1.fastq.gz", "bytes": 3},
                {"url": "https://h/SRR1_2.fastq.gz", "name": "SRR1_2.fastq.gz", "bytes": 4},
            ],
        ),
        Run(run="SRR2", sra_urls=["https://a/SRR2", "https://b/SRR2"]),
    ]
    out = tmp_path / "reports" / "runs.tsv"
    write_runs_tsv(runs, out)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows[0] == {
        "run": "SRR1",
        "layout": "PAIRED",
        "read_count": "5",
        "base_count": "500",
        "n_files": "2",
        "fastq_bytes": "7",
        "urls": "https://h/SRR1_1.fastq.gz;https://h/SRR1_2.fastq.gz",
    }
    assert rows[1]["n_files"] == "0" and rows[1]["fastq_bytes"] == ""
    assert rows[1]["urls"] == "https://a/SRR2;https://b/SRR2"

    sk = tmp_path / "reports" / "skipped.tsv"
    write_skipped_tsv([("SRR3", "is_sampled=no"), ("SRR4", "max_runs=1")], sk)
    assert sk.read_text() == "run\treason\nSRR3\tis_sampled=no\nSRR4\tmax_runs=1\n"
    write_skipped_tsv([], sk)  # overwrite in place
    assert sk.read_text() == "run\treason\n"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["runs.tsv", "skipped.tsv"]


def test_real_reports_round_trip(tmp_path):
    runs, skipped = load_runs(shared(AMALGKIT))
    write_runs_tsv(runs, tmp_path / "runs.tsv")
    write_skipped_tsv(skipped, tmp_path / "skipped.tsv")
    assert len((tmp_path / "runs.tsv").read_text().splitlines()) == 1 + 8
    assert len((tmp_path / "skipped.tsv").read_text().splitlines()) == 1 + 6
