"""Bad species configs and bad metadata tables, through the real `luigi` command line.

Every case must: exit non-zero (35 for a config error, 30 for a metadata error: see README
"Exit codes"), name on stderr the file and the key / run / value at fault, and write nothing
outside the output directory. A config error is caught before any work for any species, so the
output directory is not even created; a metadata error may leave the species folder, but no batch.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from helpers import files_under, run_luigi, write_metadata

from pipeline.inputs.species_config import ConfigError, load_species_config
from pipeline.testing.fileserver import FileServer
from pipeline.testing.simulate import METADATA_COLUMNS

CONFIG_ERROR = 35  # [retcode] scheduling_error
DELETE = object()  # in an override: drop this key from the base YAML

ENA_COLUMNS = [c for c in METADATA_COLUMNS if c != "scientific_name"]


def ena(run, ftp=None, md5="0" * 32, size="100", layout="SINGLE") -> dict:
    ftp = ftp if ftp is not None else f"ftp.sra.ebi.ac.uk/vol1/fastq/{run[:6]}/{run}/{run}.fastq.gz"
    return {
        "run_accession": run,
        "library_layout": layout,
        "library_strategy": "RNA-Seq",
        "library_source": "TRANSCRIPTOMIC",
        "read_count": "10",
        "base_count": "500",
        "fastq_ftp": ftp,
        "fastq_md5": md5,
        "fastq_bytes": size,
    }


# --------------------------------------------------------------------------------------------
# Set-up helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path):
    """A valid transcriptome and ENA table (the URLs are never fetched: nothing gets that far)."""
    d = tmp_path / "inputs"
    d.mkdir()
    tx = d / "transcripts.fa"
    tx.write_text(">t1\nACGTACGTACGTACGTACGTACGTACGTACGT\n>t2\nTTTTGGGGCCCCAAAATTTTGGGGCCCCAAAA\n")
    meta = write_metadata(d / "metadata.tsv", [ena("SRR0000001"), ena("SRR0000002")], columns=ENA_COLUMNS)
    return {"tmp": tmp_path, "cfg": tmp_path / "cfg", "out": tmp_path / "out", "transcriptome": tx, "metadata": meta}


def base_doc(inputs, species="Testus_testus") -> dict:
    return {
        "species": species,
        "reference": {"transcriptome": str(inputs["transcriptome"])},
        "metadata": {"file": str(inputs["metadata"])},
        "batch": {"size": 2},
        "download": {"parallel": 2},
        "quant": {"threads": 1},
    }


def merged(doc: dict, override: dict) -> dict:
    """``doc`` updated by ``override`` section by section; DELETE drops a key."""
    out = copy.deepcopy(doc)
    for k, v in override.items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


def write_yaml(cfg_dir: Path, name: str, doc) -> Path:
    cfg_dir.mkdir(parents=True, exist_ok=True)
    p = cfg_dir / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False) if not isinstance(doc, str) else doc)
    return p


def snapshot(root: Path) -> dict:
    """Every file and folder below ``root``: kind, size and mtime (to see anything written)."""
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(root))] = (
            "dir" if p.is_dir() else "file",
            None if p.is_dir() else st.st_size,
            None if p.is_dir() else st.st_mtime_ns,
        )
    return out


def run_checked(inputs, *extra, expect_rc):
    """Run the CLI; assert the exit code and that nothing changed below tmp_path except out/."""
    tmp, out = inputs["tmp"], inputs["out"]
    before = snapshot(tmp)
    r = run_luigi(inputs["cfg"], out, *extra, timeout=120)
    after = snapshot(tmp)
    outside = {k: v for k, v in after.items() if not Path(k).parts[0] == out.name}
    outside_before = {k: v for k, v in before.items() if not Path(k).parts[0] == out.name}
    assert outside == outside_before, (
        f"files written outside the output directory: {sorted(set(outside.items()) ^ set(outside_before.items()))}"
    )
    assert r.returncode == expect_rc, f"exit code {r.returncode}, expected {expect_rc}\n{r.stderr[-3000:]}"
    return r


def assert_names(stderr: str, *fragments) -> None:
    missing = [f for f in fragments if f not in stderr]
    assert not missing, f"stderr does not name {missing}:\n{stderr[-4000:]}"


def config_error(path) -> str:
    """The message of the ConfigError that load_species_config(path) must raise."""
    with pytest.raises(ConfigError) as e:
        load_species_config(path)
    return str(e.value)


# --------------------------------------------------------------------------------------------
# Config errors: one YAML, through the CLI
# --------------------------------------------------------------------------------------------

# id -> (override of the base YAML, fragments the message must contain besides the file path)
CONFIG_CASES = {
    "typo_batch_sise": ({"batch": {"sise": 3}}, ["unknown key", "'batch.sise'"]),
    "typo_top_level_section": ({"quantification": {"threads": 2}}, ["unknown key", "'quantification'"]),
    "missing_species": ({"species": DELETE}, ["missing required key", "'species'"]),
    "missing_transcriptome": (
        {"reference": {"transcriptome": DELETE}},
        ["missing required key", "'reference.transcriptome'"],
    ),
    "missing_reference_section": ({"reference": DELETE}, ["'reference.transcriptome'"]),
    "null_species": ({"species": None}, ["'species'"]),
    "batch_size_string": ({"batch": {"size": "eight"}}, ["'batch.size'", "'eight'"]),
    "batch_size_zero": ({"batch": {"size": 0}}, ["'batch.size'", "got 0"]),
    "batch_size_bool": ({"batch": {"size": True}}, ["'batch.size'", "True"]),
    "batch_prefetch_negative": ({"batch": {"prefetch": -2}}, ["'batch.prefetch'", "-2"]),
    "download_parallel_negative": ({"download": {"parallel": -1}}, ["'download.parallel'", "-1"]),
    "quant_threads_float": ({"quant": {"threads": 1.5}}, ["'quant.threads'", "1.5"]),
    "fragment_length_zero": ({"quant": {"fragment_length": 0}}, ["'quant.fragment_length'", "got 0"]),
    "section_not_a_mapping": ({"batch": 8}, ["batch", "must be a mapping", "int"]),
    "reference_not_a_mapping": ({"reference": "transcripts.fa"}, ["reference", "must be a mapping", "str"]),
    "metadata_not_a_mapping": ({"metadata": "metadata.tsv"}, ["metadata", "must be a mapping", "str"]),
    "species_path_traversal": ({"species": "../../etc"}, ["'species'", "'../../etc'"]),
    "species_slash": ({"species": "Homo/sapiens"}, ["'species'", "'Homo/sapiens'"]),
    "species_dotdot": ({"species": ".."}, ["'species'", "'..'"]),
    "species_absolute": ({"species": "/tmp/evil"}, ["'species'", "'/tmp/evil'"]),
    "species_empty": ({"species": ""}, ["'species'"]),
    "species_not_a_string": ({"species": ["a", "b"]}, ["'species'"]),
    "transcriptome_missing": (
        {"reference": {"transcriptome": "no_such_transcripts.fa"}},
        ["'reference.transcriptome'", "no_such_transcripts.fa", "not found"],
    ),
    "transcriptome_not_fasta": (
        {"reference": {"transcriptome": "../inputs/metadata.tsv"}},
        ["'reference.transcriptome'", "expected a .fa"],
    ),
    "metadata_file_missing": (
        {"metadata": {"file": "no_such_metadata.tsv"}},
        ["'metadata.file'", "no_such_metadata.tsv", "not found"],
    ),
    "metadata_file_is_a_folder": ({"metadata": {"file": "."}}, ["'metadata.file'", "not a regular file"]),
    "no_metadata_at_all": ({"metadata": DELETE}, ["metadata.file"]),
    "mirror_key_not_url": (
        {"download": {"mirrors": {"ftp.sra.ebi.ac.uk/": "http://127.0.0.1:9/"}}},
        ["'download.mirrors'", "'ftp.sra.ebi.ac.uk/'"],
    ),
    "mirror_value_not_url": (
        {"download": {"mirrors": {"https://ftp.sra.ebi.ac.uk/": "127.0.0.1:9/"}}},
        ["'download.mirrors'", "'127.0.0.1:9/'"],
    ),
    "mirrors_a_list": ({"download": {"mirrors": ["http://127.0.0.1:9/"]}}, ["'download.mirrors'", "list"]),
    "exclude_runs_bad_accession": (
        {"metadata": {"exclude_runs": ["SRR1", "XYZ123"]}},
        ["'metadata.exclude_runs'", "'XYZ123'"],
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES), ids=list(CONFIG_CASES))
def test_bad_config_is_named_and_stops_everything(inputs, case):
    override, fragments = CONFIG_CASES[case]
    cfg_dir = inputs["cfg"]
    doc = merged(base_doc(inputs), override)
    yml = write_yaml(cfg_dir, "species.yaml", doc)
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert_names(r.stderr, str(yml.resolve()), *fragments)
    assert not inputs["out"].exists(), "a config error must stop the pipeline before it creates the output dir"


RAW_CASES = {
    "yaml_syntax_error": (
        "species: Testus\nreference: {transcriptome: x.fa\nbatch:\n  size: 2\n",
        ["not valid YAML", "line"],
    ),
    "yaml_bad_indentation": ("species: Testus\nbatch:\n  size: 2\n   prefetch: 1\n", ["not valid YAML", "line"]),
    "empty_file": ("", ["'species'"]),
    "only_comments": ("# nothing here yet\n", ["'species'"]),
    "top_level_list": ("- species: Testus\n- batch: 2\n", ["must be a mapping", "list"]),
    "top_level_scalar": ("Testus_testus\n", ["must be a mapping", "str"]),
}


@pytest.mark.parametrize("case", list(RAW_CASES), ids=list(RAW_CASES))
def test_unreadable_yaml_is_named(inputs, case):
    text, fragments = RAW_CASES[case]
    yml = write_yaml(inputs["cfg"], "species.yaml", text)
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert_names(r.stderr, str(yml.resolve()), *fragments)
    assert not inputs["out"].exists()


def test_empty_config_dir(inputs):
    inputs["cfg"].mkdir()
    (inputs["cfg"] / "README.txt").write_text("species configs go here\n")
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert_names(r.stderr, str(inputs["cfg"].resolve()), "no species configs")
    assert not inputs["out"].exists()


def test_missing_config_dir(inputs):
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert_names(r.stderr, str(inputs["cfg"].resolve()), "not found")
    assert not inputs["out"].exists()


def test_two_yamls_with_the_same_species(inputs):
    a = write_yaml(inputs["cfg"], "a.yaml", base_doc(inputs, "Testus_testus"))
    b = write_yaml(inputs["cfg"], "b.yml", base_doc(inputs, "Testus_testus"))
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert_names(r.stderr, str(a.resolve()), str(b.resolve()), "'Testus_testus'")
    assert not inputs["out"].exists()


def test_problems_in_several_files_are_all_reported(inputs):
    a = write_yaml(inputs["cfg"], "a.yaml", merged(base_doc(inputs, "A"), {"batch": {"sise": 3}}))
    b = write_yaml(inputs["cfg"], "b.yaml", merged(base_doc(inputs, "B"), {"quant": {"threads": 1.5}}))
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert_names(r.stderr, str(a.resolve()), "'batch.sise'", str(b.resolve()), "'quant.threads'")
    assert not inputs["out"].exists()


def test_one_bad_species_stops_the_good_one_too(inputs, tmp_path):
    """Validation of every species comes first: the good species downloads and writes nothing."""
    archive = tmp_path / "archive"
    run_dir = archive / "vol1" / "fastq" / "SRR000" / "SRR0000001"
    run_dir.mkdir(parents=True)
    fq = run_dir / "SRR0000001.fastq.gz"
    fq.write_bytes(b"not really gzip, never fetched")
    meta = write_metadata(inputs["tmp"] / "inputs" / "good.tsv", [ena("SRR0000001")], columns=ENA_COLUMNS)
    with FileServer(archive) as server:
        good = merged(
            base_doc(inputs, "Goodus_goodus"),
            {
                "metadata": {"file": str(meta)},
                "download": {"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
            },
        )
        write_yaml(inputs["cfg"], "a_good.yaml", good)
        bad = write_yaml(
            inputs["cfg"], "z_bad.yaml", merged(base_doc(inputs, "Badus_badus"), {"download": {"parallel": -1}})
        )
        r = run_checked(inputs, expect_rc=CONFIG_ERROR)
        assert server.requests == [], f"the good species downloaded: {server.requests}"
    assert_names(r.stderr, str(bad.resolve()), "'download.parallel'")
    assert not inputs["out"].exists()


# --------------------------------------------------------------------------------------------
# Config errors: load_species_config reports every problem of a file at once
# --------------------------------------------------------------------------------------------


def test_all_problems_of_one_file_are_reported_together(inputs):
    doc = merged(base_doc(inputs), {"batch": {"sise": 3}, "quant": {"thraeds": 2}})
    p = write_yaml(inputs["cfg"], "species.yaml", doc)
    msg = config_error(p)
    assert "'batch.sise'" in msg and "'quant.thraeds'" in msg, msg
    assert msg.count(str(p.resolve())) >= 2, msg


def test_typos_wrong_types_and_missing_keys_are_reported_together(inputs):
    doc = merged(
        base_doc(inputs),
        {"species": DELETE, "batch": {"sise": 3, "size": 0}, "download": {"parallel": "many"}, "colour": "blue"},
    )
    p = write_yaml(inputs["cfg"], "species.yaml", doc)
    msg = config_error(p)
    for fragment in ("'species'", "'batch.sise'", "'batch.size'", "'download.parallel'", "'colour'"):
        assert fragment in msg, f"{fragment} not in:\n{msg}"
    assert len(msg.splitlines()) >= 5, msg


def test_missing_files_are_reported_together(inputs):
    doc = merged(base_doc(inputs), {"reference": {"transcriptome": "nope.fa"}, "metadata": {"file": "nope.tsv"}})
    p = write_yaml(inputs["cfg"], "species.yaml", doc)
    msg = config_error(p)
    assert "nope.fa" in msg and "nope.tsv" in msg, msg


def test_duplicate_key_in_one_yaml_is_an_error(inputs):
    """``batch:`` given twice: one of the two silently wins today, so the user's setting may be lost."""
    text = yaml.safe_dump(base_doc(inputs), sort_keys=False) + "batch:\n  size: 50\n"
    p = write_yaml(inputs["cfg"], "species.yaml", text)
    msg = config_error(p)
    assert "batch" in msg and str(p.resolve()) in msg


