"""Building small species set-ups for tests: a YAML, an ENA-style metadata table, a luigi call."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.testing.simulate import METADATA_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
LUIGI = str(Path(sys.executable).with_name("luigi"))
#: the columns of an ENA read_run table as the project's simulator writes them
ENA_COLUMNS = list(METADATA_COLUMNS)


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


def sizes_of(root, pattern: str) -> list[int]:
    """The sizes of the files below ``root`` matching ``pattern``, read while a pipeline runs: a
    ``.part`` renamed into place between the walk and its ``stat`` is left out, not an error."""
    sizes = []
    for p in Path(root).rglob(pattern):
        try:
            sizes.append(p.stat().st_size)
        except FileNotFoundError:
            pass
    return sizes


def tree_snapshot(root) -> dict[str, float]:
    """path -> mtime of every file below root (to prove a re-run wrote nothing)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def loopback_species(config_dir, species: str, ds: dict, server, **sections) -> Path:
    """The YAML of a simulated dataset (``simulate.make_species_dataset``) served by a loopback
    FileServer: ENA's host mirrored to it, ENA FASTQ only, no free-space margin; ``sections``
    update those."""
    download = {"mirrors": {"https://ftp.sra.ebi.ac.uk/": server.url + "/"}, "sources": ["ena"]}
    sections["download"] = download | sections.get("download", {})
    sections.setdefault("disk", {"min_free": 0})
    return write_species(config_dir, species, ds["transcriptome"], ds["metadata"], **sections)


def env_without_config(**extra) -> dict:
    """This process's environment without LUIGI_CONFIG_PATH, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"} | extra


def status_cli(*args) -> subprocess.CompletedProcess:
    """``python -m pipeline.status ARGS`` from the project root."""
    return subprocess.run([sys.executable, "-m", "pipeline.status", *map(str, args)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 60.0) -> bool:
    """Poll ``predicate`` every 50 ms until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
