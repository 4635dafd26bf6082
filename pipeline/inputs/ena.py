"""Run metadata straight from the ENA portal API (``/search?result=read_run``).

:func:`search_url` builds the request (pure); :func:`fetch_search` performs it with the same
retry policy as the downloads (429 and 5xx retried with capped exponential back-off, honouring
``Retry-After``; dropped connections retried too) and saves the answer atomically, as a TSV that
:func:`pipeline.inputs.metadata.load_runs` reads (``ena`` format).

An existing answer is reused without any request unless ``refresh=True``: a pipeline that is
restarted does not ask ENA again, and the run list stays the one the first attempt saw.
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

from ..fetch.http import RETRY_STATUSES, USER_AGENT, connection_problem, host_of, read_blocks, retry_after
from ..fetch.retry import GiveUp, Retryable, RetryPolicy, wait_or_give_up
from ..files import staged_path
from ..model import ExpectedFailure, excerpt
from ..runlog import RunLog

DEFAULT_BASE_URL = "https://www.ebi.ac.uk/ena/portal/api"

#: ``read_run`` return fields the pipeline needs (names as the ENA portal API spells them).
FIELDS = [
    "run_accession",
    "experiment_accession",
    "sample_accession",
    "study_accession",
    "library_layout",
    "library_strategy",
    "library_source",
    "library_selection",
    "instrument_platform",
    "instrument_model",
    "scientific_name",
    "tax_id",
    "read_count",
    "base_count",
    "fastq_ftp",
    "fastq_md5",
    "fastq_bytes",
    "sra_ftp",
    "sra_md5",
    "sra_bytes",
]

SNIPPET = 300  # characters of an error body quoted in messages
_FIELD_RE = re.compile(r"[A-Za-z0-9_]+")


class EnaError(ExpectedFailure):
    """The ENA portal API could not give a usable run table. The message names the URL and why."""


def search_url(query: str, base_url: str = DEFAULT_BASE_URL, fields: Sequence[str] = FIELDS, limit: int = 0) -> str:
    """The portal API URL of a ``read_run`` search for ``query``, answered as TSV.

    ``limit=0`` asks for every matching run. Raises EnaError for an empty query, an empty or
    malformed field list, or a negative limit.
    """
    if not isinstance(query, str) or not query.strip():
        raise EnaError(f"ENA search query must be a non-empty string, got {excerpt(query)}")
    if isinstance(fields, str):
        fields = [f.strip(" ") for f in fields.split(",")]  # blanks only: a field name is matched whole
    fields = list(fields)
    if not fields:
        raise EnaError("ENA search needs at least one field (run_accession)")
    bad = [f for f in fields if not isinstance(f, str) or not _FIELD_RE.fullmatch(f)]
    if bad:
        raise EnaError(f"invalid ENA field name(s) {excerpt(bad)}: expected letters, digits and _")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise EnaError(f"ENA search limit must be an integer >= 0 (0 = all), got {excerpt(limit)}")
    if not isinstance(base_url, str) or not re.match(r"^https?://", base_url):
        raise EnaError(f"ENA base URL must start with http:// or https://, got {excerpt(base_url)}")
    params = [
        ("result", "read_run"),
        ("query", query.strip()),
        ("fields", ",".join(fields)),
        ("format", "tsv"),
        ("limit", str(limit)),
    ]
    qs = urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe="(),")
    return f"{base_url.rstrip('/')}/search?{qs}"


def _snippet(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return " ".join(text.split())[:SNIPPET]


def _check_table(path: Path, url: str, query: str) -> int:
    """Number of data rows of a saved answer; EnaError if it is not a run table or has no rows."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
        fh.seek(0)
        header = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
        rows = sum(1 for line in fh if line.strip())
    columns = [c.strip() for c in header.split("\t")]
    if not header.strip() and rows == 0:
        raise EnaError(f"ENA returned no runs for query {excerpt(query)} ({url}): check the taxon id / query")
    if "run_accession" not in columns:
        raise EnaError(
            f"{url}: the answer is not a read_run TSV (no run_accession column in its header); "
            f"it starts with: {_snippet(head)!r}"
        )
    if rows == 0:
        raise EnaError(f"ENA returned no runs for query {excerpt(query)} ({url}): check the taxon id / query")
    return rows


