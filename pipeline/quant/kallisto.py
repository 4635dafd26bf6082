"""kallisto behind one module: argument lists are built by pure functions, then run."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Optional, Sequence


def index_args(fasta, index_path, exe: str = "kallisto", kmer: Optional[int] = None) -> list[str]:
    args = [exe, "index", "-i", str(index_path)]
    if kmer:
        args += ["-k", str(kmer)]
    return args + [str(fasta)]


def quant_args(
    index,
    outdir,
    fastqs: Sequence,
    threads: int = 1,
    single: bool = False,
    fragment_length: Optional[float] = None,
    fragment_sd: Optional[float] = None,
    exe: str = "kallisto",
) -> list[str]:
    """``kallisto quant`` for one run: two FASTQs paired, one FASTQ ``--single -l -s``."""
    fastqs = [str(f) for f in fastqs]
    args = [exe, "quant", "-i", str(index), "-o", str(outdir), "-t", str(int(threads))]
    if single:
        if len(fastqs) != 1:
            raise ValueError(f"single-end quant takes one FASTQ, got {len(fastqs)}")
        if not fragment_length or not fragment_sd:
            raise ValueError("single-end quant needs fragment_length and fragment_sd")
        args += ["--single", "-l", f"{fragment_length:g}", "-s", f"{fragment_sd:g}"]
    elif len(fastqs) != 2:
        raise ValueError(f"paired-end quant takes two FASTQs, got {len(fastqs)}")
    return args + fastqs


def version_args(exe: str = "kallisto") -> list[str]:
    return [exe, "version"]


def parse_version(text: str) -> Optional[str]:
    """``0.48.0`` from ``kallisto, version 0.48.0``."""
    m = re.search(r"version\s+(\S+)", text)
    return m.group(1) if m else None


def run(args: list[str], log_path) -> int:
    """Run kallisto with stdout+stderr appended to ``log_path``; return the exit code."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(args) + "\n").encode())
        log.flush()
        try:
            return subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        except FileNotFoundError:
            log.write(f"executable not found: {args[0]}\n".encode())
            return 127


def read_run_info(outdir) -> dict:
    with open(Path(outdir) / "run_info.json") as fh:
        return json.load(fh)
