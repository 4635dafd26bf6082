"""URLs and file names of a run's reads as metadata tables give them: turned into absolute URLs
the fetchers understand (:func:`normalise_url`), and paired into mates (:func:`pick_mates`)."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..model import InputError

#: AWS Open Data (SRA public bucket) location of a run's ``.sra`` file.
ODP_URL = "https://sra-pub-run-odp.s3.amazonaws.com/sra/{run}/{run}"

#: FTP hosts of EBI that serve the same paths over HTTPS.
EBI_FTP_HOSTS = frozenset({"ftp.sra.ebi.ac.uk", "ftp.ebi.ac.uk", "ftp.era.ebi.ac.uk"})
#: ENA's Aspera host, whose ``host:/vol1/...`` paths are also served by ftp.sra.ebi.ac.uk.
EBI_FASP_HOSTS = frozenset({"fasp.sra.ebi.ac.uk"})

SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST_COLON_PATH_RE = re.compile(r"^([A-Za-z0-9.-]+):(/.*)$")
_MATE_RE = re.compile(r"[._]R?([12])(?:_001)?\.(?:fastq|fq)(?:\.(?:gz|bz2|xz|zst))?$", re.IGNORECASE)


def normalise_url(u: str) -> str:
    """Return an absolute URL with a scheme the fetchers understand.

    * scheme-less ``host/path`` (as ENA lists ``fastq_ftp``) -> ``https://host/path``;
    * ``ftp://`` on EBI's FTP hosts -> ``https://`` (same paths, served over HTTPS);
      other ``ftp://`` URLs are kept;
    * ``http://``, ``https://`` and ``file://`` are kept as they are;
    * ``s3://bucket/key`` -> ``https://bucket.s3.amazonaws.com/key``;
      ``gs://bucket/key`` -> ``https://storage.googleapis.com/bucket/key``;
    * ENA's Aspera form ``fasp.sra.ebi.ac.uk:/vol1/...`` -> ``https://ftp.sra.ebi.ac.uk/vol1/...``;
    * an absolute local path ``/x/y`` -> ``file:///x/y``.

    Anything else (an unknown scheme, an empty string) raises InputError.
    """
    if not isinstance(u, str) or not u.strip():
        raise InputError(f"empty or non-text URL {u!r}")
    s = u.strip()
    m = SCHEME_RE.match(s)
    if m:
        scheme = m.group(1).lower()
        rest = s[m.end() :]
        if scheme in ("http", "https", "file"):
            return f"{scheme}://{rest}"
        if scheme == "ftp":
            netloc = rest.split("/", 1)[0]
            host = netloc.rsplit("@", 1)[-1].split(":", 1)[0].lower()
            if host in EBI_FTP_HOSTS:
                return "https://" + rest
            return "ftp://" + rest
        if scheme == "s3":
            bucket, _, key = rest.partition("/")
            return f"https://{bucket}.s3.amazonaws.com/{key}"
        if scheme == "gs":
            return "https://storage.googleapis.com/" + rest
        raise InputError(f"unsupported URL scheme {scheme!r} in {u!r}: expected http(s), ftp or file")
    if s.startswith("//"):
        return "https:" + s
    if s.startswith("/"):
        return Path(s).as_uri()
    m = _HOST_COLON_PATH_RE.match(s)
    if m:
        host, path = m.group(1).lower(), m.group(2)
        if host in EBI_FASP_HOSTS:
            return "https://ftp.sra.ebi.ac.uk" + path
        raise InputError(f"cannot turn {u!r} into a URL: host:/path form is only known for ENA Aspera")
    return "https://" + s


def url_basename(url: str) -> str:
    return unquote(posixpath.basename(urlsplit(url).path))


def pick_mates(urls: list[str]) -> list[int]:
    """Indices (into ``urls``) of the FASTQ files to use, mate 1 first.

    * one file -> ``[0]`` (whatever its name);
    * exactly one ``*_1.fastq.gz`` and one ``*_2.fastq.gz`` (also ``_R1``/``.1``/``_R1_001``,
      ``.fq``, any compression suffix) -> their indices, by suffix not by position; other files
      listed beside them (ENA's unpaired ``RUN.fastq.gz``, a ``_3`` index read) are ignored;
    * anything else (no files, several files without a clear pair) -> ``[]``: the caller
      cannot tell which files make up the run.
    """
    if not urls:
        return []
    if len(urls) == 1:
        return [0]
    mate1: list[int] = []
    mate2: list[int] = []
    for i, u in enumerate(urls):
        m = _MATE_RE.search(url_basename(u))
        if m:
            (mate1 if m.group(1) == "1" else mate2).append(i)
    if len(mate1) == 1 and len(mate2) == 1:
        return [mate1[0], mate2[0]]
    return []