def test_typos_and_missing_files_are_reported_together(inputs):
    """One pass of fixing: a typo and a transcriptome that does not exist, both in the first message."""
    doc = merged(base_doc(inputs), {"batch": {"sise": 3}, "reference": {"transcriptome": "nope.fa"}})
    p = write_yaml(inputs["cfg"], "species.yaml", doc)
    msg = config_error(p)
    assert "'batch.sise'" in msg and "nope.fa" in msg, msg


def test_yaml_that_is_not_utf8_is_named(inputs):
    p = inputs["cfg"] / "species.yaml"
    inputs["cfg"].mkdir()
    p.write_bytes(
        yaml.safe_dump(base_doc(inputs), sort_keys=False).encode().replace(b"Testus_testus", b"Testus_t\xe9stus")
    )
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert not inputs["out"].exists()
    assert_names(r.stderr, str(p.resolve()))


def test_an_unknown_key_error_lists_the_known_keys(inputs):
    """Not tied to the exact list (keys get added): it just has to offer the right spelling."""
    p = write_yaml(inputs["cfg"], "species.yaml", merged(base_doc(inputs), {"batch": {"sise": 3}}))
    line = next(ln for ln in config_error(p).splitlines() if "batch.sise" in ln)
    assert "size" in line.replace("sise", ""), line


