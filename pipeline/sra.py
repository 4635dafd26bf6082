"""The ``.sra`` route: a local ``.sra`` file to FASTQ with ``fasterq-dump``, offline.

``fasterq-dump`` is always given the absolute path of a local file, never a bare accession (a
name that is not an existing file is looked up at NCBI over the network), and ``prefetch`` is never
used: the pipeline fetches the ``.sra`` file itself (``download.fetch``), verified, then converts it.

Everything the tool writes stays inside the run's output folder. ``sra_to_fastq`` runs it in a fresh
``DEST/.RUN.fqd.tmp/`` folder holding its output (``out/``), its own temp files (``-t tmp/``, where
it makes ``fasterq.tmp.HOST.PID/``), the working directory and, for the child only, ``HOME`` and
``NCBI_SETTINGS``. That folder is removed whatever happens (exit 3 on "output file exists" leaves its
``fasterq.tmp.*`` folder behind, for one). Only the final FASTQs are renamed into ``DEST``.

Measured with sra-toolkit 3.0.3 (Debian), strace'd on a local file:

* It writes nothing to ``HOME`` or the working directory: it only *reads* ``/etc/ncbi/*.kfg`` and
  ``$HOME/.ncbi/user-settings.mkfg`` (or the file named by ``NCBI_SETTINGS`` instead).
* It does touch the network even for a local file: a cloud probe (DNS for
  ``metadata.google.internal``, waiting up to 5 s, then ``GET http://169.254.169.254/...`` waiting
  up to 0.5 s). ``/libs/cloud/provider = "n"`` in the settings file stops it (0 connections), so each
  call gets a private settings file with that line, and ``HOME`` pointing inside the temp folder so
  no cache or config can land in the user's home. The user's own ``~/.ncbi`` settings are not read.
* Output names come from the *file* name, not the run (``x.part`` gives ``x.part_1.fastq``), so the
  outputs are picked by suffix. The summary ("spots read : 10,000" ...) goes to stderr.
* Exit codes: 0 on success; 3 for the aligned cSRA ``SRR2096940.sra`` whose references are remote
  ("can't open CM000681.1 as a RefSeq or as a WGS"), and 3 again when an output file already exists
  and ``--force`` is absent (hence ``--force``: the output folder is ours alone).
* ``--split-3`` writes ``RUN_1``/``RUN_2`` for spots with both reads and ``RUN.fastq`` for reads whose
  mate is empty; that unpaired file is dropped for paired runs (kallisto quantifies pairs only), so
  the pairs kept can be fewer than the run's spots: the log says how many spots fasterq-dump read.
* 454 runs (``SRR045450``, ``SRR053325``): with ``--skip-technical`` one spot of 4 reads becomes one
  biological read in ``RUN.fastq`` (adapter/key/linker reads dropped): single-end.

Compression (``[fasterq_dump] gzip``, default **on**). Figures on SRRHOXC (10,000 pairs of 50 bp,
2-core machine, medians of 7): fasterq-dump alone 0.060 s (``-e 1`` or ``-e 2``) giving 3.93 MB of
plain FASTQ; gzip both mates with the stdlib at level 1: 0.018 s one after the other, 0.010 s in two
threads (786 kB, 20.0 % of plain); level 3: 0.028 s (17.8 %); level 6: 0.096 s (14.9 %). The
``gzip`` 1.12 binary is slower than the in-process zlib 1.2.13 at every level (level 1: 0.030 s,
two processes 0.015 s); ``pigz`` is not installed. kallisto 0.48 quant: 0.017 s on plain, 0.023 s on
.gz (a 98 MB copy: 0.19 s vs 0.35 s with the tiny HOXC index; with a real transcriptome index the
pseudoalignment dominates and the gap shrinks); ``abundance.tsv`` is byte-identical either way.
The whole ``sra_to_fastq`` call: 0.062 s plain, 0.074 s gzipped with ``threads=2`` (0.099 s with 1).
Chosen: gzip at level 1 with the stdlib, mates in parallel when ``threads`` > 1, because a batch's
reads wait on disk until the whole batch is downloaded and converted before kallisto starts, so
files 5x smaller matter more than ~20 % more conversion time; and the files then have the same
names and form as the ENA route's (``RUN_1.fastq.gz``). Set ``gzip = false`` where disk is plentiful
and CPU is short. (HOXC's qualities are all 'I', so real reads compress less well than 20 %.)
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import luigi

from .download import SAFE_NAME_RE
from .runlog import RunLog

SRA_MAGIC = b"NCBI.sra"
GZIP_LEVEL = 1  # see the figures above: level 3 saves 2 % more for 55 % more time
TMP_SUFFIX = ".fqd.tmp"
NCBI_SETTINGS_TEXT = (
    "# written by rnaseq-batch-pipeline for one fasterq-dump call on a local file\n"
    '/libs/cloud/provider = "n"\n'  # no cloud-instance probe (DNS + 169.254.169.254)
    '/libs/cloud/report_instance_identity = "false"\n'
)
STDERR_TAIL_LINES = 2
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*\s+")
_STAT_RE = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9 -]*?)\s*:\s*([\d,]+)\s*$")
_MATE_RE = re.compile(r"^(.+)_(\d+)\.fastq$")


class SraError(Exception):
    """A ``.sra`` file could not be turned into FASTQ. The message names the run/file and the reason."""


class fasterq_dump(luigi.Config):
    """``[fasterq_dump]`` in luigi.cfg."""

    binary = luigi.Parameter(default="fasterq-dump", description="fasterq-dump executable")
    gzip = luigi.BoolParameter(default=True, description="gzip the FASTQs (stdlib, level 1); see pipeline/sra.py")


def is_sra_file(path) -> bool:
    """True when the file's first 8 bytes are ``NCBI.sra`` (the KAR archive every ``.sra`` file is)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SRA_MAGIC)) == SRA_MAGIC
    except OSError:
        return False


