"""URLs and file names of a run's reads as metadata tables give them: turned into absolute URLs
the fetchers understand (:func:`normalise_url`), and paired into mates (:func:`pick_mates`).

A URL is where a hostile table value becomes something fetched, so :func:`url_problem` holds the
rule every URL the pipeline reads must pass (metadata links, ``download.mirrors`` prefixes, a
``reference.transcriptome`` URL): no control character, and no path that could climb out of the
folder a mirror maps it to (``.``/``..`` segments, also percent-encoded, or a separator hidden as
``%2F``/``%5C`` or written as ``\\``).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

from ..model import InputError, excerpt, has_control

#: AWS Open Data (SRA public bucket) location of a run's ``.sra`` file.
ODP_URL = "https://sra-pub-run-odp.s3.amazonaws.com/sra/{run}/{run}"

#: FTP hosts of EBI that serve the same paths over HTTPS.
EBI_FTP_HOSTS = frozenset({"ftp.sra.ebi.ac.uk", "ftp.ebi.ac.uk", "ftp.era.ebi.ac.uk"})
#: ENA's Aspera host, whose ``host:/vol1/...`` paths are also served by ftp.sra.ebi.ac.uk.
EBI_FASP_HOSTS = frozenset({"fasp.sra.ebi.ac.uk"})

SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST_COLON_PATH_RE = re.compile(r"^([A-Za-z0-9.-]+):(/.*)$")
_HIDDEN_SEPARATOR_RE = re.compile(r"%(?:2f|5c)", re.IGNORECASE)
#: Rounds of percent-decoding a path is checked through (a server or proxy may decode twice).
DECODE_ROUNDS = 3
#: Longest URL accepted: servers refuse request lines much beyond 8 KiB anyway.
MAX_URL = 8192
_MATE_RE = re.compile(r"[._]R?([12])(?:_001)?\.(?:fastq|fq)(?:\.(?:gz|bz2|xz|zst))?$", re.IGNORECASE)


def _segments_problem(path: str, decode: bool) -> Optional[str]:
    """Why a URL's path (``decode``: percent-decoded, as a server reads it) or a local path could
    climb out of its folder, or None."""
    layer = path
    for _ in range(DECODE_ROUNDS + 1 if decode else 1):
        if has_control(layer):
            return "holds a control character"
        if decode and "\\" in layer:
            return "holds a backslash (a path separator to some servers)"
        if any(seg.split(";", 1)[0] in (".", "..") for seg in layer.split("/")):
            return "has a '.' or '..' path segment"
        if not decode or "%" not in layer:
            break
        if _HIDDEN_SEPARATOR_RE.search(layer):
            return "hides a path separator as %2F or %5C"
        layer = unquote(layer)
    return None


def url_problem(url: str) -> Optional[str]:
    """Why the absolute URL (or URL prefix) ``url`` must not be fetched, or None: a control
    character anywhere, more than :data:`MAX_URL` characters, an http(s)/ftp URL without a host,
    or a path that :func:`_segments_problem` refuses (checked through :data:`DECODE_ROUNDS` rounds
    of percent-decoding)."""
    if not isinstance(url, str):
        return "is not text"
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    if has_control(url):
        return "holds a control character"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() in ("http", "https", "ftp") and (not host.strip(".") or ".." in host):
        return "has no valid host"
    return _segments_problem(parts.path, decode=True)


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

    Anything else (an unknown scheme, an empty string) raises InputError, and so does a URL that
    :func:`url_problem` refuses, or a local path with a control character or a ``.``/``..``
    segment. The message quotes a bounded, escaped excerpt of ``u``.
    """
    if not isinstance(u, str) or not u.strip():
        raise InputError(f"empty or non-text URL {excerpt(u)}")
    s = u.strip()
    if s.startswith("/") and not s.startswith("//"):
        problem = "holds a control character" if has_control(u) else _segments_problem(s, decode=False)
        if problem:
            raise InputError(f"local path {excerpt(u)} {problem}")
        return Path(s).as_uri()
    url = _absolute(s, u)
    problem = "holds a control character" if has_control(u) else url_problem(url)
    if problem:
        raise InputError(f"URL {excerpt(u)} {problem}")
    return url


def _absolute(s: str, u: str) -> str:
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
        raise InputError(f"unsupported URL scheme {excerpt(scheme)} in {excerpt(u)}: expected http(s), ftp or file")
    if s.startswith("//"):
        return "https:" + s
    m = _HOST_COLON_PATH_RE.match(s)
    if m:
        host, path = m.group(1).lower(), m.group(2)
        if host in EBI_FASP_HOSTS:
            return "https://ftp.sra.ebi.ac.uk" + path
        raise InputError(f"cannot turn {excerpt(u)} into a URL: host:/path form is only known for ENA Aspera")
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
