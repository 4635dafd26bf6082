"""Quantifying one run with kallisto reading its reads from FIFOs fed straight from HTTP: the
reads never touch the disk.

The FIFOs are made in the run's temporary quant folder (``quant/.RUN.tmp/``, under the staged
names ``RUN_1.fastq.gz``... so kallisto's log names the run), one thread per mate feeds its FIFO
(:func:`pipeline.fetch.stream.stream_into`), and kallisto reads both at once: it reads the
mates in lockstep, so a mate waiting for its connection to resume holds kallisto, and kallisto
holds the other mate's writer on a full FIFO, without either blocking the other for good.
kallisto 0.48 ``stat``\\ s each input and opens it once, so a FIFO is read like a file.

The folder is renamed into place only when every stream ended with the size and md5 the metadata
gives and kallisto's ``n_processed`` equals the read count; otherwise it is thrown away. A body
that fails beyond its retries, or whose bytes are wrong, stops kallisto at once; no kallisto
process or writer thread outlives the call.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Optional

from .. import fifo
from ..fetch.retry import RetryPolicy
from ..fetch.sources import staged_names
from ..fetch.stream import ReaderGone, Streamed, mismatch, stream_into
from ..files import staged_path
from ..model import PAIRED, SINGLE, ExpectedFailure, RemoteFile, Run, RunQuant
from ..runlog import RunLog
from . import kallisto
from .quantify import _check_output, keep_tool_log, quant_args_in, write_run_record

#: ``RunQuant.stage`` of a run whose streamed quantification failed.
STAGE = "stream"


def writer_threads(run: str) -> str:
    """The name prefix of the threads that feed ``run``'s FIFOs."""
    return f"stream-{run}"


class StreamFailed(ExpectedFailure):
    """A streamed run gave no result: its body could not be had, was wrong, or kallisto failed."""


def quantify_streamed(
    run: Run,
    index,
    quant_dir,
    *,
    threads: int,
    fragment_length: float,
    fragment_sd: float,
    mirrors: dict,
    policy: RetryPolicy,
    log: RunLog,
    extra: Optional[dict] = None,
    exe: str = "kallisto",
    progress: Optional[Callable[[int], None]] = None,
    strand: Optional[str] = None,
) -> RunQuant:
    """Stream ``run``'s FASTQ files (one or a pair: see
    :func:`pipeline.fetch.stream.file_mode_reason`) into kallisto, into ``quant_dir/RUN/`` when
    verified. Never raises for the run's own failure: the result says it (stage ``stream``)."""
    t0 = time.monotonic()
    layout = PAIRED if len(run.files) == 2 else SINGLE
    result = RunQuant(run=run.run, layout=layout)
    names = staged_names(run.run, run.files, mirrors)
    try:
        with staged_path(Path(quant_dir) / run.run) as tmp:
            tmp.mkdir(parents=True)
            fifos = fifo.make(tmp, names)
            args = quant_args_in(tmp, index, fifos, threads, fragment_length, fragment_sd, exe, strand)
            log.write("quant (streamed): " + kallisto.command_line(args, tmp))
            try:
                got, rc = _feed_kallisto(run, args, tmp, fifos, mirrors, policy, log, progress)
                for p in fifos:
                    p.unlink()
                _check_output(tmp, rc, run.read_count, result, log)
            except (ExpectedFailure, ValueError, OSError):
                keep_tool_log(tmp, log)
                raise
            record = (extra or {}) | {"streamed": [dataclasses.asdict(g) for g in got]}
            write_run_record(tmp, result, names, run.read_count, args, record)
        result.status = "ok"
        log.write(f"quant (streamed): ok, n_processed={result.n_processed} p_pseudoaligned={result.p_pseudoaligned}")
    except (ExpectedFailure, ValueError, OSError) as e:
        result.reason, result.stage = str(e), STAGE
        log.write(f"quant (streamed): failed, nothing kept: {e}")
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _feed_kallisto(
    run: Run,
    args: list[str],
    tmp: Path,
    fifos: list[Path],
    mirrors: dict,
    policy: RetryPolicy,
    log: RunLog,
    progress: Optional[Callable[[int], None]],
) -> tuple[list[Streamed], int]:
    """Start kallisto on ``fifos`` and feed each from its file's URL in a thread of its own;
    return what each stream delivered (verified) and kallisto's exit code. On any failure
    kallisto is killed and every writer stopped before StreamFailed is raised."""
    cancel = threading.Event()
    with open(tmp / "kallisto.log", "ab") as tool_log:
        proc = kallisto.start(args, tool_log, cwd=tmp)

    def stop() -> None:
        cancel.set()
        _stop(proc)

    try:
        with ThreadPoolExecutor(max_workers=len(fifos), thread_name_prefix=writer_threads(run.run)) as pool:
            futures = {
                pool.submit(
                    stream_into,
                    rf,
                    into,
                    mirrors=mirrors,
                    policy=policy,
                    log=log,
                    cancel=cancel,
                    reader_alive=lambda: proc.poll() is None,
                    progress=progress,
                ): (i, rf)
                for i, (rf, into) in enumerate(zip(run.files, fifos))
            }
            try:
                got = _verified(futures, proc, stop=stop)
            except BaseException:
                stop()
                raise
        return [got[i] for i in range(len(fifos))], proc.wait()
    finally:
        stop()


def _verified(
    futures: dict[Future, tuple[int, RemoteFile]], proc: subprocess.Popen, stop: Callable[[], None]
) -> dict[int, Streamed]:
    """Each stream's result as it ends, checked against the metadata.

    The first failure stops kallisto and the other writers (``stop``); once all have ended,
    StreamFailed names the cause. A body that could not be had or was wrong is the cause, before
    kallisto stopping early: a mate that fails closes its FIFO, kallisto then exits on the short
    input, and the other mate's writer sees it gone, in either order."""
    got: dict[int, Streamed] = {}
    causes: list[str] = []  # a body's own failure
    effects: list[str] = []  # kallisto stopped reading
    for fut in as_completed(futures):
        i, rf = futures[fut]
        try:
            streamed = fut.result()
        except fifo.Cancelled:
            continue  # stopped because of another failure, which is raised
        except ReaderGone as e:
            effects.append(f"kallisto quant exited {proc.wait()} before reading all of its input ({e})")
        except ExpectedFailure as e:
            causes.append(str(e))
        else:
            problem = mismatch(rf, streamed)
            if problem:
                causes.append(problem)
            else:
                got[i] = streamed
        if causes or effects:
            stop()
    if causes or effects:
        raise StreamFailed((causes + effects)[0])
    return got


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
