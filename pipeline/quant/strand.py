"""A run's strandedness, found from a sample of its reads (``quant.strandedness: auto``).

The first ``quant.strand_sample`` spots (:func:`pipeline.reads.sample.sample_head`) are
pseudoaligned three times with kallisto: unstranded, ``--fr-stranded`` and ``--rf-stranded``. The
paired samples of a batch are mapped together (:func:`detect_paired`: two ``kallisto pseudo --bus
-b`` calls for the batch, the second with the mates swapped for ``rf``, whose per-run counts equal
``kallisto quant``'s ``n_pseudoaligned``); a single-end sample goes alone through ``kallisto
quant`` (:func:`detect`).
Of the reads that pseudoalign unstranded, a stranded library keeps almost all in one orientation
and almost none in the other; an unstranded one keeps about half in each. :func:`decide` reads
the two shares (``fr`` = n_pseudoaligned with ``--fr-stranded`` / unstranded, ``rf`` likewise)
with the thresholds of how_are_we_stranded_here (Signal & Kahlke 2022, itself after RSeQC's
infer_experiment): stranded when one orientation explains at least 90 % of the stranded hits,
unstranded when neither explains more than 60 %. Here a library is ``fr`` when ``fr >= 0.9``
and ``rf <= 0.1`` (``rf`` mirrored), ``unstranded`` when ``fr / (fr + rf)`` lies within
0.4-0.6; anything else, or fewer than :data:`MIN_HITS` reads pseudoaligned in the sample, is
undecided and quantified unstranded, as the run's record says. Simulated libraries give 1.00 /
0.00 (fr, rf) and 0.50 / 0.50 (unstranded); kallisto's unstranded HOXC reads 0.49 / 0.51.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..files import temp_path
from ..reads.sample import ReadSample
from ..runlog import RunLog
from . import kallisto

#: ``quant.strandedness`` values; ``auto`` finds it per run.
STRANDEDNESS = ("auto", "unstranded", "fr", "rf")
#: one orientation keeps at least this share of the unstranded hits, the other at most 1 - it
STRANDED_MIN = 0.9
#: an unstranded library: fr / (fr + rf) within 0.5 +- this
UNSTRANDED_BAND = 0.1
#: fewer reads pseudoaligned in the sample decide nothing
MIN_HITS = 100


@dataclass
class StrandCall:
    strandedness: str  # what the run is quantified as: unstranded, fr or rf
    how: str  # configured, detected or undecided
    fr: Optional[float] = None  # share of the unstranded hits kept by --fr-stranded
    rf: Optional[float] = None
    hits: Optional[int] = None  # reads pseudoaligned unstranded in the sample
    spots: Optional[int] = None  # spots in the sample
    seconds: Optional[float] = None  # what finding it cost

    def record(self) -> dict:
        """The run's record and QC columns: ``strandedness``, ``strand_how``, ``strand_fr``, ``strand_rf``."""
        out: dict[str, Any] = {"strandedness": self.strandedness, "strand_how": self.how}
        if self.fr is not None:
            out |= {"strand_fr": round(self.fr, 4), "strand_rf": round(self.rf or 0.0, 4)}
        if self.hits is not None:
            out |= {"strand_sample_spots": self.spots, "strand_sample_hits": self.hits, "strand_seconds": self.seconds}
        return out


def decide(hits: int, fr_hits: int, rf_hits: int) -> tuple[str, float, float]:
    """``(strandedness or "undecided", fr share, rf share)`` from the three counts (see the module)."""
    fr = fr_hits / hits if hits else 0.0
    rf = rf_hits / hits if hits else 0.0
    if hits < MIN_HITS:
        return "undecided", fr, rf
    if fr >= STRANDED_MIN and rf <= 1 - STRANDED_MIN:
        return "fr", fr, rf
    if rf >= STRANDED_MIN and fr <= 1 - STRANDED_MIN:
        return "rf", fr, rf
    if fr + rf > 0 and abs(fr / (fr + rf) - 0.5) <= UNSTRANDED_BAND:
        return "unstranded", fr, rf
    return "undecided", fr, rf


def detect(
    run: str,
    sample: ReadSample,
    index,
    work_dir: Path,
    *,
    threads: int,
    fragment_length: float,
    fragment_sd: float,
    log: RunLog,
    exe: str = "kallisto",
) -> StrandCall:
    """kallisto three times on ``sample`` in ``work_dir``; the call :func:`decide` makes of it.

    kallisto failing on the sample (no ``run_info.json``, or not all of the sample processed; its
    exit 1 with none of it pseudoaligned is an answer, not a failure) is an undecided call, said
    in the log: the run's own quantification then says what is wrong with its files."""
    t0 = time.monotonic()
    counts: dict[str, int] = {}
    for mode in ("unstranded", "fr", "rf"):
        out = work_dir / mode
        out.mkdir(parents=True, exist_ok=True)
        args = kallisto.quant_args(
            kallisto.relative_to(index, out),
            ".",
            [kallisto.relative_to(f, out) for f in sample.files],
            threads=threads,
            single=len(sample.files) == 1,
            fragment_length=fragment_length,
            fragment_sd=fragment_sd,
            exe=exe,
            strand=mode,
        )
        rc = kallisto.run(args, out / "kallisto.log", cwd=out)
        try:  # kallisto exits 1 when no read pseudoaligns (a stranded library the other way round)
            info = kallisto.read_run_info(out)
            if rc in (0, 1) and int(info.get("n_processed", -1)) == sample.spots:
                counts[mode] = int(info.get("n_pseudoaligned", 0))
        except (OSError, ValueError):
            pass
        if mode not in counts:
            log.write(f"strand: kallisto exited {rc} on the sample ({mode}); quantifying unstranded")
            return StrandCall("unstranded", "undecided", spots=sample.spots, seconds=round(time.monotonic() - t0, 3))
    return _call(
        run, sample.spots, counts["unstranded"], counts["fr"], counts["rf"], round(time.monotonic() - t0, 3), log
    )


