"""Gene-level tables from the merged transcript tables, computed as tximport computes them.

From ``{species}_est_counts.tsv``, ``_tpm.tsv`` and ``_eff_length.tsv`` (target_id, then one
column per run) and a transcript-to-gene map (:mod:`pipeline.inputs.tx2gene`), per gene g and
run j, over the transcripts t of g (tximport's ``summarizeToGene``):

- ``{species}_gene_counts.tsv``: sum of est_counts (``countsFromAbundance = "no"``);
- ``{species}_gene_tpm.tsv``: sum of TPM;
- ``{species}_gene_length.tsv``: the abundance-weighted mean effective length,
  ``sum(tpm * eff_length) / sum(tpm)``; where a run's TPMs of g are all 0 (or NaN), the geometric
  mean of g's lengths in the other runs, and where they are 0 in every run, the plain mean over
  g's transcripts of each transcript's mean effective length over runs;
- ``{species}_gene_counts_length_scaled.tsv`` (``"lengthScaledTPM"``): ``tpm_gj * mean_j(length_gj)``,
  rescaled per run so that its column sums to the run's gene counts (``sum_g counts_gj``).

A NaN count or TPM counts as 0 in the sums, as in pytximport's (kallisto writes ``-nan`` TPMs for
a run in which no read pseudoaligned; R's tximport gives such a run NaN gene TPMs). One deviation
from both, where they divide 0 by 0: a run with no count on any gene gets 0s in the length-scaled
table, not NaN.

Transcripts the map gives no gene are left out of the gene tables, as tximport leaves them out:
the length-scaled counts are then rescaled to the counts of genes, exactly as tximport would, and
a transcript id never stands in a column of gene ids. They are listed, with the counts they hold
over all runs, in ``{species}_transcripts_without_gene.tsv``, and counted in the returned figures.

Genes come in the order of their first transcript in the tables. Values are written with 15
significant digits (``%.15g``, as R's ``write.table`` writes doubles; integral ones bare): a sum of
kallisto's 6-digit values keeps every digit it has, without the binary noise of the last two.

Memory: one pass records where each row starts in the three tables; each gene's rows are then
read by seeking to them and added up as they come, so what is held is a row of each table and a
gene's running sums, plus a few numbers per gene and per run, whatever the size of the tables.
The length-scaled table is made in a second pass, from the gene TPMs as the staged table holds
them. Plain Python, like the merge: no numpy or pandas.
"""

from __future__ import annotations

import math
from array import array
from contextlib import ExitStack
from itertools import repeat, zip_longest
from operator import add, mul
from pathlib import Path
from typing import BinaryIO, Optional

from ..files import staged_file
from ..inputs.tx2gene import Tx2Gene
from .merge import MEASURES

TABLES = ("gene_counts", "gene_tpm", "gene_length", "gene_counts_length_scaled")
WITHOUT_GENE = "transcripts_without_gene"
NAN = math.nan


def table_paths(species: str, merged_dir) -> dict[str, Path]:
    """The files :func:`write_gene_tables` writes, by name (TABLES and WITHOUT_GENE)."""
    return {t: Path(merged_dir) / f"{species}_{t}.tsv" for t in (*TABLES, WITHOUT_GENE)}


def _formatter(n: int):
    """A function writing ``n`` values as one tab-joined string, each ``%.15g``."""
    fmt = "\t".join(["%.15g"] * n)
    return lambda values: fmt % tuple(values)


class _Tables:
    """The three merged tables: runs, target ids, and where each row starts in each file."""

    def __init__(self, species: str, merged_dir: Path):
        self.paths = [merged_dir / f"{species}_{m}.tsv" for m in MEASURES]
        self.runs: list[str] = []
        self.targets: list[str] = []
        self.starts = [array("q") for _ in MEASURES]
        with ExitStack() as stack:
            fhs = [stack.enter_context(open(p, "rb")) for p in self.paths]
            heads = [fh.readline().rstrip(b"\r\n").decode("utf-8").split("\t") for fh in fhs]
            for p, head in zip(self.paths, heads):
                if head[0] != "target_id" or head != heads[0]:
                    raise ValueError(f"{p}: its header does not start with target_id or differs from {self.paths[0]}")
            self.runs = heads[0][1:]
            pos = [fh.tell() for fh in fhs]
            for n, lines in enumerate(zip_longest(*fhs), 2):
                if None in lines:
                    raise ValueError(f"{self.paths[0].parent}: the tables of {species} differ in rows from line {n}")
                first = lines[0]
                tab = first.find(b"\t")
                tid = first[:tab] if tab >= 0 else first.rstrip(b"\r\n")
                for k, line in enumerate(lines):
                    if not line.startswith(tid) or line[len(tid) : len(tid) + 1] not in (b"\t", b"\n", b"\r", b""):
                        raise ValueError(f"{self.paths[k]}, line {n}: target_id differs from {self.paths[0]}'s")
                    self.starts[k].append(pos[k])
                    pos[k] += len(line)
                self.targets.append(tid.decode("utf-8"))

    def row(self, k: int, fh: BinaryIO, i: int) -> list[float]:
        """Row ``i``'s values in table ``k`` (open as ``fh``); NaN counts and TPMs as 0."""
        fh.seek(self.starts[k][i])
        line = fh.readline()
        fields = line.rstrip(b"\r\n").split(b"\t")
        try:
            if len(fields) != len(self.runs) + 1:
                raise ValueError(f"{len(fields)} fields, its header has {len(self.runs) + 1}")
            values = list(map(float, fields[1:]))
            if k < 2 and (total := sum(values)) != total:  # a NaN (or inf - inf) among them
                values = [x if x == x else 0.0 for x in values]
            return values
        except ValueError as e:
            raise ValueError(f"{self.paths[k]}, line {i + 2}: {e}: {line[:80]!r}") from None


