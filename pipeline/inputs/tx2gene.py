"""The transcript-to-gene map behind the gene-level tables.

It comes from the user's file ``reference.tx2gene`` or, without one, from the transcriptome's FASTA
headers. The file's format is told by its content, gzipped or not:

- a GFF3 (``##gff-version 3``, or nine columns with ``key=value`` attributes): a transcript is a
  feature whose ``Parent`` is a gene-type feature (``gene``, ``ncRNA_gene``, ``pseudogene``, ...;
  exons, CDS, UTRs and codons aside), named by its ``transcript_id`` attribute, else by its ``ID``
  less a ``transcript:`` or ``rna-`` prefix; the gene is the parent's ``gene_id``, else ``gene``,
  else ``Name``, else ``ID`` (Ensembl's GFF3 gives ENSG ids, RefSeq's the symbols its FASTA
  headers carry); a transcript with no gene parent uses its own ``gene_id`` attribute if it has one;
- a GTF (nine columns, ``key "value";`` attributes): every line with a ``transcript_id`` and a
  ``gene_id``;
- otherwise a table of two or more tab-separated columns (comma-separated when the name ends in
  ``.csv``): transcript, gene; a first line such as ``transcript_id<TAB>gene_id`` is a header.

FASTA headers, read by the convention of the first header that follows one (kallisto names each
target by the first word of its header):

- Ensembl cDNA/ncRNA: ``>ENST... cdna chromosome:... gene:ENSG... ...`` (the ``gene:`` token);
- GENCODE: ``>ENST...|ENSG...|...|`` (the second ``|`` field);
- RefSeq ``_rna.fna``: ``>NM_001.1 Homo sapiens homeobox C4 (HOXC4), transcript variant 1, mRNA``
  (accessions ``NM_``/``NR_``/``XM_``/``XR_``; the last parenthesised word before a comma or the
  end: the gene symbol, or ``LOC...`` id, RefSeq's own gene name).

Transcripts the source names without a gene (a header without one, an empty gene cell) are kept
in :attr:`Tx2Gene.without_gene`. A transcript given two different genes, a malformed line or a
file that cannot be read is an :class:`~pipeline.model.InputError` naming the file and the line
with a bounded excerpt of it. Matching the quantified targets (:meth:`Tx2Gene.match`) is exact
first; a target not found is tried without a trailing version (``.5``) and after a ``|``, against
the map's ids read the same way, when that names one gene only.

:func:`resolve_tx2gene` pairs the map with the transcriptome's own target names once (so a map
that fits no target fails before any read is fetched); :func:`tx2gene_text` writes the result as
a TSV that :func:`read_tx2gene` reads back.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Optional
from urllib.parse import unquote

from ..model import InputError, excerpt, has_control, tsv_cell

_GZIP_MAGIC = b"\x1f\x8b"
_ENSEMBL_GENE_RE = re.compile(r"(?:^|\s)gene:(\S+)")
_GENCODE_GENE_RE = re.compile(r"ENS[A-Z]*G\d")
_REFSEQ_ID_RE = re.compile(r"[NX][MR]_\d+(\.\d+)?")
_REFSEQ_SYMBOL_RE = re.compile(r"\(([^()\s]+)\)(?=,|\s*$)")
_VERSION_RE = re.compile(r"\.\d+$")
_TX_HEADER_RE = re.compile(r"(transcript|tx|target)[ _]?(id|name|s)?", re.IGNORECASE)
_GENE_HEADER_RE = re.compile(r"gene[ _]?(id|name|symbol|s)?", re.IGNORECASE)
_GTF_ATTR = {k: re.compile(rf'(?:^|;)\s*{k}\s+(?:"([^"]*)"|([^\s;"]+))') for k in ("transcript_id", "gene_id")}
_NOT_TRANSCRIPT = {"exon", "cds", "intron", "start_codon", "stop_codon", "utr", "five_prime_utr", "three_prime_utr"}
_NO_GENE = {"", "na", "nan", "none", "null", "-", "."}


@dataclass
class Tx2Gene:
    """Transcript id -> gene id, where it came from, and the transcripts it names without a gene."""

    genes: dict[str, str]
    source: str  # the file read
    kind: str  # tsv, gtf, gff3, ensembl-fasta, gencode-fasta, refseq-fasta, or none (no gene in headers)
    without_gene: list[str] = field(default_factory=list)

    def match(self, targets: list[str]) -> tuple[list[Optional[str]], int]:
        """The gene of each of ``targets`` (None: no gene), and how many were matched only after
        dropping a version or a ``|`` suffix. InputError when none of them has a gene."""
        genes = self.genes
        out: list[Optional[str]] = [genes.get(t) for t in targets]
        loose = 0
        if None in out:
            by_base: dict[str, Optional[str]] = {}
            for tx, gene in genes.items():
                key = _base(tx)
                by_base[key] = gene if by_base.get(key, gene) == gene else None  # None: ambiguous
            for i, t in enumerate(targets):
                if out[i] is None and (g := by_base.get(_base(t))) is not None:
                    out[i], loose = g, loose + 1
        if targets and all(g is None for g in out):
            raise InputError(
                f"{self.source}: none of the {len(targets)} quantified transcripts has a gene in it "
                f"(transcripts: {excerpt(targets[:3])}; in the map: {excerpt(list(genes)[:3])}): "
                "are the map and the transcriptome from the same annotation?"
            )
        return out, loose


def _base(tx: str) -> str:
    return _VERSION_RE.sub("", tx.split("|", 1)[0])


def _open_binary(path: Path) -> BinaryIO:
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot read the transcript-to-gene source: {e.strerror}") from None
    if fh.read(2) == _GZIP_MAGIC:
        fh.close()
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # a binary file object all the same
    fh.seek(0)
    return fh


def _lines(path: Path, only: bytes = b"") -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) of a text file, gzipped or not, of the lines that
    start with ``only``; errors name the line."""
    n = 0
    try:
        with _open_binary(path) as fh:
            for n, raw in enumerate(fh, 1):
                if not raw.startswith(only):
                    continue
                try:
                    yield n, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise InputError(f"{path}, line {n}: not UTF-8 text ({e.reason}): {excerpt(raw)}") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: cannot be read after line {n}: {e}") from None


