"""Hostile inputs, family by family: each rule is tested on every place it guards.

1. YAML alias bombs ("billion laughs") under every checked key of a species config, and other
   documents that would cost unbounded time or memory: rejected in bounded time and memory, each
   case in a forked child of a fresh interpreter (so one case cannot poison another), with a
   message naming the file and the key and quoting a bounded, escaped excerpt of the value.
2. Whole-string checks: a trailing newline or any control character fails every name check
   (species, accessions, md5s, ENA field names, sizes, mirrors' URL prefixes, source names, ...).
3. URLs with ``..`` segments (also percent-encoded), ``%2F``/``%5C``, and local file names that are
   ``.``, ``..``, empty or hold control characters or ``/``: rejected when the metadata is read, in
   every table format and column that has URLs, while legitimate values keep working.
4. Every TSV the pipeline writes reads back as one row per run with the right number of fields,
   whatever tabs, line breaks or other control characters its cells hold.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.fetch.transfer import DownloadError, safe_name
from pipeline.finish import failed_runs_text
from pipeline.inputs import species_config
from pipeline.inputs.ena import EnaError, search_url
from pipeline.inputs.metadata import load_runs, write_runs_tsv, write_skipped_tsv
from pipeline.inputs.species_config import ConfigError, load_species_config
from pipeline.model import InputError, RemoteFile, Run, excerpt, file_name_problem, tsv_cell, tsv_text

ROOT = Path(__file__).resolve().parents[1]

#: Bounds every bomb case must stay within (time measured in the child, memory as tracemalloc's
#: peak and as the child's peak RSS above the interpreter it was forked from).
MAX_SECONDS = 2.0
MAX_MB = 200
#: Longest message line a rejected bomb may produce, and most copies of its leaf it may quote.
MAX_LINE = 600
MAX_LEAVES = 40


# --------------------------------------------------------------------------------------------
# Set-up: a valid species config to spoil
# --------------------------------------------------------------------------------------------


def _inputs(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "tx.fa").write_text(">t1\nACGTACGTACGTACGTACGTACGT\n")
    (d / "m.tsv").write_text("run_accession\nSRR1\n")
    return d


def _doc() -> dict:
    return {"species": "Testus_testus", "reference": {"transcriptome": "tx.fa"}, "metadata": {"file": "m.tsv"}}


def _checked_keys() -> list[str]:
    """Every key the schema checks, as section.key (or key): new keys are covered by themselves."""
    out = []
    for section, spec in species_config.SCHEMA.items():
        if isinstance(spec, dict):
            out += [f"{section}.{key}" for key in spec]
        else:
            out.append(section)
    return out


def _with_value(key: str, placeholder: str, drop_file: bool = False) -> str:
    """The YAML text of a valid config whose ``key`` holds ``placeholder`` (replaced afterwards)."""
    doc = _doc()
    if drop_file:
        del doc["metadata"]["file"]
    section, _, sub = key.partition(".")
    if sub:
        doc.setdefault(section, {})[sub] = placeholder
    else:
        doc[section] = placeholder
    return yaml.safe_dump(doc, sort_keys=False)


def _write_config(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text, encoding="utf-8")
    return p


def _config_error(p: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_species_config(p)
    return str(e.value)


# --------------------------------------------------------------------------------------------
# 1. Alias bombs under every checked key, in bounded time and memory
# --------------------------------------------------------------------------------------------

LEVELS = "abcdefghi"  # nine levels of nine: 9**9 = 387,420,489 leaves once expanded


def _levels(first: str, next_level) -> str:
    """``{a: &a FIRST, b: &b NEXT(a), ..., i: &i NEXT(h)}``: the classic document, as one value."""
    parts = [f"a: &a {first}"]
    parts += [f"{cur}: &{cur} {next_level(prev)}" for prev, cur in zip(LEVELS, LEVELS[1:])]
    return "{" + ", ".join(parts) + "}"


NINE_LOLS = "[" + ", ".join(["lol"] * 9) + "]"
NINE_KEYS = "{" + ", ".join(f"k{j}: lol" for j in range(9)) + "}"

#: form -> the bomb as a YAML flow value
BOMBS = {
    # a: &a [lol x 9], b: &b [*a x 9], ... i: &i [*h x 9]
    "lists": _levels(NINE_LOLS, lambda prev: "[" + ", ".join([f"*{prev}"] * 9) + "]"),
    # the same as one list: [&a [...], &b [*a, ...], ..., &i [*h, ...]]
    "nested_list": "["
    + ", ".join(
        [f"&a {NINE_LOLS}"] + [f"&{cur} [" + ", ".join([f"*{prev}"] * 9) + "]" for prev, cur in zip(LEVELS, LEVELS[1:])]
    )
    + "]",
    # mappings of mappings: b: &b {k0: *a, ..., k8: *a}
    "mappings": _levels(NINE_KEYS, lambda prev: "{" + ", ".join(f"k{j}: *{prev}" for j in range(9)) + "}"),
    # merge keys, which PyYAML without the fix of yaml/pyyaml#897 expands level by level: b: &b {<<: [*a x 9]}
    "merge_keys": _levels(NINE_KEYS, lambda prev: "{<<: [" + ", ".join([f"*{prev}"] * 9) + "]}"),
}


def _bomb_text(key: str, form: str) -> str:
    if form == "alias":  # the anchors under an unknown key first; the key's value is the last level
        return (
            "lols: " + BOMBS["lists"] + "\n" + _with_value(key, "BOMB", key == "metadata.query").replace("BOMB", "*i")
        )
    return _with_value(key, "BOMB", key == "metadata.query").replace("BOMB", BOMBS[form])


BOMB_FORMS = [*BOMBS, "alias"]
BOMB_CASES = [(key, form) for key in _checked_keys() for form in BOMB_FORMS]
#: A bomb as a mapping key, in each section and at the top level.
KEY_CASES = [s for s, spec in species_config.SCHEMA.items() if isinstance(spec, dict)] + ["(top level)"]

RUNNER = r"""
import json, os, resource, select, signal, sys, time, tracemalloc