def _describe_start(head: bytes) -> str:
    """What a file that is not a ``.sra`` file looks like, from its first bytes."""
    if not head:
        return "an empty file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<!doctype", b"<html", b"<")):
        return "an XML/HTML error body, not a .sra file"
    if text.startswith((b"{", b"[")):
        return "a JSON body, not a .sra file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file (a .fastq.gz?), not a .sra file"
    if head.startswith(b"@"):
        return "a FASTQ text file, not a .sra file"
    if head.startswith(b">"):
        return "a FASTA text file, not a .sra file"
    return f"bytes {head[:16]!r}, not a .sra file (those start with {SRA_MAGIC!r})"


def check_sra_file(path) -> None:
    """Raise SraError unless ``path`` is a readable file starting with ``NCBI.sra``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except FileNotFoundError:
        raise SraError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SraError(f"{path}: is a directory, not a .sra file") from None
    except OSError as e:
        raise SraError(f"{path}: cannot read: {e.strerror or e}") from None
    if not head.startswith(SRA_MAGIC):
        raise SraError(f"{path}: starts with {_describe_start(head)}")


def fasterq_dump_args(sra_path, outdir, tmpdir, threads: int = 1, exe: str = "fasterq-dump") -> list[str]:
    """``fasterq-dump`` on one local file; every path absolute so a file is never taken for an accession."""
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return [exe, "--split-3", "--skip-technical", "-O", os.path.abspath(outdir), "-t", os.path.abspath(tmpdir),
            "-e", str(threads), "--force", os.path.abspath(sra_path)]


def pick_outputs(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Choose among the names of non-empty files fasterq-dump wrote: (FASTQs mate 1 first, ignored).

    ``X_1.fastq`` + ``X_2.fastq`` are a pair (an unpaired ``X.fastq`` beside them is ignored); a lone
    ``X.fastq`` is single-end. Raises SraError for no FASTQ, a mate without the other, a third read
    per spot (``X_3.fastq``: barcodes or index reads, not a pair to quantify) or two single files.
    """
    mates: dict[int, list[str]] = {}
    singles, other = [], []
    for name in sorted(names):
        m = _MATE_RE.match(name)
        if m:
            mates.setdefault(int(m.group(2)), []).append(name)
        elif name.endswith(".fastq"):
            singles.append(name)
        else:
            other.append(name)
    if any(n > 2 for n in mates) or any(len(v) > 1 for v in mates.values()):
        found = ", ".join(n for v in mates.values() for n in v)
        raise SraError(f"unexpected read files {found}: more than two reads per spot")
    if 1 in mates and 2 in mates:
        return [mates[1][0], mates[2][0]], singles + other
    if mates:
        only = next(iter(mates.values()))[0]
        raise SraError(f"{only} without its mate: cannot tell paired from single-end")
    if len(singles) == 1:
        return singles, other
    if len(singles) > 1:
        raise SraError(f"several single-end files: {', '.join(singles)}")
    raise SraError("no reads: fasterq-dump wrote no FASTQ with any record")


def parse_stats(stderr: str) -> dict:
    """fasterq-dump's summary lines ('spots read      : 10,000') as {"spots read": 10000, ...}."""
    stats = {}
    for line in stderr.splitlines():
        m = _STAT_RE.match(line)
        if m:
            stats[m.group(1).strip()] = int(m.group(2).replace(",", ""))
    return stats


def stderr_tail(stderr: str, n: int = STDERR_TAIL_LINES) -> str:
    """The last ``n`` non-empty stderr lines, timestamps cut, plus the first warning/error when earlier.

    fasterq-dump's first 'warn:'/'err:' line usually holds the cause; its last lines the call chain.
    """
    lines = [_TIMESTAMP_RE.sub("", ln.strip())[:300] for ln in stderr.splitlines() if ln.strip()]
    tail = lines[-n:]
    first = next((ln for ln in lines if " warn: " in ln or " err: " in ln), None)
    if first and first not in tail:
        tail = [first, "..."] + tail
    return " | ".join(tail) if tail else "(no stderr)"