# --------------------------------------------------------------------------------------------
# Metadata errors, through the CLI
# --------------------------------------------------------------------------------------------


def write_table(path: Path, header: list, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in [header] + rows))
    return path


def ena_rows(*rows: dict) -> list:
    return [[r[c] for c in ENA_COLUMNS] for r in rows]


def _empty(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("")
    return p


PAIRED_FTP = "ftp.sra.ebi.ac.uk/x/SRR0000002_1.fastq.gz;ftp.sra.ebi.ac.uk/x/SRR0000002_2.fastq.gz"
INTEGRATE = ["run", "read1_path", "read2_path"]

# id -> (write the table at the given path, fragments the message must contain besides its path);
# {reads} in a fragment or cell is the folder local_reads/ beside the table, holding PRIV1_1.fastq.gz.
META_CASES = {
    "accession_with_shell": (
        lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("SRR0000001"), ena("SRR12;rm -rf"))),
        ["'SRR12;rm -rf'", "run_accession"],
    ),
    "accession_unknown_prefix": (lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("XYZ123"))), ["'XYZ123'"]),
    "accession_path_traversal": (lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("../SRR1"))), ["'../SRR1'"]),
    "accession_blank": (
        lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("SRR0000001"), ena(""))),
        ["row 2", "run_accession"],
    ),
    "duplicate_run": (
        lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("SRR0000001"), ena("SRR0000002"), ena("SRR0000001"))),
        ["SRR0000001", "more than once", "rows 1 and 3"],
    ),
    "header_only": (lambda p, reads: write_table(p, ENA_COLUMNS, []), ["no rows"]),
    "empty_file": (lambda p, reads: _empty(p), ["is empty"]),  # "empty" alone: in the file's name
    "unknown_format": (
        lambda p, reads: write_table(p, ["accession", "reads"], [["SRR0000001", "x.fastq.gz"]]),
        ["cannot tell the metadata format", "accession", "reads"],
    ),
    "md5_list_too_short": (
        lambda p, reads: write_table(
            p,
            ENA_COLUMNS,
            ena_rows(
                ena("SRR0000001"), ena("SRR0000002", layout="PAIRED", ftp=PAIRED_FTP, md5="0" * 32, size="100;100")
            ),
        ),
        ["SRR0000002", "fastq_md5", "row 2"],
    ),
    "bytes_list_too_long": (
        lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("SRR0000001", size="100;200"))),
        ["SRR0000001", "fastq_bytes"],
    ),
    "bytes_not_a_number": (
        lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("SRR0000001", size="12kb"))),
        ["SRR0000001", "fastq_bytes", "'12kb'"],
    ),
    "url_bad_scheme": (
        lambda p, reads: write_table(p, ENA_COLUMNS, ena_rows(ena("SRR0000001", ftp="gopher://x/SRR0000001.fastq.gz"))),
        ["SRR0000001", "fastq_ftp", "gopher"],
    ),
    "integrate_missing_local_file": (
        lambda p, reads: write_table(
            p, INTEGRATE, [["SRR0000001", str(reads / "PRIV1_1.fastq.gz"), str(reads / "PRIV1_2.fastq.gz")]]
        ),
        ["SRR0000001", "read2_path", "{reads}/PRIV1_2.fastq.gz"],
    ),
    "integrate_missing_relative_file": (
        lambda p, reads: write_table(p, INTEGRATE, [["DRR0000009", "local_reads/NOPE_1.fastq.gz", "unavailable"]]),
        ["DRR0000009", "read1_path", "{reads}/NOPE_1.fastq.gz"],
    ),
    "integrate_no_read1": (
        lambda p, reads: write_table(p, INTEGRATE, [["SRR0000001", "", ""]]),
        ["SRR0000001", "read1_path"],
    ),
}