from pipeline.inputs.metadata import load_runs
from pipeline.inputs.species_config import load_species_config

CALLS = {"config": load_species_config, "metadata": load_runs}
HEADROOM = 1 << 29  # address space a child may add: a real bomb dies of MemoryError, not the machine
TIMEOUT = 5.0  # seconds before a child is killed (2.5 times the bound, so a broken check fails fast)
TRACED_TIMEOUT = 60.0  # tracemalloc slows PyYAML's scanner about tenfold; only memory is measured then


def vm_size():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def child(case, w, traced):
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm_size() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        CALLS[case["kind"]](case["path"])
        out = {"error": None, "message": ""}
    except BaseException as e:
        text = str(e)
        out = {"error": type(e).__name__, "message": text[:20000], "length": len(text)}
    out["seconds"] = time.perf_counter() - t0
    if traced:
        out["peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    data = json.dumps(out).encode()
    while data:
        data = data[os.write(w, data):]


def fork(case, traced):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(case, w, traced)
        finally:
            os._exit(0)
    os.close(w)
    timeout = TRACED_TIMEOUT if traced else TIMEOUT
    chunks, deadline, killed = [], time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        if select.select([r], [], [], left)[0]:
            block = os.read(r, 1 << 16)
            if not block:
                break
            chunks.append(block)
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    try:
        out = json.loads(b"".join(chunks))
    except ValueError:
        out = {"error": "killed after %.0f s" % timeout if killed else "no result (status %d)" % status}
    out["maxrss_mb"] = usage.ru_maxrss / 1024
    return out


def run(case):
    # time and peak RSS from a plain child; tracemalloc's peak from a second, traced one (tracing
    # slows PyYAML several times over, so it must not be in the timed run)
    out = fork(case, traced=False)
    if out.get("seconds", TIMEOUT) >= TIMEOUT / 2:  # already out of bounds: spare the slower traced run
        return dict(out, peak_mb=float("inf"), traced_error="not run")
    traced = fork(case, traced=True)
    out["peak_mb"] = traced.get("peak_mb", float("inf"))
    out["traced_error"] = traced.get("error")
    return out


base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
results = {c["id"]: run(c) for c in json.load(sys.stdin)}
print(json.dumps({"base_mb": base_mb, "results": results}))
"""


def run_bounded(cases: list[dict]) -> dict:
    """Run each ``{"id", "kind": "config"|"metadata", "path"}`` in a forked child of one fresh
    interpreter; return {"base_mb": the interpreter's RSS, "results": {id: measurements}}."""
    if not hasattr(os, "fork") or not Path("/proc/self/status").exists():
        pytest.skip("the bounded runner needs fork and /proc (Linux)")
    r = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(cases), capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def assert_bounded(got: dict, base_mb: float) -> None:
    assert got["error"] is not None and got["traced_error"] == got["error"], got
    assert got["seconds"] < MAX_SECONDS, got
    assert got["peak_mb"] < MAX_MB, got
    assert got["maxrss_mb"] - base_mb < MAX_MB, got


def assert_bounded_message(message: str, *fragments: str) -> None:
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in:\n{message[:3000]}"
    for line in message.splitlines():
        assert len(line) <= MAX_LINE, f"unbounded line ({len(line)} chars): {line[:300]}..."
        assert line.isprintable(), f"an unescaped control character in: {line!r}"
    assert message.count("lol") <= MAX_LEAVES, f"{message.count('lol')} leaves quoted"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = _inputs(tmp_path_factory.mktemp("bombs"))
    cases, paths = [], {}
    for key, form in BOMB_CASES:
        cid = f"{key}-{form}"
        paths[cid] = _write_config(d, f"{cid}.yaml", _bomb_text(key, form))
    for section in KEY_CASES:
        cid = f"key-{section}"
        if section == "(top level)":
            text = "lols: " + BOMBS["lists"] + "\n? [*i, *i]\n: 1\n" + yaml.safe_dump(_doc(), sort_keys=False)
        else:
            doc = {k: v for k, v in _doc().items() if k != section}
            text = yaml.safe_dump(doc, sort_keys=False) + f"lols: {BOMBS['lists']}\n{section}:\n  ? [*i, *i]\n  : 1\n"
        paths[cid] = _write_config(d, f"{cid}.yaml", text)
    cases = [{"id": cid, "kind": "config", "path": str(p)} for cid, p in paths.items()]
    out = run_bounded(cases)
    return {"base_mb": out["base_mb"], "results": out["results"], "paths": paths}


@pytest.mark.parametrize("key, form", BOMB_CASES, ids=[f"{k}-{f}" for k, f in BOMB_CASES])
def test_alias_bomb_under_every_checked_key_is_rejected_in_bounded_time_and_memory(bombs, key, form):
    cid = f"{key}-{form}"
    got = bombs["results"][cid]
    assert_bounded(got, bombs["base_mb"])
    assert got["error"] == "ConfigError", got
    path = str(bombs["paths"][cid].resolve())
    assert_bounded_message(got["message"], path, f"'{key}'")
    line = next(ln for ln in got["message"].splitlines() if f"'{key}'" in ln)
    assert path in line, line
    if form == "merge_keys":  # refused as such, whatever the PyYAML release would do with them
        assert "merge keys ('<<') are not supported" in line, line


@pytest.mark.parametrize("section", KEY_CASES)
def test_alias_bomb_as_a_mapping_key_is_rejected(bombs, section):
    got = bombs["results"][f"key-{section}"]
    assert_bounded(got, bombs["base_mb"])
    under = [] if section == "(top level)" else [f"'{section}'"]
    assert_bounded_message(got["message"], str(bombs["paths"][f"key-{section}"].resolve()), "plain value", *under)


def test_excerpt_of_a_shared_structure_is_bounded():
    """What every message quotes: a 9**9 structure built of shared lists, quoted in a few items."""
    level: list = ["lol"] * 9
    for _ in range(8):
        level = [level] * 9
    shown = excerpt({"k": level, "s": "x\n" * 10**6, "n": 7**100_000, "t": ("a\tb", b"\x00" * 10**6)})
    assert len(shown) < 500 and shown.isprintable(), shown
    assert "\\n" in shown and "integer of" in shown


class _BadRepr:
    def __repr__(self):
        raise RuntimeError("no")


def test_excerpt_never_raises():
    assert "_BadRepr" in excerpt(_BadRepr())


# Other documents that would cost without bound: each refused, named, in bounded time and memory.
COSTLY = {
    "deeply_nested": ("species: " + "[" * 50_000 + "]" * 50_000 + "\n", ["nested deeper", "line 1"]),
    "deeply_nested_blocks": (
        "species: Sp\nbatch:\n" + "".join("  " * (i + 1) + "- \n" for i in range(3000)),
        ["nested"],
    ),
    "huge_decimal_integer": ("batch: {size: " + "9" * 100_000 + "}\n", ["'batch.size'", "out of range"]),
    "huge_hex_integer": ("quant: {threads: -0x" + "f" * 100_000 + "}\n", ["'quant.threads'", "out of range"]),
    "huge_file": ("species: Sp\n" + "# padding\n" * 300_000, ["larger than"]),
    "long_string_value": ("species: " + "a" * 900_000 + "\n", ["'species'"]),
}


def test_costly_documents_are_rejected_in_bounded_time_and_memory(tmp_path):
    d = _inputs(tmp_path)
    base = yaml.safe_dump({k: v for k, v in _doc().items() if k != "species"}, sort_keys=False)
    paths = {name: _write_config(d, f"{name}.yaml", text + base) for name, (text, _) in COSTLY.items()}
    out = run_bounded([{"id": name, "kind": "config", "path": str(p)} for name, p in paths.items()])
    for name, (_, fragments) in COSTLY.items():
        got = out["results"][name]
        assert_bounded(got, out["base_mb"])
        assert got["error"] == "ConfigError", (name, got)
        assert_bounded_message(got["message"], str(paths[name].resolve()), *fragments)


# Metadata cells that would cost without bound: a number of a billion digits, huge cells.
COSTLY_CELLS = {
    "huge_exponent_read_count": ("read_count", "1e999999999"),
    "huge_exponent_fastq_bytes": ("fastq_bytes", "9" * 30 + "e99999"),
    "long_thousands": ("base_count", "1" + ",000" * 30_000),
    "long_md5": ("fastq_md5", "a" * 120_000),
    "long_url": ("fastq_ftp", "ftp.sra.ebi.ac.uk/" + "x/" * 60_000 + "SRR2.fastq.gz"),
    "long_accession": ("run_accession", "SRR" + "1" * 120_000),
}


def test_costly_metadata_cells_are_rejected_in_bounded_time_and_memory(tmp_path):
    paths = {}
    for name, (column, value) in COSTLY_CELLS.items():
        row = dict(ENA_GOOD, run_accession="SRR2") | {column: value}
        paths[name] = _table(tmp_path / f"{name}.tsv", list(ENA_GOOD), [ENA_GOOD, row])
    out = run_bounded([{"id": n, "kind": "metadata", "path": str(p)} for n, p in paths.items()])
    for name, (column, _) in COSTLY_CELLS.items():
        got = out["results"][name]
        assert_bounded(got, out["base_mb"])
        assert got["error"] == "InputError", (name, got)
        assert_bounded_message(got["message"], str(paths[name]), column)


# --------------------------------------------------------------------------------------------
# 2. Whole-string checks: a trailing newline or a control character fails every name
# --------------------------------------------------------------------------------------------

BAD_ENDINGS = {"newline": "\n", "cr": "\r", "crlf": "\r\n", "tab": "\t", "nul": "\x00", "unit_sep": "\x1f"}
BAD_ENDINGS |= {"nel": "\x85", "line_sep": "\u2028", "vertical_tab": "\x0b", "del": "\x7f"}

#: key -> a valid value of it (as YAML gives it), spoilt by appending a bad ending
CONFIG_STRINGS = {
    "species": "Testus_testus",
    "reference.transcriptome": "tx.fa",
    "metadata.file": "m.tsv",
    "metadata.library_strategy": "RNA-Seq",
    "metadata.library_source": "TRANSCRIPTOMIC",
    "metadata.layout": "PAIRED",
    "batch.max_bytes": "40G",
    "disk.min_free": "1G",
}
#: key -> (valid list or mapping, a function spoiling it with an ending)
CONFIG_COLLECTIONS = {
    "metadata.exclude_runs": (["SRR1"], lambda e: ["SRR1" + e]),
    "download.sources": (["ena", "sra"], lambda e: ["ena", "sra" + e]),
    "download.mirrors (prefix)": (
        {"https://ftp.sra.ebi.ac.uk/": "http://127.0.0.1:9/"},
        lambda e: {"https://ftp.sra.ebi.ac.uk/" + e: "http://127.0.0.1:9/"},
    ),
    "download.mirrors (replacement)": (
        {"https://ftp.sra.ebi.ac.uk/": "http://127.0.0.1:9/"},
        lambda e: {"https://ftp.sra.ebi.ac.uk/": "http://127.0.0.1:9/" + e},
    ),
}


def _spoilt_config(d: Path, key: str, value) -> Path:
    doc = _doc()
    section, _, sub = key.partition(".")
    sub = sub.split(" ")[0]
    if sub:
        doc.setdefault(section, {})[sub] = value
    else:
        doc[section] = value
    return _write_config(d, "spoilt.yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=False))


@pytest.mark.parametrize("ending", BAD_ENDINGS.values(), ids=BAD_ENDINGS.keys())
@pytest.mark.parametrize("key", list(CONFIG_STRINGS) + list(CONFIG_COLLECTIONS))
def test_config_names_are_checked_whole(tmp_path, key, ending):
    d = _inputs(tmp_path)
    if key in CONFIG_STRINGS:
        good, bad = CONFIG_STRINGS[key], CONFIG_STRINGS[key] + ending
        shown = excerpt(bad)
    else:
        good, spoil = CONFIG_COLLECTIONS[key]
        bad = spoil(ending)
        shown = excerpt(ending)[1:-1]  # the escaped ending, as the message quotes it
    load_species_config(_spoilt_config(d, key, good))  # the clean value is fine
    p = _spoilt_config(d, key, bad)
    msg = _config_error(p)
    name = key.split(" ")[0]
    assert_bounded_message(msg, str(p.resolve()), f"'{name}'", shown)


@pytest.mark.parametrize("ending", ["\x00", "\x1b", "\x7f"], ids=["nul", "escape", "del"])
def test_a_query_may_span_lines_but_holds_no_other_control_character(tmp_path, ending):
    d = _inputs(tmp_path)
    text = _with_value("metadata.query", "QUERY", drop_file=True)
    ok = _write_config(d, "ok.yaml", text.replace("QUERY", '"tax_eq(1)\\n AND\\tlibrary_source=\\"x\\"\\r\\n"'))
    assert load_species_config(ok).metadata_query.startswith("tax_eq(1)\n")
    bad = _spoilt_config(d, "metadata.query", "tax_eq(1)" + ending)
    text = yaml.safe_dump({**_doc(), "metadata": {"query": "tax_eq(1)" + ending}})
    bad.write_text(text)
    assert_bounded_message(_config_error(bad), "'metadata.query'", excerpt("tax_eq(1)" + ending))


@pytest.mark.parametrize("value", ["0x10", "2.5e+2", ".nan", ".inf", "-.inf"])
def test_numbers_must_be_finite(tmp_path, value):
    d = _inputs(tmp_path)
    p = _write_config(d, "n.yaml", _with_value("quant.fragment_length", "NUM").replace("NUM", value))
    if value in ("0x10", "2.5e+2"):
        load_species_config(p)
    else:
        assert_bounded_message(_config_error(p), "'quant.fragment_length'", "finite")


@pytest.mark.parametrize("ending", BAD_ENDINGS.values(), ids=BAD_ENDINGS.keys())
def test_check_accession_and_file_names_are_whole(ending):
    from pipeline.model import check_accession, species_problem

    with pytest.raises(InputError):
        check_accession("SRR1" + ending)
    assert species_problem("Sp" + ending)
    assert species_problem("Sp") is None
    assert file_name_problem("SRR1_1.fastq.gz" + ending)


@pytest.mark.parametrize(
    "fields",
    [["run_accession\n"], ["run_accession", "fastq_ftp\x00"], "run_accession,fastq_ftp\n", "run_accession,\tfastq_ftp"],
)
def test_ena_field_names_are_checked_whole(fields):
    assert "fields=run_accession" in search_url("x", fields=["run_accession", "fastq_ftp"])
    assert "fastq_ftp" in search_url("x", fields="run_accession, fastq_ftp")
    with pytest.raises(EnaError, match="invalid ENA field name"):
        search_url("tax_eq(1)", fields=fields)


ENA_GOOD = {
    "run_accession": "SRR1",
    "library_layout": "SINGLE",
    "read_count": "10",
    "base_count": "500",
    "fastq_ftp": "ftp.sra.ebi.ac.uk/vol1/fastq/SRR1/SRR1.fastq.gz",
    "fastq_md5": "0" * 32,
    "fastq_bytes": "100",
    "sra_ftp": "ftp.sra.ebi.ac.uk/vol1/srr/SRR1/SRR1",
    "sra_md5": "1" * 32,
    "sra_bytes": "200",
}


def _table(path: Path, columns: list[str], rows: list[dict], sep="\t", eol="\n", quoting=csv.QUOTE_MINIMAL) -> Path:
    """A table written by the csv module (by default it quotes a cell holding \\n, but not \\r)."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator=eol, quoting=quoting)
    w.writerow(columns)
    w.writerows([r.get(c, "") for c in columns] for r in rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return path


#: column -> its valid value in row SRR2 (spoilt by appending a bad ending)
ENA_CELLS = {
    "run_accession": "SRR2",
    "fastq_md5": "a" * 32,
    "fastq_bytes": "100",
    "read_count": "10",
    "library_layout": "SINGLE",
    "fastq_ftp": "ftp.sra.ebi.ac.uk/vol1/fastq/SRR2/SRR2.fastq.gz",
    "sra_ftp": "ftp.sra.ebi.ac.uk/vol1/srr/SRR2/SRR2",
    "sra_md5": "b" * 32,
    "sra_bytes": "200",
}
TABLE_ENDINGS = {k: v for k, v in BAD_ENDINGS.items() if k not in ("nul", "cr", "crlf")}
TABLE_ENDINGS |= {"cr_inside": "\r"}  # quoted by the csv writer, so it stays in the cell


@pytest.mark.parametrize("sep", [",", "\t"], ids=["csv", "tsv"])
@pytest.mark.parametrize("ending", TABLE_ENDINGS.values(), ids=TABLE_ENDINGS.keys())
@pytest.mark.parametrize("column", ENA_CELLS)
def test_metadata_cells_are_checked_whole(tmp_path, column, ending, sep):
    good = dict(ENA_GOOD, **ENA_CELLS)
    p = _table(tmp_path / "ok.txt", list(ENA_GOOD), [ENA_GOOD, good], sep=sep)
    assert [r.run for r in load_runs(p)[0]] == ["SRR1", "SRR2"]
    bad = dict(good, **{column: ENA_CELLS[column] + ending})
    quoting = csv.QUOTE_ALL if ending == "\r" else csv.QUOTE_MINIMAL  # a bare \r would end the row
    p = _table(tmp_path / "bad.txt", list(ENA_GOOD), [ENA_GOOD, bad], sep=sep, quoting=quoting)
    with pytest.raises(InputError) as e:
        load_runs(p)
    msg = str(e.value)
    assert_bounded_message(msg, str(p), "row 2", column, excerpt(ENA_CELLS[column] + ending)[:-1])
    if column != "run_accession":
        assert "run SRR2" in msg


def test_crlf_tables_still_read(tmp_path):
    """Line ends are the csv module's business, not a cell's: a CRLF table is fine."""
    p = _table(tmp_path / "crlf.tsv", list(ENA_GOOD), [ENA_GOOD, dict(ENA_GOOD, **ENA_CELLS)], eol="\r\n")
    runs, _ = load_runs(p)
    assert [r.run for r in runs] == ["SRR1", "SRR2"] and runs[1].sra_bytes == 200


# --------------------------------------------------------------------------------------------
# 3. URLs and file names from every table format
# --------------------------------------------------------------------------------------------

HOST = "https://ftp.example.org/vol1"
HOSTILE_URLS = {
    "dotdot": f"{HOST}/../../etc/SRR2.fastq.gz",
    "dotdot_scheme_less": "ftp.sra.ebi.ac.uk/vol1/../../etc/SRR2.fastq.gz",
    "pct_dotdot": f"{HOST}/%2e%2e/%2e%2e/etc/SRR2.fastq.gz",
    "pct_dotdot_upper": f"{HOST}/%2E%2E/SRR2.fastq.gz",
    "pct_dot_mixed": f"{HOST}/.%2e/SRR2.fastq.gz",
    "pct_dotdot_double": f"{HOST}/%252e%252e/SRR2.fastq.gz",
    "dotdot_path_param": f"{HOST}/..;/SRR2.fastq.gz",
    "dot_segment": f"{HOST}/./SRR2.fastq.gz",
    "pct_slash": f"{HOST}/..%2F..%2Fetc%2FSRR2.fastq.gz",
    "pct_slash_lower": f"{HOST}/a%2fSRR2.fastq.gz",
    "pct_slash_double": f"{HOST}/a%252FSRR2.fastq.gz",
    "pct_backslash": f"{HOST}/..%5C..%5CSRR2.fastq.gz",
    "backslash": f"{HOST}/..\\..\\SRR2.fastq.gz",
    "name_dot": f"{HOST}/SRR2/.",
    "name_dotdot": f"{HOST}/SRR2/..",
    "name_empty": f"{HOST}/SRR2/",
    "name_newline": f"{HOST}/SRR2%0A.fastq.gz",
    "name_nul": f"{HOST}/SRR2%00.fastq.gz",
    "name_escape": f"{HOST}/SRR2%1b%5b31m.fastq.gz",
    "no_host": "https:///SRR2/SRR2.fastq.gz",
    "file_dotdot": "file:///data/%2e%2e/etc/SRR2.fastq.gz",
    "local_dotdot": "/data/../etc/SRR2.fastq.gz",
}
LEGIT_URLS = {
    "ena_scheme_less": "ftp.sra.ebi.ac.uk/vol1/fastq/SRR2/SRR2.fastq.gz",
    "https": f"{HOST}/SRR2/SRR2.fastq.gz",
    "encoded_space": f"{HOST}/my%20reads/SRR2.fastq.gz",
    "dots_in_names": f"{HOST}/SRR2..x/SRR2..fastq.gz",
    "query_string": f"{HOST}/SRR2.fastq.gz?x=../y",
    "s3": "s3://sra-pub-run-odp/sra/SRR2/SRR2",
    "gs": "gs://sra-pub-zq-103/SRR2/SRR2.lite.1",
    "aspera": "fasp.sra.ebi.ac.uk:/vol1/fastq/SRR2/SRR2.fastq.gz",
}


def _ena_fastq(value):
    return ["run_accession", "fastq_ftp"], {"run_accession": "SRR2", "fastq_ftp": value}


def _ena_sra(value):
    return ["run_accession", "fastq_ftp", "sra_ftp"], {"run_accession": "SRR2", "fastq_ftp": "", "sra_ftp": value}


def _integrate(column):
    def make(value):
        row = {"run": "SRR2", "read1_path": "reads/A_1.fq.gz", "read2_path": "unavailable", column: value}
        return ["run", "read1_path", "read2_path"], row

    return make


def _amalgkit(column):
    def make(value):
        row = {"run": "SRR2", "lib_layout": "PAIRED", "is_sampled": "yes", "exclusion": "no", column: value}
        return ["run", "lib_layout", "is_sampled", "exclusion", "AWS_Link", "NCBI_Link"], row

    return make


def _runinfo(value):
    return ["Run", "LibraryLayout", "download_path"], {"Run": "SRR2", "LibraryLayout": "PAIRED", "download_path": value}


#: "format column" -> (column, make(value) -> (columns, row))
URL_COLUMNS = {
    "ena fastq_ftp": ("fastq_ftp", _ena_fastq),
    "ena sra_ftp": ("sra_ftp", _ena_sra),
    "integrate read1_path": ("read1_path", _integrate("read1_path")),
    "integrate read2_path": ("read2_path", _integrate("read2_path")),
    "amalgkit AWS_Link": ("AWS_Link", _amalgkit("AWS_Link")),
    "amalgkit NCBI_Link": ("NCBI_Link", _amalgkit("NCBI_Link")),
    "runinfo download_path": ("download_path", _runinfo),
}


def _url_table(tmp_path: Path, where: str, value: str) -> Path:
    (tmp_path / "reads").mkdir(exist_ok=True)
    (tmp_path / "reads" / "A_1.fq.gz").write_bytes(b"x")
    columns, row = URL_COLUMNS[where][1](value)
    return _table(tmp_path / "table.tsv", columns, [row])


@pytest.mark.parametrize("value", HOSTILE_URLS.values(), ids=HOSTILE_URLS.keys())
@pytest.mark.parametrize("where", URL_COLUMNS)
def test_hostile_urls_and_names_are_rejected_when_the_metadata_is_read(tmp_path, where, value):
    column = URL_COLUMNS[where][0]
    if where.startswith("integrate") and "://" not in value:
        pytest.skip("a plain path in an integrate table is a local file relative to the table (see below)")
    p = _url_table(tmp_path, where, value)
    with pytest.raises(InputError) as e:
        load_runs(p)
    msg = str(e.value)
    entry = value.split(";")[0] if where.startswith("ena") else value  # ENA lists files split by ';'
    assert_bounded_message(msg, str(p), "run SRR2", f"column {column}", excerpt(entry))


@pytest.mark.parametrize("value", LEGIT_URLS.values(), ids=LEGIT_URLS.keys())
@pytest.mark.parametrize("where", URL_COLUMNS)
def test_legitimate_urls_keep_working_in_every_url_column(tmp_path, where, value):
    if where.startswith("integrate") and "://" not in value:
        pytest.skip("a plain path in an integrate table is a local file relative to the table")
    (run,), _ = load_runs(_url_table(tmp_path, where, value))
    urls = [f.url for f in run.files] + run.sra_urls
    assert any(u.endswith(value.rsplit("/", 1)[-1]) for u in urls), urls


def test_integrate_local_paths_may_climb_to_files_beside_the_table(tmp_path):
    """A plain local path is the user's own file, relative to the table: '..' is fine there."""
    (tmp_path / "reads").mkdir()
    (tmp_path / "reads" / "A_1.fq.gz").write_bytes(b"x")
    (tmp_path / "meta").mkdir()
    p = _table(
        tmp_path / "meta" / "t.tsv", ["run", "read1_path"], [{"run": "SRR2", "read1_path": "../reads/A_1.fq.gz"}]
    )
    (run,), _ = load_runs(p)
    assert run.files[0].url == (tmp_path / "reads" / "A_1.fq.gz").as_uri() and run.files[0].name == "A_1.fq.gz"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "x\n.fq", "x\x00", "\t"])
def test_safe_name_refuses_instead_of_renaming(name):
    assert file_name_problem(name)
    with pytest.raises(DownloadError):
        safe_name(name, "SRR1_1.fastq.gz")


def test_safe_name_still_renames_only_unusual_but_harmless_names():
    assert safe_name("SRR1_1.fastq.gz", "fb") == "SRR1_1.fastq.gz"
    assert safe_name("my reads+1.fq.gz", "fb") == "fb"
    assert safe_name(".hidden.fq.gz", "fb") == "fb"


HOSTILE_PREFIXES = {k: v for k, v in HOSTILE_URLS.items() if k != "name_empty"}  # ".../SRR2/" is a fine prefix


@pytest.mark.parametrize("value", HOSTILE_PREFIXES.values(), ids=HOSTILE_PREFIXES.keys())
@pytest.mark.parametrize("side", ["prefix", "replacement"])
def test_hostile_mirror_prefixes_are_refused(tmp_path, value, side):
    d = _inputs(tmp_path)
    pair = {value: "http://127.0.0.1:9/"} if side == "prefix" else {"https://ftp.sra.ebi.ac.uk/": value}
    p = _spoilt_config(d, "download.mirrors", pair)
    assert_bounded_message(_config_error(p), str(p.resolve()), "'download.mirrors'")


@pytest.mark.parametrize("value", ["https://h/x/../tx.fa", "https://h/%2e%2e/tx.fa", "https://h/a%2Ftx.fa"])
def test_a_hostile_transcriptome_url_is_refused(tmp_path, value):
    d = _inputs(tmp_path)
    p = _spoilt_config(d, "reference.transcriptome", value)
    assert_bounded_message(_config_error(p), str(p.resolve()), "'reference.transcriptome'", excerpt(value))


# --------------------------------------------------------------------------------------------
# 4. Every TSV the pipeline writes stays one row per run, whatever its cells hold
# --------------------------------------------------------------------------------------------

REASONS = [
    "tab\there",
    "line\nbreak",
    "windows\r\nline end",
    "old mac\rline end",
    "quoted \"like this\" and 'this'",
    '"starts with a quote',
    "back\\slash and a literal \\t",
    "nul\x00 unit\x1f record\x1e escape\x1b",
    "vertical\x0btab form\x0cfeed next\x85line",
    "unicode\u2028line\u2029paragraph é 数据",
    "ends with a tab\t",
    "",
]


def _unescape(cell: str) -> str:
    return cell.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _read_back(path: Path, n_rows: int, n_fields: int) -> list[list[str]]:
    """Read ``path`` three ways; each must see ``n_rows`` rows of ``n_fields``. Returns csv's rows."""
    import pandas as pd

    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == n_rows + 1, text  # splitlines breaks at \x0b, \x85, \u2028 too
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert len(rows) == n_rows + 1 and all(len(r) == n_fields for r in rows), rows
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    assert frame.shape == (n_rows, n_fields), frame
    assert frame.values.tolist() == rows[1:]
    return rows[1:]


def test_failed_runs_tsv_keeps_one_row_per_run(tmp_path):
    failures = [(f"SRR{i + 1}", i, "quant" if i % 2 else "download", reason) for i, reason in enumerate(REASONS)]
    p = tmp_path / "failed_runs.tsv"
    p.write_text(failed_runs_text(failures), encoding="utf-8", newline="")
    assert p.read_text(encoding="utf-8").startswith("run\tbatch\tstage\treason\n")
    rows = _read_back(p, len(failures), 4)
    assert [(r[0], int(r[1]), r[2], _unescape(r[3])) for r in rows] == failures
    assert rows[0][3] == "tab\\there" and rows[2][3] == "windows\\r\\nline end"


def test_failed_runs_tsv_with_no_failures_is_the_header():
    assert failed_runs_text([]) == "run\tbatch\tstage\treason\n"


def test_skipped_tsv_keeps_one_row_per_run(tmp_path):
    skipped = [(f"SRR{i + 1}", reason) for i, reason in enumerate(REASONS)]
    p = tmp_path / "skipped.tsv"
    write_skipped_tsv(skipped, p)
    rows = _read_back(p, len(skipped), 2)
    assert [(r[0], _unescape(r[1])) for r in rows] == skipped


def test_runs_tsv_keeps_one_row_per_run(tmp_path):
    runs = [
        Run(run=f"SRR{i + 1}", files=[RemoteFile(url=f"https://h/{i}/{reason}", name=f"SRR{i + 1}.fastq.gz", bytes=5)])
        for i, reason in enumerate(REASONS)
    ]
    runs.append(Run(run="SRR99", sra_urls=["https://a/SRR99\n", "https://b/\tSRR99"]))
    p = tmp_path / "runs.tsv"
    write_runs_tsv(runs, p)
    rows = _read_back(p, len(runs), 7)
    assert [_unescape(r[6]) for r in rows[:-1]] == [f"https://h/{i}/{reason}" for i, reason in enumerate(REASONS)]
    assert _unescape(rows[-1][6]) == "https://a/SRR99\n;https://b/\tSRR99"


def test_the_tsv_rule_is_one_function():
    """Every writer above goes through tsv_text / tsv_cell; the rule itself, once."""
    assert tsv_cell(None) == "" and tsv_cell(3) == "3"
    assert tsv_cell("a\tb\nc\r\\d\x00\u2028") == "a\\tb\\nc\\r\\\\d\\x00\\u2028"
    assert tsv_text(["h"], [["x\ny"]]) == "h\nx\\ny\n"
    for reason in REASONS:
        assert _unescape(tsv_cell(reason)) == reason


def test_exclude_runs_from_a_config_reach_the_metadata_reader(tmp_path):
    """The config normalises exclude_runs to a set; load_runs checks the selection again and must
    take what the config made of it."""
    from pipeline.inputs.metadata import load_runs
    from pipeline.inputs.species_config import load_species_config

    table = tmp_path / "meta.tsv"
    table.write_text(
        "run_accession\tlibrary_layout\tfastq_ftp\nSRR1\tSINGLE\th/SRR1.fastq.gz\nSRR2\tSINGLE\th/SRR2.fastq.gz\n"
    )
    fasta = tmp_path / "tx.fa"
    fasta.write_text(">t1\nACGT\n")
    yml = tmp_path / "Sp.yaml"
    yml.write_text(
        f"species: Sp\nreference: {{transcriptome: {fasta}}}\nmetadata: {{file: {table}, exclude_runs: [SRR2]}}\n"
    )
    cfg = load_species_config(yml)
    runs, skipped = load_runs(cfg.metadata_file, cfg.selection)
    assert [r.run for r in runs] == ["SRR1"] and skipped == [("SRR2", "exclude_runs lists this run")]
