"""The first spots of a run, copied to small FASTQ files: the sample its strandedness is found from.

Only the head of each file is read (mates in lockstep), so the sample costs a fraction of the
run's quantification whatever the run's size. The same pass says whether every quality in the
sample is one value, as in SRA Lite's normalised qualities (NCBI replaces each base's quality by
one value, 30 for a base that passed, in its "lite" files).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Optional

from . import gz
from .fastq import FastqError


@dataclass
class ReadSample:
    files: list[Path]  # one per mate, plain FASTQ (none when only read)
    spots: int  # spots copied (fewer than asked when the run is shorter)
    one_quality: bool  # every base of every read sampled has the same quality character
    quality: str  # that character, or "" when they differ (or nothing was read)


def _head_lines(fh, path, n: int) -> list[bytes]:
    """The first ``4 n`` lines of ``fh`` (fewer at its end); FastqError for a broken stream."""
    try:
        return list(islice(fh, 4 * n))
    except gz.READ_ERRORS as e:
        raise FastqError(f"unreadable or truncated FASTQ in {path}: {e}") from None


def _first_bad_record(lines: list[bytes]) -> Optional[int]:
    """The 0-based index of the first record of ``lines`` that is not FASTQ, or None."""
    if all(h.startswith(b"@") for h in lines[0::4]) and all(p.startswith(b"+") for p in lines[2::4]):
        if len(lines) % 4 == 0 and all(q.rstrip(b"\r\n") for q in lines[3::4]):
            return None
    for k in range(0, len(lines), 4):
        rec = lines[k : k + 4]
        if len(rec) < 4 or not rec[0].startswith(b"@") or not rec[2].startswith(b"+") or not rec[3].rstrip(b"\r\n"):
            return k // 4
    return None


#: spots read per mate in one go (bounds the memory a large ``quant.strand_sample`` takes)
CHUNK = 8192


def sample_head(fastqs: list, n: int, dest_dir=None) -> ReadSample:
    """Copy the first ``n`` spots of ``fastqs`` (1 or 2 mates) to ``dest_dir/sample_{1,2}.fastq.gz``
    (without ``dest_dir``, only read them: their qualities are all this is asked for).

    FastqError, naming the file, for a record that is not FASTQ, mates that end at different
    spots within the sample, or a gzip stream that breaks off before ``n`` spots were read. The
    heads are read :data:`CHUNK` spots at a time as lines (``islice``), checked record by record
    only where the quick check over a chunk fails."""
    if n < 1:
        raise ValueError(f"a sample needs at least one spot, got {n}")
    files = [Path(dest_dir) / f"sample_{i}.fastq.gz" for i in range(1, len(fastqs) + 1)] if dest_dir is not None else []
    if files:
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
    spots, first, mixed = 0, b"", False
    with ExitStack() as stack:
        ins = [stack.enter_context(gz.open_read(p)) for p in fastqs]
        outs = [stack.enter_context(gz.open_write(p)) for p in files]  # a quarter of the bytes
        while spots < n:
            heads = [_head_lines(fh, path, min(CHUNK, n - spots)) for fh, path in zip(ins, fastqs)]
            got = min(len(h) for h in heads) // 4
            for lines, path in zip(heads, fastqs):
                bad = _first_bad_record(lines[: 4 * got + 4])
                if bad is not None and bad <= got:
                    raise FastqError(f"{path}: not a FASTQ record at spot {spots + bad + 1}")
            if len({len(h) for h in heads}) > 1:
                raise FastqError(f"mates differ in read count after {spots + got} spots: {', '.join(map(str, fastqs))}")
            for out, lines in zip(outs, heads):
                out.write(b"".join(lines))  # one compress call a chunk, not one a line
            if not mixed:
                quals = b"".join(q.rstrip(b"\r\n") for lines in heads for q in lines[3::4])
                first = first or quals[:1]
                mixed = bool(quals) and quals.count(first) != len(quals)
            spots += got
            if got < CHUNK and spots < n:
                break
    one = spots > 0 and bool(first) and not mixed
    return ReadSample(files=files, spots=spots, one_quality=one, quality=first.decode() if one else "")
