"""kallisto behind one module: argument lists are built by pure functions, then run.

kallisto 0.48 copies its command line into ``run_info.json`` (the ``"call"`` field) without
escaping it, so a double quote, a backslash or a control character in any path it was given makes
that file invalid JSON. The pipeline therefore runs ``kallisto quant`` inside the run's own
temporary folder with ``-o .`` and every other path relative to that folder (see
:func:`relative_to`), which keeps the pipeline's own folder names out of ``"call"``; and it reads
``run_info.json`` with :func:`parse_run_info`, which recovers the fields from a file whose only
fault is that unescaped ``"call"`` (paths that still carry such characters: the executable's,
or a FASTQ's outside the output tree). Every path is one element of an argument list; nothing goes through a
shell.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Optional, Sequence

from ..reads.fastq import feed_fastq

#: The last field kallisto 0.48 writes into run_info.json, the only one holding text from the caller.
_CALL_RE = re.compile(r'\n[ \t]*"call"[ \t]*:[ \t]*"')
_CALL_END_RE = re.compile(r'"\s*\}\s*$')
#: A stranded library's flag (``quant.strandedness`` fr / rf); an unstranded one has none.
STRAND_FLAGS = {"fr": "--fr-stranded", "rf": "--rf-stranded"}


class RunInfoError(ValueError):
    """``run_info.json`` cannot be read, even allowing for kallisto's unescaped ``"call"``."""


def path_arg(path) -> str:
    """``path`` as one command-line argument: never taken for an option (``-x`` becomes ``./-x``)."""
    s = os.fspath(path)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    if not s:
        raise ValueError("an empty path is not an argument")
    return "./" + s if s.startswith("-") else s


def relative_to(path, cwd) -> str:
    """``path`` relative to the folder ``cwd``, both resolved first (symlinks followed), so that a
    process started in ``cwd`` opens the same file whatever links lie on either path."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(cwd))


def index_args(fasta, index_path, exe: str = "kallisto", kmer: Optional[int] = None) -> list[str]:
    args = [exe, "index", "-i", path_arg(index_path)]
    if kmer:
        args += ["-k", str(int(kmer))]
    return args + [path_arg(fasta)]


def quant_args(
    index,
    outdir,
    fastqs: Sequence,
    threads: int = 1,
    single: bool = False,
    fragment_length: Optional[float] = None,
    fragment_sd: Optional[float] = None,
    exe: str = "kallisto",
    strand: Optional[str] = None,
) -> list[str]:
    """``kallisto quant`` for one run: two FASTQs paired, one FASTQ ``--single -l -s``;
    ``strand`` ``fr`` or ``rf`` adds ``--fr-stranded`` or ``--rf-stranded`` (None or
    ``unstranded``: neither)."""
    fastqs = [path_arg(f) for f in fastqs]
    args = [exe, "quant", "-i", path_arg(index), "-o", path_arg(outdir), "-t", str(int(threads))]
    if strand and strand != "unstranded":
        if strand not in STRAND_FLAGS:
            raise ValueError(f"unknown strand {strand!r}: expected fr, rf or unstranded")
        args.append(STRAND_FLAGS[strand])
    if single:
        if len(fastqs) != 1:
            raise ValueError(f"single-end quant takes one FASTQ, got {len(fastqs)}")
        if not fragment_length or not fragment_sd:
            raise ValueError("single-end quant needs fragment_length and fragment_sd")
        args += ["--single", "-l", f"{fragment_length:g}", "-s", f"{fragment_sd:g}"]
    elif len(fastqs) != 2:
        raise ValueError(f"paired-end quant takes two FASTQs, got {len(fastqs)}")
    return args + fastqs


def pseudo_batch_args(
    index, outdir, batch_file, threads: int = 1, flags: Sequence[str] = (), exe: str = "kallisto"
) -> list[str]:
    """``kallisto pseudo --bus -b BATCH``: paired runs listed in ``batch_file`` (``ID FASTQ1 FASTQ2``),
    mapped after one load of the index. Writes each run's equivalence-class counts (``output.bus``),
    fragment lengths (``flens.txt``) and the equivalence classes (``index.saved``, without k-mers)."""
    bad = [f for f in flags if f not in STRAND_FLAGS.values()]
    if bad:
        raise ValueError(f"kallisto pseudo takes no per-run flag {bad[0]!r} (only {', '.join(STRAND_FLAGS.values())})")
    args = [exe, "pseudo", "--bus", "-i", path_arg(index), "-o", path_arg(outdir), "-b", path_arg(batch_file)]
    return args + ["-t", str(int(threads)), *flags]


def quant_tcc_args(index, outdir, tcc_file, fld_file, exe: str = "kallisto") -> list[str]:
    """``kallisto quant-tcc`` for one run: its EM on ``tcc_file`` (``EC COUNT`` lines) with its fragment
    length histogram ``fld_file``; writes ``abundance.tsv`` as ``kallisto quant`` does."""
    return [
        exe,
        "quant-tcc",
        "-i",
        path_arg(index),
        "-f",
        path_arg(fld_file),
        "-o",
        path_arg(outdir),
        path_arg(tcc_file),
    ]


def version_args(exe: str = "kallisto") -> list[str]:
    return [exe, "version"]


def parse_version(text: str) -> Optional[str]:
    """``0.48.0`` from ``kallisto, version 0.48.0``."""
    m = re.search(r"version\s+(\S+)", text)
    return m.group(1) if m else None


def command_line(args: Sequence[str], cwd=None) -> str:
    """``args`` as a shell would need them typed (for logs only: nothing is run through a shell)."""
    line = shlex.join(args)
    return f"(cd {shlex.quote(os.fspath(cwd))} && {line})" if cwd is not None else line


def start(args: list[str], log: IO[bytes], cwd=None) -> subprocess.Popen:
    """Start kallisto (in ``cwd`` when given) with stdout+stderr appended to the open file ``log``.

    A relative executable path (``bin/kallisto``) is made absolute first: it names a file from
    the caller's folder, not from ``cwd``. Raises FileNotFoundError when there is no such program.
    """
    args = list(args)
    if cwd is not None and os.sep in args[0] and not os.path.isabs(args[0]):
        args[0] = os.path.abspath(args[0])
    log.write(("$ " + command_line(args, cwd) + "\n").encode("utf-8", "replace"))
    log.flush()
    try:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
    except FileNotFoundError:
        log.write(f"executable not found: {args[0]}\n".encode("utf-8", "replace"))
        raise


def run(args: list[str], log_path, cwd=None) -> int:
    """Run kallisto (see :func:`start`) with its output appended to ``log_path``; return the exit
    code (127 when the executable is not found)."""
    return run_fed(args, (), log_path, cwd)[1]


def run_fed(args: list[str], feeds: Sequence[tuple], log_path, cwd=None) -> tuple[list[Future], int]:
    """Run kallisto (see :func:`start`) on FIFOs in place of its FASTQ files. ``feeds`` pairs each
    file with the FIFO (made already) that stands for it in ``args``; one thread per pair
    decompresses and counts the file and writes the plain FASTQ into the FIFO
    (:func:`~pipeline.reads.fastq.feed_fastq`), so kallisto does no decompression and the count
    costs no second read. Returns each file's count, in ``feeds``' order (a Future: its records, or
    FastqError), and the exit code (127 when the executable is not found). Every file is read to its
    end, whether kallisto took it all or not."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, len(feeds)), thread_name_prefix="kallisto-feed") as pool:
        with open(log_path, "ab") as log:
            try:
                proc: Optional[subprocess.Popen] = start(args, log, cwd)
            except FileNotFoundError:
                proc = None

        def alive() -> bool:
            return proc is not None and proc.poll() is None

        counts = [pool.submit(feed_fastq, src, into, alive) for src, into in feeds]
        rc = proc.wait() if proc is not None else 127
    return counts, rc


