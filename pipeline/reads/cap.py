"""``download.max_bp``: keep only the first N bases' worth of reads of a run (amalgkit's max_bp).

The whole files are downloaded and verified first (an md5 only checks whole files); then the
first spots are kept until their bases (both mates counted) reach ``max_bp``, reading the mates in
lockstep so pairs stay pairs. The capped files replace the originals atomically. Reading a run to
the cap also checks it: mates of different lengths, a record that is not FASTQ or a truncated
gzip raise CapError.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from ..files import staged_path
from . import gz


class CapError(Exception):
    pass


def _open(path, mode, like=None):
    """``path`` opened as gzip when it (or ``like``, the file it will replace) ends in ``.gz``."""
    if not gz.is_gz(like or path):
        return open(path, mode)
    return gz.open_read(path) if mode == "rb" else gz.open_write(path)


def _spots(ins, paths):
    """The mates' records side by side, one list of 4-line records per spot; CapError when the
    mates disagree in length or a record is not FASTQ."""
    n = 0
    while True:
        records = [[fh.readline() for _ in range(4)] for fh in ins]
        ends = [not r[0] for r in records]
        if all(ends):
            return
        if any(ends):
            raise CapError(f"mates differ in read count after {n} spots: {', '.join(map(str, paths))}")
        for rec in records:
            if not rec[0].startswith(b"@") or not rec[2].startswith(b"+"):
                raise CapError(f"not a FASTQ record at spot {n + 1} in {paths[0]}")
        n += 1
        yield records


def _take(paths: list, max_bp: int, tmps: list | None) -> dict:
    """Read spots until their bases reach ``max_bp`` (writing them to ``tmps`` when given)."""
    spots = bases = 0
    capped = False
    with ExitStack() as stack:
        ins = [stack.enter_context(_open(p, "rb")) for p in paths]
        outs = [stack.enter_context(_open(t, "wb", like=p)) for t, p in zip(tmps, paths)] if tmps else None
        for records in _spots(ins, paths):
            if bases >= max_bp:
                capped = True
                break
            if outs:
                for rec, out in zip(records, outs):
                    out.writelines(rec)
            bases += sum(len(rec[1].rstrip(b"\r\n")) for rec in records)
            spots += 1
    return {"spots": spots, "bases": bases, "capped": capped}


def cap_reads(paths: list, max_bp: int, over: bool = False) -> dict:
    """Cap the FASTQ ``paths`` (1 or 2 mates) to about ``max_bp`` bases.

    Returns {"spots": kept, "bases": kept bases, "capped": whether anything was dropped}. Files
    already under the cap are left untouched. ``over`` says the metadata already puts the run
    above the cap: the capped copy is then written in the one pass. Otherwise the files are first
    read without writing (a run under the cap, the usual case for a cap meant for the few huge
    runs, is not recompressed for nothing), and only a run found over the cap is read again and
    written.
    """
    paths = [Path(p) for p in paths]
    try:
        with ExitStack() as stack:
            tmps = [stack.enter_context(staged_path(p, "cap")) for p in paths]
            if not over:
                seen = _take(paths, max_bp, None)
                if not seen["capped"]:
                    return seen
            kept = _take(paths, max_bp, tmps)
            if not kept["capped"]:
                for t in tmps:  # nothing was dropped: the originals stay
                    t.unlink()
            return kept
    except gz.READ_ERRORS as e:
        raise CapError(f"cannot read {paths[0]}: {e}") from None
