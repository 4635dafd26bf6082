"""The ``.sra`` route: a local ``.sra`` file to FASTQ with ``fasterq-dump``, offline.

``fasterq-dump`` is always given the absolute path of a local file, never a bare accession (which
it would look up at NCBI), and ``prefetch`` is never used: the pipeline fetches the ``.sra`` file
itself, verified, then converts it in a private temp folder inside the run's folder, with its own
``HOME`` and settings (no cloud probe). Only the final FASTQs are renamed into place; by default
they are gzipped (:mod:`pipeline.reads.gz`, level 1) so that both routes leave the same files. ``docs/measurements.md``
keeps what was measured of fasterq-dump 3.0.3 to choose this.

fasterq-dump 3.0.3 misreads some paths: with a non-ASCII character in the output folder's path it
names its files ``RUN_1.`` instead of ``RUN_1.fastq``, and with ``%`` in the input's path (``%20``,
``a%b``) it takes the file for an accession and fails ("invalid accession"). When a path is not
:func:`vdb_safe`, the tool is handed links in a private folder of the system's temp folder instead
(:func:`_vdb_view`); the data stays where it was, only the names differ.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

from ..files import temp_path
from ..model import ExpectedFailure
from ..reads import gz
from ..runlog import RunLog
from .transfer import SAFE_NAME_RE

SRA_MAGIC = b"NCBI.sra"
NCBI_SETTINGS_TEXT = (
    "# written by rnaseq-batch-pipeline for one fasterq-dump call on a local file\n"
    '/libs/cloud/provider = "n"\n'  # no cloud-instance probe (DNS + 169.254.169.254)
    '/libs/cloud/report_instance_identity = "false"\n'
)
STDERR_TAIL_LINES = 2
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*\s+")
_STAT_RE = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9 -]*?)\s*:\s*([\d,]+)\s*$")
_MATE_RE = re.compile(r"^(.+)_(\d+)\.fastq$")
#: Folders tried, in order, for the links of :func:`_vdb_view`.
VIEW_BASES = (None, "/tmp", "/var/tmp", "/dev/shm")  # None: tempfile.gettempdir()


class SraError(ExpectedFailure):
    """A ``.sra`` file could not be turned into FASTQ. The message names the run/file and the reason."""


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
    return [
        exe,
        "--split-3",
        "--skip-technical",
        "-O",
        os.path.abspath(outdir),
        "-t",
        os.path.abspath(tmpdir),
        "-e",
        str(threads),
        "--force",
        os.path.abspath(sra_path),
    ]


def vdb_safe(path) -> bool:
    """True when fasterq-dump takes ``path`` as it is: printable ASCII without ``%``.

    Quotes, ``$(...)``, ``;``, spaces, backslashes, ``#``, ``?`` and ``:`` were all read right by
    fasterq-dump 3.0.3; non-ASCII and ``%`` were not (see the module's docstring).
    """
    s = os.fspath(path)
    return isinstance(s, str) and "%" not in s and all(" " <= c <= "~" for c in s)


@contextmanager
def _vdb_view(work: Path, sra_path: Path, run: str, log: RunLog) -> Iterator[tuple[Path, Path]]:
    """``(work, sra_path)`` as paths fasterq-dump reads right: themselves when both are
    :func:`vdb_safe`, else links to them (``w`` and the file's name, or ``RUN.sra``) in a private
    folder (mode 0700) of the first :data:`VIEW_BASES` folder whose own path is safe. The links
    are removed when the block ends."""
    if vdb_safe(work) and vdb_safe(sra_path):
        yield work, sra_path
        return
    view: Optional[Path] = None
    for base in VIEW_BASES:
        base = base or tempfile.gettempdir()
        if not vdb_safe(os.path.abspath(base)):
            continue
        try:
            view = Path(tempfile.mkdtemp(prefix="rnaseq-batch-fqd-", dir=os.path.abspath(base)))
            break
        except OSError:
            continue
    if view is None:
        log.write(
            f"fasterq-dump: {run}: no temp folder with a plain path for links; giving fasterq-dump the paths as they are"
        )
        yield work, sra_path
        return
    name = sra_path.name if vdb_safe(sra_path.name) and sra_path.name != "w" else f"{run}.sra"
    links = [view / "w", view / name]
    try:
        os.symlink(work, links[0], target_is_directory=True)
        os.symlink(sra_path, links[1])
        log.write(
            f"fasterq-dump: {run}: a path holds non-ASCII or '%', which fasterq-dump misreads; it is given links "
            f"instead: {links[0]} -> {work}, {links[1]} -> {sra_path}"
        )
        yield links[0], links[1]
    finally:
        for link in links:
            try:
                link.unlink()
            except FileNotFoundError:
                pass
        try:
            view.rmdir()
        except OSError:
            pass


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


def _gzip_file(src: Path, dst: Path) -> None:
    """``src`` to ``dst`` gzipped (no name, mtime 0: the same input gives the same bytes); deletes ``src``."""
    with open(src, "rb") as fin, gz.open_write(dst) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    src.unlink()


def _child_env(work: Path, seen: Optional[Path] = None) -> dict:
    """fasterq-dump's own ``HOME`` and settings file, made in ``work``; ``seen`` is the path the
    tool is given for ``work`` (:func:`_vdb_view`), which its environment names."""
    home = work / "home"
    home.mkdir()
    settings = work / "ncbi-settings.mkfg"
    settings.write_text(NCBI_SETTINGS_TEXT)
    seen = seen or work
    return dict(os.environ, HOME=str(seen / home.name), NCBI_SETTINGS=str(seen / settings.name))


def version_args(exe: str = "fasterq-dump") -> list[str]:
    return [exe, "--version"]


def parse_version(text: str) -> Optional[str]:
    """``3.0.3`` from fasterq-dump's ``--version`` banner."""
    m = re.search(r"\b(\d+\.\d+\.\d+)\b", text)
    return m.group(1) if m else None


def sra_to_fastq(
    sra_path,
    dest_dir,
    run: str,
    threads: int = 1,
    log: Optional[RunLog] = None,
    compress: bool = True,
    exe: str = "fasterq-dump",
) -> list[Path]:
    """Convert the local ``sra_path`` of ``run`` into FASTQ files in ``dest_dir``; return them, mate 1 first.

    Paired: ``RUN_1.fastq.gz`` + ``RUN_2.fastq.gz``; single: ``RUN.fastq.gz`` (``.fastq`` when
    ``compress`` is false). Raises SraError naming the run,
    the file and the reason (for a failed fasterq-dump: its exit code and the end of its stderr).
    Nothing but the final files is left in ``dest_dir``, whether it succeeds or not.
    """
    log = log or RunLog(None)
    if not SAFE_NAME_RE.fullmatch(run or "") or ".." in run:
        raise SraError(f"invalid run name {run!r}: it names the output files")
    if os.sep in exe and not os.path.isabs(exe):
        exe = os.path.abspath(exe)  # it runs in its own folder: a relative path is the caller's
    compress = bool(compress)
    sra_path = Path(sra_path).absolute()
    dest_dir = Path(dest_dir).absolute()
    try:
        check_sra_file(sra_path)
    except SraError as e:
        log.write(f"fasterq-dump: {run}: {e}")
        raise SraError(f"{run}: {e}") from None
    dest_dir.mkdir(parents=True, exist_ok=True)
    work = temp_path(dest_dir / run, "fqd")
    t0 = time.monotonic()
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        out, tmp = work / "out", work / "tmp"
        out.mkdir()
        tmp.mkdir()
        with _vdb_view(work, sra_path, run, log) as (seen_work, seen_sra):
            args = fasterq_dump_args(seen_sra, seen_work / out.name, seen_work / tmp.name, threads=threads, exe=exe)
            log.write("$ " + shlex.join(args))
            try:
                proc = subprocess.run(
                    args, stdin=subprocess.DEVNULL, capture_output=True, cwd=work, env=_child_env(work, seen_work)
                )
            except FileNotFoundError:
                raise SraError(f"{run}: {exe} not found: install sra-toolkit (or set [fasterq_dump] binary)") from None
        stdout = proc.stdout.decode(errors="replace")
        stderr = proc.stderr.decode(errors="replace")
        for line in (stdout + stderr).splitlines():
            if line.strip():
                log.write(f"fasterq-dump: {line.rstrip()}")
        if proc.returncode != 0:
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
            raise SraError(f"{run}: fasterq-dump {how} on {sra_path}: {stderr_tail(stderr)}")
        sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
        try:
            chosen, ignored = pick_outputs(n for n, s in sizes.items() if s > 0)
        except SraError as e:
            raise SraError(f"{run}: {sra_path}: {e}") from None
        for name in ignored:
            log.write(
                f"fasterq-dump: {run}: ignoring {name} ({sizes[name]} bytes"
                f"{', unpaired reads' if name.endswith('.fastq') else ''})"
            )
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
        log.write(
            f"fasterq-dump: {run}: ok, {'paired' if len(paths) == 2 else 'single'}, "
            f"{stats.get('spots read', '?')} spots read, {stats.get('reads written', '?')} reads written, "
            f"{sum(p.stat().st_size for p in paths)} bytes in {', '.join(p.name for p in paths)}, "
            f"{time.monotonic() - t0:.2f} s"
        )
        return paths
    except SraError as e:
        log.write(f"fasterq-dump: {e}")
        raise
    except OSError as e:
        log.write(f"fasterq-dump: {run}: {e}")
        raise SraError(f"{run}: {sra_path}: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
