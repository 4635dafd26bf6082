"""The first spots of a run, copied to small FASTQ files: the sample its strandedness is found from.

Only the head of each file is read (mates in lockstep), so the sample costs a fraction of the
run's quantification whatever the run's size. The same pass says whether every quality in the
sample is one value, as in SRA Lite's normalised qualities (NCBI replaces each base's quality by
one value, 30 for a base that passed, in its "lite" files).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import gz
from .fastq import BLOCK, FastqError


@dataclass
class ReadSample:
    files: list[Path]  # one per mate, plain FASTQ (none when only read)
    spots: int  # spots copied (fewer than asked when the run is shorter)
    one_quality: bool  # every base of every read sampled has the same quality character
    quality: str  # that character, or "" when they differ (or nothing was read)


class _Lines:
    """The lines of an open FASTQ, without their ``\\n``, taken a few at a time: read in blocks
    and split at once. Iterating over the file's lines was most of a sample's cost; with this and
    the checks over joined lines a sample takes 0.45 × the time (README). FastqError, naming the
    file, for a gzip stream that breaks off."""

    def __init__(self, fh, path) -> None:
        self.fh, self.path = fh, path
        self.ready: list[bytes] = []  # whole lines read and not yet taken
        self.at = 0
        self.rest = b""  # the start of a line whose end is not read yet
        self.eof = False

    def take(self, k: int) -> list[bytes]:
        """The next ``k`` lines (fewer at the end of the file)."""
        while len(self.ready) - self.at < k and not self.eof:
            try:
                block = self.fh.read(BLOCK)
            except gz.READ_ERRORS as e:
                raise FastqError(f"unreadable or truncated FASTQ in {self.path}: {e}") from None
            lines = self.ready[self.at :]
            if block:
                parts = (self.rest + block).split(b"\n")
                self.rest = parts.pop()
                lines += parts
            else:
                self.eof = True
                if self.rest:  # a last line without its newline
                    lines.append(self.rest)
            self.ready, self.at = lines, 0
        got = self.ready[self.at : self.at + k]
        self.at += len(got)
        return got


def _all_start_with(lines: list[bytes], first: bytes) -> bool:
    """Every one of ``lines`` (none holding a newline) starts with the byte ``first``: counted over
    the lines joined, not tested one by one."""
    return (b"\n" + b"\n".join(lines)).count(b"\n" + first) == len(lines)


def _qualities(lines: list[bytes]) -> list[bytes]:
    """The quality lines of the records in ``lines`` (lines without their newline), without the
    ``\\r`` of a CRLF file."""
    quals = lines[3::4]
    return [q.rstrip(b"\r") for q in quals] if b"\r" in b"".join(quals) else quals


def _first_bad_record(lines: list[bytes]) -> Optional[int]:
    """The 0-based index of the first record of ``lines`` (lines without their newline) that is not
    FASTQ, or None."""
    if len(lines) % 4 == 0 and _all_start_with(lines[0::4], b"@") and _all_start_with(lines[2::4], b"+"):
        if all(_qualities(lines)):
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
    heads are read :data:`CHUNK` spots at a time (:class:`_Lines`), checked record by record only
    where the quick check over a chunk fails. The sample's lines are those of the files, each
    ended by a newline."""
    if n < 1:
        raise ValueError(f"a sample needs at least one spot, got {n}")
    files = [Path(dest_dir) / f"sample_{i}.fastq.gz" for i in range(1, len(fastqs) + 1)] if dest_dir is not None else []
    if files:
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
    spots, first, mixed = 0, b"", False
    with ExitStack() as stack:
        ins = [_Lines(stack.enter_context(gz.open_read(p)), p) for p in fastqs]
        outs = [stack.enter_context(gz.open_write(p)) for p in files]  # a quarter of the bytes
        while spots < n:
            heads = [lines.take(4 * min(CHUNK, n - spots)) for lines in ins]
            got = min(len(h) for h in heads) // 4
            for lines, path in zip(heads, fastqs):
                bad = _first_bad_record(lines[: 4 * got + 4])
                if bad is not None and bad <= got:
                    raise FastqError(f"{path}: not a FASTQ record at spot {spots + bad + 1}")
            if len({len(h) for h in heads}) > 1:
                raise FastqError(f"mates differ in read count after {spots + got} spots: {', '.join(map(str, fastqs))}")
            for out, lines in zip(outs, heads):
                if lines:
                    out.write(b"\n".join(lines) + b"\n")  # one compress call a chunk, not one a line
            if not mixed:
                quals = b"".join(q for lines in heads for q in _qualities(lines))
                first = first or quals[:1]
                mixed = bool(quals) and quals.count(first) != len(quals)
            spots += got
            if got < CHUNK and spots < n:
                break
    one = spots > 0 and bool(first) and not mixed
    return ReadSample(files=files, spots=spots, one_quality=one, quality=first.decode() if one else "")