class _Builder:
    """Collects transcript -> gene pairs, refusing a transcript given two genes."""

    def __init__(self, path: Path):
        self.path = path
        self.genes: dict[str, str] = {}
        self.where: dict[str, int] = {}  # the line that gave a transcript its gene
        self.without: dict[str, int] = {}  # transcripts named without a gene, in order

    def add(self, tx: str, gene: Optional[str], n: int, line: str) -> None:
        if gene is not None and self.genes.get(tx) == gene:
            return  # a pair seen before (a GTF repeats it on each exon): checked then
        for value in (tx, gene or ""):
            if has_control(value):
                raise InputError(f"{self.path}, line {n}: an id holds a control character: {excerpt(line)}")
        if not tx:
            raise InputError(f"{self.path}, line {n}: no transcript id: {excerpt(line)}")
        if gene is None or gene.lower() in _NO_GENE:
            if tx not in self.genes:
                self.without.setdefault(tx, n)
            return
        old = self.genes.setdefault(tx, gene)
        if old != gene:
            raise InputError(
                f"{self.path}, line {n}: transcript {excerpt(tx)} is given gene {excerpt(gene)}, but line "
                f"{self.where[tx]} gave it {excerpt(old)}: {excerpt(line)}"
            )
        self.where.setdefault(tx, n)
        self.without.pop(tx, None)

    def result(self, kind: str) -> Tx2Gene:
        if not self.genes and kind != "none":
            raise InputError(f"{self.path}: no transcript-to-gene pair in it (read as {kind})")
        return Tx2Gene(self.genes, str(self.path), kind, list(self.without))