def parse_run_info(text: str) -> tuple[dict, bool]:
    """The fields of a ``run_info.json`` text, and whether the text had to be repaired to get them.

    kallisto 0.48 writes its own fields (numbers, its version, a date) and then, last, ``"call"``:
    the command line copied between quotes without escaping. A path holding ``"``, ``\\`` or a
    control character makes the file invalid JSON, and one holding ``", "n_processed": 9, "x": "``
    valid JSON with other numbers. So kallisto's fields are always taken from the text before
    ``"call"``, parsed as JSON. When the whole text is valid JSON with exactly those fields and a
    ``"call"``, it is taken as it is (also what :func:`run_info_text` writes); otherwise ``"call"``
    is the text between its opening quote and the quote before the closing brace, verbatim, and the
    second value is true. A text without that layout must be valid JSON; anything else (a truncated
    file, a fault before ``"call"``) raises RunInfoError.
    """
    whole: Optional[dict] = None
    cause = ""
    try:
        loaded = json.loads(text)
        if isinstance(loaded, dict):
            whole = loaded
        else:
            cause = f"a JSON {type(loaded).__name__}, not an object"
    except ValueError as e:
        cause = f"invalid JSON ({e})"
    m = _CALL_RE.search(text)
    end = _CALL_END_RE.search(text, m.end()) if m else None
    if not m or not end:
        if whole is None:
            raise RunInfoError(f'{cause}, and not kallisto\'s layout with an unescaped "call" last either')
        return whole, False
    head = text[: m.start()].rstrip()
    try:
        info = json.loads((head[:-1] if head.endswith(",") else head) + "\n}")
    except ValueError as e:
        raise RunInfoError(f'{cause or "valid JSON"}, but the fields before "call" are not ({e})') from None
    if not isinstance(info, dict) or "call" in info:
        raise RunInfoError(f'{cause or "valid JSON"}, but not kallisto\'s layout with "call" last')
    if whole is not None and "call" in whole and {k: v for k, v in whole.items() if k != "call"} == info:
        return whole, False
    info["call"] = text[m.end() : end.start()]
    return info, True


def run_info_text(info: dict) -> str:
    """``info`` as valid JSON laid out as kallisto lays out ``run_info.json`` (tab-indented, same order)."""
    return json.dumps(info, indent="\t", ensure_ascii=False) + "\n"


def load_run_info(outdir) -> tuple[dict, bool]:
    """The fields of ``outdir/run_info.json`` and whether it was invalid JSON (see :func:`parse_run_info`).

    Raises RunInfoError naming the file when it cannot be read even so.
    """
    path = Path(outdir) / "run_info.json"
    text = path.read_bytes().decode("utf-8", "replace")
    try:
        return parse_run_info(text)
    except RunInfoError as e:
        raise RunInfoError(f"{path}: {e}") from None


def read_run_info(outdir) -> dict:
    """The fields of ``outdir/run_info.json``, also when kallisto wrote its ``"call"`` unescaped."""
    return load_run_info(outdir)[0]
