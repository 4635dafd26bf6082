"""One simulated run's reads: the fragment sampler behind :mod:`pipeline.testing.simulate`.

Stdlib only and driven by an explicit ``random.Random(seed)``: the same arguments give the same
bytes. Reads are cut by slicing pre-built transcript strings and their reverse complements, and
written in chunks with gzip level 1.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Optional, Sequence

from ..reads import gz

#: Library orientations: ``unstranded`` (either strand), ``fr`` (read 1 from the transcript's
#: strand, kallisto's ``--fr-stranded``, salmon's ISF/SF) and ``rf`` (read 1 from the opposite
#: strand: dUTP, kallisto's ``--rf-stranded``, salmon's ISR/SR).
STRANDS = ("unstranded", "fr", "rf")
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
_CHUNK = 50_000  # reads per write


def reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def _gzip_writer(path: str):
    """A binary gzip writer whose output depends only on the data (no name, mtime 0), and its file."""
    raw = open(path, "wb")
    return gz.writer(raw), raw


def file_md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_abundances(n: int, seed: int, sigma: float = 1.0) -> list:
    """Log-normal weights for ``n`` transcripts, fixed by ``seed``, so counts differ a lot."""
    rng = random.Random(f"abundance:{seed}")
    return [rng.lognormvariate(0.0, sigma) for _ in range(n)]


def simulate_run(
    transcripts: Sequence,
    out_prefix: str,
    n_reads: int,
    read_len: int,
    layout: str,
    seed: int,
    fragment_mean: float = 200,
    fragment_sd: float = 20,
    abundances: Optional[Sequence[float]] = None,
    run_name: Optional[str] = None,
    strand: str = "unstranded",
) -> dict:
    """Simulate one run's reads from ``transcripts`` (``[(id, seq), ...]``).

    ``layout`` "PAIRED" writes ``{out_prefix}_1.fastq.gz`` and ``{out_prefix}_2.fastq.gz`` (mate 2
    is the reverse complement of the fragment's other end: FR orientation); "SINGLE" writes
    ``{out_prefix}.fastq.gz``. Each fragment comes from a transcript drawn by ``abundances``
    (default: :func:`default_abundances` from ``seed``), has a length drawn from
    N(fragment_mean, fragment_sd) clipped to [read_len, transcript length], a uniform start and a
    random strand (``strand`` "unstranded"), or read 1 on the transcript's strand ("fr") or on the
    other ("rf"); the same random draws are made whatever ``strand``. Reads are named
    ``@{run_name}.{n}`` (run_name defaults to the basename of ``out_prefix``), qualities are all
    ``I``. Reads are shorter than ``read_len`` only for transcripts shorter than ``read_len``.

    Returns ``{"files", "md5", "bytes", "read_count" (spots/pairs), "base_count" (all mates)}``.
    """
    layout = layout.upper()
    if layout not in ("PAIRED", "SINGLE"):
        raise ValueError(f"layout must be PAIRED or SINGLE, not {layout!r}")
    if not transcripts:
        raise ValueError("no transcripts")
    if n_reads < 0 or read_len < 1:
        raise ValueError("need n_reads >= 0 and read_len >= 1")
    if abundances is None:
        abundances = default_abundances(len(transcripts), seed)
    if len(abundances) != len(transcripts):
        raise ValueError("abundances and transcripts differ in length")
    if any(a < 0 for a in abundances) or sum(abundances) <= 0:
        raise ValueError("abundances must be non-negative with a positive sum")
    if strand not in STRANDS:
        raise ValueError(f"strand must be one of {', '.join(STRANDS)}, not {strand!r}")
    if run_name is None:
        run_name = os.path.basename(out_prefix)

    seqs = [s for _, s in transcripts]
    rcs = [reverse_complement(s) for s in seqs]
    lens = [len(s) for s in seqs]
    cum = []
    total = 0.0
    for a in abundances:
        total += a
        cum.append(total)

    paired = layout == "PAIRED"
    if paired:
        files = [f"{out_prefix}_1.fastq.gz", f"{out_prefix}_2.fastq.gz"]
    else:
        files = [f"{out_prefix}.fastq.gz"]
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)

    rng = random.Random(seed)
    full_qual = "I" * read_len
    base_count = 0

    def generate():
        """Yield (mate1_text, mate2_text) per chunk of reads."""
        nonlocal base_count
        rand = rng.random
        gauss = rng.gauss
        done = 0
        while done < n_reads:
            k = min(_CHUNK, n_reads - done)
            picks = rng.choices(range(len(seqs)), cum_weights=cum, k=k)
            out1 = []
            out2 = []
            for j, t in enumerate(picks, start=done + 1):
                tlen = lens[t]
                frag = int(gauss(fragment_mean, fragment_sd) + 0.5)
                if frag > tlen:
                    frag = tlen
                if frag < read_len:
                    frag = min(read_len, tlen)
                start = int(rand() * (tlen - frag + 1))
                # Fragment is seq[start:start+frag]; its reverse complement is
                # rc[rstart:rstart+frag] with rstart = tlen - start - frag.
                rstart = tlen - start - frag
                fwd = seqs[t][start : start + read_len if read_len < frag else start + frag]
                rev = rcs[t][rstart : rstart + read_len if read_len < frag else rstart + frag]
                flip = rand() < 0.5
                if strand != "unstranded":
                    flip = strand == "fr"
                if flip:
                    r1, r2 = fwd, rev
                else:
                    r1, r2 = rev, fwd
                q = full_qual if len(r1) == read_len else "I" * len(r1)
                name = f"@{run_name}.{j}\n"
                out1.append(f"{name}{r1}\n+\n{q}\n")
                base_count += len(r1)
                if paired:
                    out2.append(f"{name}{r2}\n+\n{q}\n")
                    base_count += len(r2)
            done += k
            yield "".join(out1), "".join(out2)

    tmps = [f + ".tmp" for f in files]
    writers = [_gzip_writer(t) for t in tmps]
    try:
        for text1, text2 in generate():
            writers[0][0].write(text1.encode("ascii"))
            if paired:
                writers[1][0].write(text2.encode("ascii"))
        for gz, raw in writers:
            gz.close()
            raw.close()
        for tmp, final in zip(tmps, files):
            os.replace(tmp, final)
    except BaseException:
        for gz, raw in writers:
            try:
                gz.close()
            finally:
                raw.close()
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise

    return {
        "files": files,
        "md5": [file_md5(f) for f in files],
        "bytes": [os.path.getsize(f) for f in files],
        "read_count": n_reads,
        "base_count": base_count,
    }