def _sniff(path: Path) -> str:
    """tsv, gtf or gff3, from the first line that is not blank or a comment."""
    for _n, line in _lines(path):
        if line.startswith("##gff-version 3"):
            return "gff3"
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) == 9 and cols[3].isdigit() and cols[4].isdigit():
            return (
                "gtf" if _GTF_ATTR["transcript_id"].search(cols[8]) or _GTF_ATTR["gene_id"].search(cols[8]) else "gff3"
            )
        return "tsv"
    raise InputError(f"{path}: the transcript-to-gene file is empty")


def read_tx2gene(path) -> Tx2Gene:
    """The map in a user's file: a GFF3, a GTF, or a transcript/gene table (see the module's text)."""
    path = Path(path)
    kind = _sniff(path)
    b = _Builder(path)
    if kind == "tsv":
        _read_table(path, b)
    elif kind == "gtf":
        _read_gtf(path, b)
    else:
        _read_gff3(path, b)
    return b.result(kind)


def _read_table(path: Path, b: _Builder) -> None:
    sep = "," if re.search(r"\.csv(\.gz)?$", path.name, re.IGNORECASE) else "\t"
    first = True
    for n, line in _lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split(sep)
        if len(cols) < 2:
            what = "comma" if sep == "," else "tab"
            raise InputError(f"{path}, line {n}: expected a transcript and a gene, {what}-separated: {excerpt(line)}")
        tx, gene = cols[0].strip(), cols[1].strip()
        if first and _TX_HEADER_RE.fullmatch(tx) and _GENE_HEADER_RE.fullmatch(gene):
            first = False
            continue
        first = False
        b.add(tx, gene, n, line)


def _nine(path: Path, n: int, line: str) -> list[str]:
    cols = line.split("\t")
    if len(cols) != 9:
        raise InputError(f"{path}, line {n}: expected 9 tab-separated columns, got {len(cols)}: {excerpt(line)}")
    return cols


def _read_gtf(path: Path, b: _Builder) -> None:
    for n, line in _lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        attrs = _nine(path, n, line)[8]
        tm = _GTF_ATTR["transcript_id"].search(attrs)
        if tm is None or not (tx := tm.group(1) if tm.group(1) is not None else tm.group(2)):
            continue  # a gene line, or transcript_id "" on one
        gm = _GTF_ATTR["gene_id"].search(attrs)
        b.add(tx, None if gm is None else (gm.group(1) if gm.group(1) is not None else gm.group(2)), n, line)


def _gff3_attrs(path: Path, n: int, line: str, text: str) -> dict[str, str]:
    out = {}
    for item in text.strip().split(";"):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise InputError(f"{path}, line {n}: a GFF3 attribute without '=' ({excerpt(item)}): {excerpt(line)}")
        out[key.strip()] = value.strip()
    return out


def _read_gff3(path: Path, b: _Builder) -> None:
    gene_of: dict[str, str] = {}  # a gene feature's ID -> its gene id
    pending: list[tuple[str, list[str], Optional[str], int, str]] = []  # tx, parents, own gene_id, line
    for n, line in _lines(path):
        if line.startswith("##FASTA"):
            break
        if not line.strip() or line.startswith("#"):
            continue
        cols = _nine(path, n, line)
        ftype = cols[2].lower()
        if ftype in _NOT_TRANSCRIPT:
            continue
        attrs = _gff3_attrs(path, n, line, cols[8])
        fid = unquote(attrs.get("ID", ""))
        if ftype.endswith("gene"):
            if fid:
                gene_of[fid] = unquote(attrs.get("gene_id") or attrs.get("gene") or attrs.get("Name") or fid)
            continue
        parents = [unquote(p) for p in attrs.get("Parent", "").split(",") if p]
        tx = unquote(attrs.get("transcript_id", "")) or re.sub(r"^(transcript:|rna-)", "", fid)
        if tx and (parents or "transcript_id" in attrs):
            pending.append((tx, parents, unquote(attrs["gene_id"]) if "gene_id" in attrs else None, n, line))
    for tx, parents, own, n, line in pending:
        genes = {gene_of[p] for p in parents if p in gene_of}
        if len(genes) > 1:
            raise InputError(f"{path}, line {n}: transcript {excerpt(tx)} has parents of two genes: {excerpt(line)}")
        if genes or own is not None or not parents:
            b.add(tx, genes.pop() if genes else own, n, line)