def _gene_length(tpm: list[float], weighted: list[float], mean_tx_length: float) -> list[float]:
    """tximport's length: weighted / tpm, its NaNs replaced (see the module's text)."""
    length = [w / s if s else NAN for w, s in zip(weighted, tpm)]
    good = [x for x in length if x == x]
    if len(good) == len(length):
        return length
    if not good:
        return [mean_tx_length] * len(length)
    fill = math.exp(sum(math.log(x) if x > 0 else -math.inf for x in good) / len(good))
    return [x if x == x else fill for x in length]


def write_gene_tables(species: str, merged_dir, t2g: Tx2Gene) -> dict:
    """Write the gene tables and the transcripts without a gene into ``merged_dir``, from the
    merged transcript tables there; return the files written and the figures."""
    merged_dir = Path(merged_dir)
    tables = _Tables(species, merged_dir)
    runs, targets = tables.runs, tables.targets
    n_runs = len(runs)
    genes_of, loose = t2g.match(targets)
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(genes_of):
        if g is not None:
            groups.setdefault(g, []).append(i)
    named_without = set(t2g.without_gene)
    counts_sum = [0.0] * n_runs  # per run: the counts of genes
    new_sum = [0.0] * n_runs  # per run: sum over genes of tpm x mean length
    missing_sum = [0.0] * n_runs  # per run: the counts of transcripts without a gene
    mean_lengths = array("d")
    dest = table_paths(species, merged_dir)
    header = "gene_id" + "".join("\t" + r for r in runs) + "\n"
    text = _formatter(n_runs)
    with ExitStack() as stack:
        ins = [stack.enter_context(open(p, "rb")) for p in tables.paths]
        outs = {t: stack.enter_context(staged_file(dest[t], "w", encoding="utf-8", newline="")) for t in dest}
        for t in TABLES[:3]:
            outs[t].write(header)
        for gene, rows in groups.items():
            counts = tpm = weighted = None
            tx_length_sum = 0.0
            for i in rows:
                c, p, ln = (tables.row(k, ins[k], i) for k in range(3))
                tx_length_sum += sum(ln) / n_runs if n_runs else 0.0
                if counts is None or tpm is None or weighted is None:
                    counts, tpm, weighted = c, p, list(map(mul, p, ln))
                else:
                    counts = list(map(add, counts, c))
                    tpm = list(map(add, tpm, p))
                    weighted = list(map(add, weighted, map(mul, p, ln)))
            assert counts is not None and tpm is not None and weighted is not None
            length = _gene_length(tpm, weighted, tx_length_sum / len(rows))
            mean_length = sum(length) / n_runs if n_runs else 0.0
            mean_lengths.append(mean_length)
            counts_sum = list(map(add, counts_sum, counts))
            new_sum = list(map(add, new_sum, map(mul, tpm, repeat(mean_length))))
            for t, values in (("gene_counts", counts), ("gene_tpm", tpm), ("gene_length", length)):
                outs[t].write(gene + ("\t" + text(values) if n_runs else "") + "\n")

        out = outs[WITHOUT_GENE]
        out.write("target_id\test_counts\treason\n")
        for i, g in enumerate(genes_of):
            if g is None:
                c = tables.row(0, ins[0], i)
                missing_sum = list(map(add, missing_sum, c))
                reason = "no gene given" if targets[i] in named_without else "not in the map"
                out.write(f"{targets[i]}\t{math.fsum(c):.15g}\t{reason}\n")

        # lengthScaledTPM: (tpm x mean length) x (run's gene counts / run's sum of tpm x mean length)
        scale = [cs / ns if ns else (0.0 if cs == 0 else NAN) for cs, ns in zip(counts_sum, new_sum)]
        outs["gene_tpm"].flush()
        scaled = outs["gene_counts_length_scaled"]
        scaled.write(header)
        with open(outs["gene_tpm"].name, encoding="utf-8", newline="") as back:
            back.readline()
            for line, mean_length in zip(back, mean_lengths):
                gene, _, rest = line.rstrip("\n").partition("\t")
                values = [float(v) * mean_length * s for v, s in zip(rest.split("\t"), scale)] if n_runs else []
                scaled.write(gene + ("\t" + text(values) if n_runs else "") + "\n")

    n_missing = genes_of.count(None)
    total_missing, total_genes = math.fsum(missing_sum), math.fsum(counts_sum)
    run_fractions = [m / (m + c) for m, c in zip(missing_sum, counts_sum) if m + c > 0]
    return {
        "tx2gene": t2g.source,
        "tx2gene_kind": t2g.kind,
        "runs": n_runs,
        "transcripts": len(targets),
        "genes": len(groups),
        "transcripts_without_gene": n_missing,
        "matched_without_version": loose,
        "counts_without_gene": total_missing,
        "counts_without_gene_fraction": total_missing / (total_missing + total_genes)
        if total_missing + total_genes > 0
        else 0.0,
        "counts_without_gene_max_run_fraction": max(run_fractions, default=0.0),
        "files": {t: str(p) for t, p in dest.items()},
    }


def without_gene_note(figures: dict) -> Optional[str]:
    """A one-line warning for the log when transcripts were left out for want of a gene, or None."""
    n = figures.get("transcripts_without_gene", 0)
    if not n:
        return None
    return (
        f"{n} of {figures['transcripts']} transcripts have no gene in {figures['tx2gene']} and are left out "
        f"of the gene tables ({100 * figures['counts_without_gene_fraction']:.2f} % of the counts; at most "
        f"{100 * figures['counts_without_gene_max_run_fraction']:.2f} % in one run): "
        f"listed in {figures['files'][WITHOUT_GENE]}"
    )
