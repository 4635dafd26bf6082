"""``download.max_bp``: keep only the first N bases' worth of reads of a run (amalgkit's max_bp).

The whole files are downloaded and verified first (an md5 only checks whole files); then the
first spots are kept until their bases (both mates counted) reach ``max_bp``, reading the mates in
lockstep so pairs stay pairs. The capped files replace the originals atomically.
"""
from __future__ import annotations

import gzip
import os
from contextlib import ExitStack
from pathlib import Path


class CapError(Exception):
    pass


def _open(path, mode):
    return gzip.open(path, mode, compresslevel=1) if str(path).endswith(".gz") else open(path, mode)


def cap_reads(paths: list, max_bp: int) -> dict:
    """Cap the FASTQ ``paths`` (1 or 2 mates) to about ``max_bp`` bases.

    Returns {"spots": kept, "bases": kept bases, "capped": whether anything was dropped}.
    Files already under the cap are left untouched.
    """
    paths = [Path(p) for p in paths]
    tmps = [p.with_name(f".{p.name}.cap.tmp") for p in paths]
    spots = bases = 0
    capped = False
    try:
        with ExitStack() as stack:
            ins = [stack.enter_context(_open(p, "rb")) for p in paths]
            outs = [stack.enter_context(_open(t, "wb")) for t in tmps]
            while True:
                records = [[fh.readline() for _ in range(4)] for fh in ins]
                ends = [not r[0] for r in records]
                if all(ends):
                    break
                if any(ends):
                    raise CapError(f"mates differ in read count after {spots} spots: {', '.join(map(str, paths))}")
                if bases >= max_bp:
                    capped = True
                    break
                for rec, out in zip(records, outs):
                    if not rec[0].startswith(b"@") or not rec[2].startswith(b"+"):
                        raise CapError(f"not a FASTQ record at spot {spots + 1} in {paths[0]}")
                    out.writelines(rec)
                    bases += len(rec[1].rstrip(b"\r\n"))
                spots += 1
        if capped:
            for t, p in zip(tmps, paths):
                os.replace(t, p)
        return {"spots": spots, "bases": bases, "capped": capped}
    except (OSError, EOFError) as e:
        raise CapError(f"cannot read {paths[0]}: {e}") from None
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