def _header_gene(kind: str, name: str, rest: str) -> Optional[str]:
    if kind == "ensembl-fasta":
        m = _ENSEMBL_GENE_RE.search(rest)
        return m.group(1) if m else None
    if kind == "gencode-fasta":
        fields = name.split("|")
        return fields[1] if len(fields) > 1 and _GENCODE_GENE_RE.match(fields[1]) else None
    if _REFSEQ_ID_RE.fullmatch(name):
        found = _REFSEQ_SYMBOL_RE.findall(rest)
        return found[-1] if found else None
    return None


def tx2gene_from_fasta(path) -> Tx2Gene:
    """The map the transcriptome's headers carry; kind ``none`` (no genes, every transcript in
    ``without_gene``) when no header follows a known convention."""
    path = Path(path)
    b = _Builder(path)
    kind: Optional[str] = None
    for n, line in _lines(path, b">"):
        words = line[1:].split(None, 1)
        if not words:
            raise InputError(f"{path}, line {n}: a FASTA header with no name: {excerpt(line)}")
        name, rest = words[0], (words[1].strip() if len(words) > 1 else "")
        if kind is None:
            for k in ("ensembl-fasta", "gencode-fasta", "refseq-fasta"):
                if _header_gene(k, name, rest) is not None:
                    kind = k
                    break
        b.add(name, _header_gene(kind, name, rest) if kind else None, n, line)
    if kind is None and not b.without:
        raise InputError(f"{path}: no FASTA header ('>') in the transcriptome")
    return b.result(kind or "none")


def load_tx2gene(tx2gene_file, transcriptome) -> Optional[Tx2Gene]:
    """The species' map: from ``tx2gene_file`` when given (``reference.tx2gene``), else from the
    headers of ``transcriptome``; None when there is no file and no header carries a gene."""
    if tx2gene_file:
        return read_tx2gene(tx2gene_file)
    found = tx2gene_from_fasta(transcriptome)
    return found if found.genes else None


def fasta_ids(path) -> list[str]:
    """The first words of the FASTA headers of ``path``: the names kallisto gives its targets."""
    path, ids = Path(path), []
    for n, line in _lines(path, b">"):
        words = line[1:].split(None, 1)
        if not words:
            raise InputError(f"{path}, line {n}: a FASTA header with no name: {excerpt(line)}")
        ids.append(words[0])
    return ids


def resolve_tx2gene(tx2gene_file, transcriptome) -> tuple[Optional[Tx2Gene], dict]:
    """The species' map (:func:`load_tx2gene`) keyed by the transcriptome's own target names, as
    :meth:`Tx2Gene.match` pairs them, every target without a gene in ``without_gene``; and its
    figures. ``(None, figures)`` when there is no map. InputError when no target has a gene."""
    t2g = load_tx2gene(tx2gene_file, transcriptome)
    figures: dict = {
        "tx2gene": None if t2g is None else t2g.source,
        "tx2gene_kind": "none" if t2g is None else t2g.kind,
    }
    if t2g is None:
        return None, figures
    ids = fasta_ids(transcriptome)
    found, loose = t2g.match(ids)
    resolved = Tx2Gene(
        {t: g for t, g in zip(ids, found) if g is not None},
        t2g.source,
        t2g.kind,
        [t for t, g in zip(ids, found) if g is None],
    )
    return resolved, figures | {
        "transcripts": len(ids),
        "transcripts_with_gene": len(resolved.genes),
        "genes": len(set(resolved.genes.values())),
        "matched_without_version": loose,
    }


def tx2gene_text(t2g: Tx2Gene) -> str:
    """The map as a TSV that :func:`read_tx2gene` reads back: ``transcript_id``, ``gene_id``
    (empty for a transcript without a gene)."""
    rows = [f"{tsv_cell(t)}\t{tsv_cell(g)}\n" for t, g in t2g.genes.items()]
    rows += [f"{tsv_cell(t)}\t\n" for t in t2g.without_gene]
    return "transcript_id\tgene_id\n" + "".join(rows)