@pytest.mark.parametrize("case", list(META_CASES), ids=list(META_CASES))
def test_bad_metadata_is_named_and_nothing_is_planned(inputs, case):
    make, fragments = META_CASES[case]
    d = inputs["tmp"] / "inputs"
    reads = d / "local_reads"
    reads.mkdir()
    (reads / "PRIV1_1.fastq.gz").write_bytes(b"x")
    mfile = make(d / f"{case}.tsv", reads)
    write_yaml(inputs["cfg"], "species.yaml", merged(base_doc(inputs), {"metadata": {"file": str(mfile)}}))
    # local tables are read before any species starts, so a bad one stops the run at planning
    r = run_checked(inputs, expect_rc=CONFIG_ERROR)
    assert_names(r.stderr, str(mfile), *(f.format(reads=reads) for f in fragments))
    assert "Cannot start: the configuration or metadata has problems" in r.stderr
    assert not inputs["out"].exists()
    written = files_under(inputs["out"])
    assert not [p for p in written if "batch" in p or p.endswith("runs.tsv")], written
    assert not [p for p in written if "/fastq/" in p or "/quant/" in p or "/genome/" in p], written
    # the species folder, if any, is the only thing below the output dir
    if inputs["out"].exists():
        assert {p.name for p in inputs["out"].iterdir()} <= {"Testus_testus"}


