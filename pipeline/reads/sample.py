"""The first spots of a run, copied to small FASTQ files: the sample its strandedness is found from.

Only the head of each file is read (mates in lockstep), so the sample costs a fraction of the
run's quantification whatever the run's size. The same pass says whether every quality in the
sample is one value, as in SRA Lite's normalised qualities (NCBI replaces each base's quality by
one value, 30 for a base that passed, in its "lite" files).
"""

from __future__ import annotations

import gzip
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .fastq import FastqError


@dataclass
class ReadSample:
    files: list[Path]  # one per mate, plain FASTQ (none when only read)
    spots: int  # spots copied (fewer than asked when the run is shorter)
    one_quality: bool  # every base of every read sampled has the same quality character
    quality: str  # that character, or "" when they differ (or nothing was read)


def _open_read(path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def _next_spot(ins, fastqs) -> list[list[bytes]]:
    """The next record of each mate (empty lines at the end); FastqError for a broken stream."""
    try:
        return [[fh.readline() for _ in range(4)] for fh in ins]
    except (EOFError, OSError, zlib.error) as e:
        raise FastqError(f"unreadable or truncated FASTQ in {', '.join(map(str, fastqs))}: {e}") from None


def sample_head(fastqs: list, n: int, dest_dir=None) -> ReadSample:
    """Copy the first ``n`` spots of ``fastqs`` (1 or 2 mates) to ``dest_dir/sample_{1,2}.fastq``
    (without ``dest_dir``, only read them: their qualities are all this is asked for).

    FastqError, naming the file, for a record that is not FASTQ, mates that end at different
    spots within the sample, or a gzip stream that breaks off before ``n`` spots were read."""
    if n < 1:
        raise ValueError(f"a sample needs at least one spot, got {n}")
    outs_paths = []
    if dest_dir is not None:
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        outs_paths = [Path(dest_dir) / f"sample_{i}.fastq" for i in range(1, len(fastqs) + 1)]
    spots, first, mixed = 0, -1, False
    with ExitStack() as stack:
        ins = [stack.enter_context(_open_read(p)) for p in fastqs]
        outs = [stack.enter_context(open(p, "wb")) for p in outs_paths]
        while spots < n:
            records = _next_spot(ins, fastqs)
            ends = [not r[0] for r in records]
            if all(ends):
                break
            if any(ends):
                raise FastqError(f"mates differ in read count after {spots} spots: {', '.join(map(str, fastqs))}")
            for k, (rec, path) in enumerate(zip(records, fastqs)):
                if not rec[0].startswith(b"@") or not rec[2].startswith(b"+") or not rec[3]:
                    raise FastqError(f"{path}: not a FASTQ record at spot {spots + 1}")
                qual = rec[3].rstrip(b"\r\n")
                if not mixed and qual:
                    if first < 0:
                        first = qual[0]
                    mixed = bool(qual.strip(bytes([first])))
                if outs:
                    outs[k].writelines(rec)
            spots += 1
    one = spots > 0 and first >= 0 and not mixed
    return ReadSample(files=outs_paths, spots=spots, one_quality=one, quality=chr(first) if one else "")
