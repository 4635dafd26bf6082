"""The checks of single values in a species YAML: each takes the value and returns why it is
refused (a short phrase that quotes a bounded excerpt of it), or None when it is good."""

from __future__ import annotations

import math
import re

from ..model import SOURCES, excerpt, has_control
from ..plan.sizes import parse_size
from .urls import url_problem

URL_RE = re.compile(r"^(https?|ftp|file)://", re.IGNORECASE)
#: Longest path or URL accepted (Linux's PATH_MAX).
MAX_PATH = 4096
#: A ``download.mirrors`` prefix, matched whole: a scheme, then no blank or control character.
_PREFIX_RE = re.compile(r"(?:https?|ftp|file)://[^\s\x00-\x1f\x7f-\x9f]*", re.IGNORECASE)


def _int_min(lo):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {excerpt(v)}"
        if v < lo:
            return f"must be >= {lo}, got {excerpt(v)}"

    return check


def _int_range(lo, hi):
    def check(v):
        problem = _int_min(lo)(v)
        if problem is None and v > hi:
            return f"must be <= {hi}, got {excerpt(v)}"
        return problem

    return check


def _positive_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"must be a number, got {excerpt(v)}"
    if (isinstance(v, float) and not math.isfinite(v)) or v <= 0:
        return f"must be a finite number > 0, got {excerpt(v)}"


def _path(v):
    """A local path or a URL (``reference.transcriptome``, ``metadata.file``)."""
    if not isinstance(v, str) or not v.strip() or has_control(v) or len(v) > MAX_PATH:
        return f"must be a non-empty path without control characters (at most {MAX_PATH}), got {excerpt(v)}"
    problem = url_problem(v) if URL_RE.match(v) else None
    if problem:
        return f"URL {excerpt(v)} {problem}"


def _query(v):
    """Free text: blanks and line breaks are fine, other control characters are not."""
    if not isinstance(v, str) or not v.strip() or has_control(v.translate({9: 32, 10: 32, 13: 32})):
        return f"must be a non-empty string without control characters, got {excerpt(v)}"


def _mirrors(v):
    if not isinstance(v, dict):
        return f"must be a mapping of URL prefix to URL prefix, got {type(v).__name__}"
    for k, w in v.items():
        if not (isinstance(k, str) and _PREFIX_RE.fullmatch(k) and isinstance(w, str) and _PREFIX_RE.fullmatch(w)):
            return (
                "entries must map a URL prefix to a URL prefix (scheme://..., no blanks or control "
                f"characters), got {excerpt(k)}: {excerpt(w)}"
            )
        problem = url_problem(k) or url_problem(w)
        if problem:
            return f"entry {excerpt(k)}: {excerpt(w)}: a prefix {problem}"


def _size(lo):
    def check(v):
        wrong = f"must be a size such as 40G, 500M or a number of bytes, got {excerpt(v)}"
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and has_control(v)):
            return wrong
        try:
            n = parse_size(v)
        except ValueError:
            return wrong
        if n < lo:
            return f"must be at least {lo} byte(s), got {excerpt(v)}"

    return check


def _sources(v):
    if (
        not isinstance(v, list)
        or not v
        or not all(isinstance(x, str) and x in SOURCES for x in v)
        or len(set(v)) != len(v)
    ):
        return f"must be a non-empty list drawn from [{', '.join(SOURCES)}] without repeats, got {excerpt(v)}"


def _bool(v):
    if not isinstance(v, bool):
        return f"must be true or false, got {excerpt(v)}"


def _one_of(*choices: str):
    def check(v):
        if not isinstance(v, str) or v not in choices:
            return f"must be one of {', '.join(choices)}, got {excerpt(v)}"

    return check
