"""Building small species set-ups for tests: a YAML, an ENA-style metadata table, a luigi call."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LUIGI = str(Path(sys.executable).with_name("luigi"))
ENA_COLUMNS = [
    "run_accession",
    "library_layout",
    "library_strategy",
    "library_source",
    "scientific_name",
    "read_count",
    "base_count",
    "fastq_ftp",
    "fastq_md5",
    "fastq_bytes",
]


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def ena_row(run: str, files: list, url_prefix: str, read_count=None, layout=None, names=None) -> dict:
    """One ENA filereport row for local ``files`` to be served at ``url_prefix/NAME``."""
    names = names or [Path(f).name for f in files]
    return {
        "run_accession": run,
        "library_layout": layout or ("PAIRED" if len(files) == 2 else "SINGLE"),
        "library_strategy": "RNA-Seq",
        "library_source": "TRANSCRIPTOMIC",
        "scientific_name": "Testus testus",
        "read_count": "" if read_count is None else str(read_count),
        "base_count": "",
        "fastq_ftp": ";".join(f"{url_prefix}/{n}" for n in names),
        "fastq_md5": ";".join(md5(f) for f in files),
        "fastq_bytes": ";".join(str(Path(f).stat().st_size) for f in files),
    }


def write_metadata(path, rows: list[dict], columns=ENA_COLUMNS) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_species(config_dir, species: str, transcriptome, metadata_file, **sections) -> Path:
    """A species YAML; ``sections`` update the defaults, e.g. batch={"size": 2}."""
    doc = {
        "species": species,
        "reference": {"transcriptome": str(transcriptome)},
        "metadata": {"file": str(metadata_file)},
        "batch": {"size": 2},
        "download": {"parallel": 2},
        "quant": {"threads": 1, "fragment_length": 200, "fragment_sd": 20},
    }
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            doc[k].update(v)
        else:
            doc[k] = v
    path = Path(config_dir) / f"{species}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def luigi_args(config_dir, output_dir, *extra, scheduler=("--local-scheduler",)) -> list[str]:
    return [
        LUIGI,
        "--module",
        "pipeline",
        "MultiSpecies",
        "--config-dir",
        str(config_dir),
        "--output-dir",
        str(output_dir),
        *scheduler,
        *extra,
    ]


def run_luigi(config_dir, output_dir, *extra, timeout=300, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        luigi_args(config_dir, output_dir, *extra, **kw),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def files_under(root) -> set[str]:
    root = Path(root)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def tree_snapshot(root) -> dict[str, float]:
    """path -> mtime of every file below root (to prove a re-run wrote nothing)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