# --------------------------------------------------------------------------------------------
# Metadata errors that need no pipeline run to show
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_md5", ["not-an-md5", "0" * 31, "g" * 32])
def test_malformed_md5_is_rejected_before_downloading(tmp_path, bad_md5):
    from pipeline.inputs.metadata import load_runs
    from pipeline.model import InputError

    p = write_table(tmp_path / "m.tsv", ENA_COLUMNS, ena_rows(ena("SRR0000001"), ena("SRR0000002", md5=bad_md5)))
    with pytest.raises(InputError) as e:
        load_runs(p)
    msg = str(e.value)
    assert str(p) in msg and "SRR0000002" in msg and "fastq_md5" in msg and bad_md5 in msg, msg


# --------------------------------------------------------------------------------------------
# A setting that passes the YAML checks but can never be scheduled
# --------------------------------------------------------------------------------------------


def _configured_cpu() -> int:
    from pipeline import settings  # the packaged settings, with the project's luigi.cfg over them

    return settings.resource_cap("cpu")


def test_quant_threads_above_the_cpu_resource_is_caught(tmp_path):
    """Rejected up front (exit 35 naming quant.threads): such a task could never get its CPU resource."""
    from conftest import need_tool

    from pipeline.testing import simulate

    need_tool("kallisto")
    threads = _configured_cpu() + 1
    ds = simulate.make_species_dataset(
        tmp_path / "sim",
        "Simulata_cpu",
        ["DRR000201"],
        "SINGLE",
        reads_per_run=500,
        read_len=50,
        n_transcripts=10,
        seed=3,
    )
    with FileServer(tmp_path / "sim" / "archive") as server:
        doc = {
            "species": "Simulata_cpu",
            "reference": {"transcriptome": str(ds["transcriptome"])},
            "metadata": {"file": str(ds["metadata"])},
            "quant": {"threads": threads},
            "download": {"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}},
        }
        yml = write_yaml(tmp_path / "cfg", "species.yaml", doc)
        r = run_luigi(tmp_path / "cfg", tmp_path / "out", timeout=120)
    assert r.returncode == CONFIG_ERROR, f"exit {r.returncode}:\n{r.stderr[-2500:]}"
    assert_names(r.stderr, str(yml.resolve()), "'quant.threads'")
    assert not (tmp_path / "out").exists()