def _gzip_file(src: Path, dst: Path, level: int = GZIP_LEVEL) -> None:
    """``src`` to ``dst`` gzipped (no name, mtime 0: the same input gives the same bytes); deletes ``src``."""
    with open(src, "rb") as fin, open(dst, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    src.unlink()


def _child_env(work: Path) -> dict:
    home = work / "home"
    home.mkdir()
    settings = work / "ncbi-settings.mkfg"
    settings.write_text(NCBI_SETTINGS_TEXT)
    return dict(os.environ, HOME=str(home), NCBI_SETTINGS=str(settings))


def sra_to_fastq(sra_path, dest_dir, run: str, threads: int = 1, log: Optional[RunLog] = None,
                 compress: Optional[bool] = None, exe: Optional[str] = None) -> list[Path]:
    """Convert the local ``sra_path`` of ``run`` into FASTQ files in ``dest_dir``; return them, mate 1 first.

    Paired: ``RUN_1.fastq.gz`` + ``RUN_2.fastq.gz``; single: ``RUN.fastq.gz`` (``.fastq`` when
    ``compress`` is false; ``None`` takes ``[fasterq_dump] gzip``). Raises SraError naming the run,
    the file and the reason (for a failed fasterq-dump: its exit code and the end of its stderr).
    Nothing but the final files is left in ``dest_dir``, whether it succeeds or not.
    """
    log = log or RunLog(None)
    if not SAFE_NAME_RE.match(run or "") or ".." in run:
        raise SraError(f"invalid run name {run!r}: it names the output files")
    cfg = fasterq_dump()
    exe = exe or cfg.binary
    compress = cfg.gzip if compress is None else bool(compress)
    sra_path = Path(sra_path).absolute()
    dest_dir = Path(dest_dir).absolute()
    try:
        check_sra_file(sra_path)
    except SraError as e:
        log.write(f"fasterq-dump: {run}: {e}")
        raise SraError(f"{run}: {e}") from None
    dest_dir.mkdir(parents=True, exist_ok=True)
    work = dest_dir / f".{run}{TMP_SUFFIX}"
    t0 = time.monotonic()
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        out, tmp = work / "out", work / "tmp"
        out.mkdir()
        tmp.mkdir()
        args = fasterq_dump_args(sra_path, out, tmp, threads=threads, exe=exe)
        log.write("$ " + " ".join(args))
        try:
            proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, cwd=work,
                                  env=_child_env(work))
        except FileNotFoundError:
            raise SraError(f"{run}: {exe} not found: install sra-toolkit (or set [fasterq_dump] binary)") from None
        stdout = proc.stdout.decode(errors="replace")
        stderr = proc.stderr.decode(errors="replace")
        for line in (stdout + stderr).splitlines():
            if line.strip():
                log.write(f"fasterq-dump: {line.rstrip()}")
        if proc.returncode != 0:
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited {proc.returncode}")
            raise SraError(f"{run}: fasterq-dump {how} on {sra_path}: {stderr_tail(stderr)}")
        sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
        try:
            chosen, ignored = pick_outputs(n for n, s in sizes.items() if s > 0)
        except SraError as e:
            raise SraError(f"{run}: {sra_path}: {e}") from None
        for name in ignored:
            log.write(f"fasterq-dump: {run}: ignoring {name} ({sizes[name]} bytes"
                      f"{', unpaired reads' if name.endswith('.fastq') else ''})")
        if len(chosen) == 2:
            finals = [f"{run}_1.fastq", f"{run}_2.fastq"]
        else:
            finals = [f"{run}.fastq"]
        staged = []
        if compress:
            finals = [f + ".gz" for f in finals]
            staged = [work / f for f in finals]
            workers = max(1, min(int(threads), len(chosen)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(_gzip_file, [out / c for c in chosen], staged))
        else:
            staged = [out / c for c in chosen]
        paths = [dest_dir / f for f in finals]
        for src, dst in zip(staged, paths):
            os.replace(src, dst)
        stats = parse_stats(stderr)
        log.write(f"fasterq-dump: {run}: ok, {'paired' if len(paths) == 2 else 'single'}, "
                  f"{stats.get('spots read', '?')} spots read, {stats.get('reads written', '?')} reads written, "
                  f"{sum(p.stat().st_size for p in paths)} bytes in {', '.join(p.name for p in paths)}, "
                  f"{time.monotonic() - t0:.2f} s")
        return paths
    except SraError as e:
        log.write(f"fasterq-dump: {e}")
        raise
    except OSError as e:
        log.write(f"fasterq-dump: {run}: {e}")
        raise SraError(f"{run}: {sra_path}: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