def _pseudoaligned_per_run(out: Path, n_runs: int) -> list[int]:
    """Reads pseudoaligned per line of the batch file: the counts of ``out/output.bus`` by barcode."""
    from .kallisto_batch import parse_bus  # numpy: imported only where a batch is mapped

    records = parse_bus((out / "output.bus").read_bytes())
    counts = [0] * n_runs
    for bc, n in zip(records["bc"].tolist(), records["count"].tolist()):
        counts[int(bc)] += int(n)
    return counts


def detect_paired(
    samples: dict[str, ReadSample],
    index,
    work_dir: Path,
    *,
    threads: int,
    logs: dict[str, RunLog],
    exe: str = "kallisto",
) -> Optional[dict[str, StrandCall]]:
    """The calls for several paired samples at once, with two ``kallisto pseudo --bus -b`` (one
    load of the index each, no EM); each run's hits are the counts of its barcodes in
    ``output.bus``:

    - unstranded, one line per sample;
    - ``--fr-stranded``, each sample twice: as it is (its ``fr`` hits) and with its mates swapped.
      kallisto's strand filter wants mate 1 on the transcript's strand and mate 2 on the other
      for ``fr``, the reverse for ``rf``, and intersects both mates' classes either way, so the
      swapped pair passes ``fr`` exactly when the pair passes ``rf``: its ``rf`` hits.

    The counts equal :func:`detect`'s (``kallisto quant``'s ``n_pseudoaligned`` in each mode;
    tested on simulated fr, rf and unstranded samples and on HOXC). None when kallisto fails or
    does not process every spot: :func:`detect` then takes each run alone."""
    t0 = time.monotonic()
    runs = list(samples)
    n = len(runs)
    work_dir.mkdir(parents=True, exist_ok=True)
    mates = [[kallisto.relative_to(f, work_dir) for f in samples[run].files] for run in runs]
    lines = {  # names relative to work_dir: no blank in a path kallisto splits on
        "unstranded": [[str(i), *m] for i, m in enumerate(mates)],
        "fr": [[str(i), *m] for i, m in enumerate(mates)] + [[str(n + i), m[1], m[0]] for i, m in enumerate(mates)],
    }
    spots = sum(samples[run].spots for run in runs)
    counts: dict[str, list[int]] = {}
    for mode, rows in lines.items():
        out = work_dir / mode
        out.mkdir(exist_ok=True)
        (work_dir / f"{mode}.txt").write_text("".join("\t".join(row) + "\n" for row in rows))
        flag = kallisto.STRAND_FLAGS.get(mode)
        args = kallisto.pseudo_batch_args(
            kallisto.relative_to(index, work_dir),
            mode,
            f"{mode}.txt",
            threads=threads,
            flags=(flag,) if flag else (),
            exe=exe,
        )
        rc = kallisto.run(args, out / "kallisto.log", cwd=work_dir)
        try:  # exit 1: nothing pseudoaligned, an answer
            info = kallisto.read_run_info(out)
            if rc in (0, 1) and int(info.get("n_processed", -1)) == spots * len(rows) // n:
                counts[mode] = _pseudoaligned_per_run(out, len(rows))
        except (OSError, ValueError, IndexError):
            pass
        if mode not in counts:
            return None
    seconds = round((time.monotonic() - t0) / n, 3)
    hits, fr = counts["unstranded"], counts["fr"]
    return {
        run: _call(run, samples[run].spots, hits[i], fr[i], fr[n + i], seconds, logs[run]) for i, run in enumerate(runs)
    }


def _call(run: str, spots: int, hits: int, fr_hits: int, rf_hits: int, seconds: float, log: RunLog) -> StrandCall:
    """The call :func:`decide` makes of one run's three counts, said in its log."""
    found, fr, rf = decide(hits, fr_hits, rf_hits)
    call = StrandCall(
        "unstranded" if found == "undecided" else found,
        "undecided" if found == "undecided" else "detected",
        fr=fr,
        rf=rf,
        hits=hits,
        spots=spots,
        seconds=seconds,
    )
    log.write(
        f"strand: {run}: of {hits} reads pseudoaligned in a sample of {spots} spots, --fr-stranded "
        f"keeps {fr:.3f}, --rf-stranded {rf:.3f}: "
        + (f"{found}" if found != "undecided" else "undecided (neither stranded nor unstranded), quantified unstranded")
    )
    return call


def sample_dir(quant_dir, run: str) -> Path:
    """The run's temporary folder for its sample: ``quant/.RUN.strand.tmp`` (never renamed)."""
    return temp_path(Path(quant_dir) / run, "strand")