def _attempt(url: str, part: Path, policy: RetryPolicy, query: str) -> None:
    """One request, body streamed into ``part``. Raises Retryable or EnaError."""
    req = urllib.request.Request(
        url,
        headers={
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
            "Accept": "text/plain, text/tab-separated-values, */*",
        },
    )
    try:
        resp = urllib.request.urlopen(req, timeout=policy.stall_seconds)
    except urllib.error.HTTPError as e:
        try:
            body = e.read(64 * 1024) or b""
        except (OSError, http.client.HTTPException):
            body = b""
        if e.code in RETRY_STATUSES:
            raise Retryable(f"HTTP {e.code}", wait=retry_after(e.headers.get("Retry-After"))) from None
        raise EnaError(f"{url}: HTTP {e.code} {e.reason}: {_snippet(body) or '(empty body)'}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise Retryable(connection_problem(e)) from None
    with resp:
        if resp.status == 204:
            raise EnaError(f"ENA returned no runs for query {excerpt(query)} ({url}): check the taxon id / query")
        if resp.status != 200:
            raise EnaError(f"{url}: unexpected HTTP {resp.status}: {_snippet(resp.read(4096))}")
        expected = resp.headers.get("Content-Length")
        got = 0
        with open(part, "wb") as out:
            for block in read_blocks(resp, policy):
                out.write(block)
                got += len(block)
        if expected and expected.strip().isdigit() and got < int(expected):
            raise Retryable(f"short read: {got} of {int(expected)} bytes")


def fetch_search(
    query: str,
    dest,
    base_url: str = DEFAULT_BASE_URL,
    policy: Optional[RetryPolicy] = None,
    log: Optional[RunLog] = None,
    refresh: bool = False,
    fields: Sequence[str] = FIELDS,
) -> dict:
    """Save the ENA ``read_run`` search for ``query`` as a TSV at ``dest`` (atomically).

    If ``dest`` exists and ``refresh`` is false, no request is made and the file is reused.
    Returns {"path", "runs" (data rows), "url", "reused", "seconds"}; raises EnaError when ENA
    finds no runs (HTTP 204 or a header-only answer), rejects the query (4xx: status and the
    start of ENA's explanation), answers something that is not a run table, or keeps failing
    after ``policy.attempts`` tries.
    """
    t0 = time.monotonic()
    policy = policy or RetryPolicy()
    log = log or RunLog(None)
    url = search_url(query, base_url, fields)
    dest = Path(dest)
    if dest.exists() and not refresh:
        try:
            runs = _check_table(dest, str(dest), query)
        except EnaError as e:
            raise EnaError(
                f"existing metadata file {dest} is not usable ({e}); delete it or fetch again with refresh"
            ) from None
        log.write(f"{dest.name}: reusing the saved ENA answer ({runs} runs)")
        return {"path": str(dest), "runs": runs, "url": url, "reused": True, "seconds": round(time.monotonic() - t0, 3)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.write(f"ENA search: {url}")
    give_up = GiveUp(lambda m: EnaError(f"ENA portal {host_of(url)}: {m}"))
    attempt = 0
    try:
        with staged_path(dest, str(os.getpid())) as part:
            while True:
                attempt += 1
                try:
                    _attempt(url, part, policy, query)
                    runs = _check_table(part, url, query)
                    break
                except Retryable as r:
                    wait_or_give_up(policy, attempt, r, log, "ENA search", give_up)
    except EnaError as e:
        log.write(f"ENA search: {e}")
        raise
    log.write(f"{dest.name}: {runs} runs from {url} (attempt {attempt})")
    return {"path": str(dest), "runs": runs, "url": url, "reused": False, "seconds": round(time.monotonic() - t0, 3)}
