"""Which runs of a metadata table are used: the selection keys of ``metadata:`` and their checks.

Each check is written once here; the species config reports its problems under the YAML key, and
:func:`check_selection` under the selection key, with the same words. A check looks at the value
and at most one level of list inside it, stopping at the first bad item, and quotes it with
:func:`~pipeline.model.excerpt`: a YAML alias bomb is rejected without being walked. Strings are
checked whole: blanks around them are dropped, a control character anywhere is an error.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..model import PAIRED, SINGLE, InputError, check_accession, excerpt, has_control

SELECTION_KEYS = ("library_strategy", "library_source", "layout", "exclude_runs", "max_runs")


def _text(x: Any) -> bool:
    """A non-blank string without control characters."""
    return isinstance(x, str) and bool(x.strip()) and not has_control(x)


def _strings(v: Any) -> Optional[str]:
    values = [v] if isinstance(v, str) else v
    if not isinstance(values, (list, tuple)) or not values or not all(_text(x) for x in values):
        bad = next((x for x in values if not _text(x)), v) if isinstance(values, (list, tuple)) else v
        return f"must be a string or a list of strings without control characters, got {excerpt(bad)}"
    return None


def _layout(v: Any) -> Optional[str]:
    if not _text(v) or v.strip().upper() not in (PAIRED, SINGLE):
        return f"must be PAIRED or SINGLE, got {excerpt(v)}"
    return None


def _accessions(v: Any) -> Optional[str]:
    values = [v] if isinstance(v, str) else v
    if not isinstance(values, (list, tuple, set, frozenset)):
        return f"must be a list of run accessions, got {excerpt(v)}"
    for x in values:
        try:
            check_accession(x.strip() if isinstance(x, str) and not has_control(x) else x)
        except InputError as e:
            return str(e)
    return None


def _max_runs(v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return f"must be a whole number >= 1, got {excerpt(v)}"
    return None


#: key -> the check of its value (None when the value is fine, else what is wrong with it)
CHECKS: dict[str, Callable[[Any], Optional[str]]] = {
    "library_strategy": _strings,
    "library_source": _strings,
    "layout": _layout,
    "exclude_runs": _accessions,
    "max_runs": _max_runs,
}


def check_selection(selection: Optional[dict]) -> dict:
    """The selection normalised (lists of stripped strings, an upper-case layout, a set of runs to
    exclude); InputError for an unknown key or a bad value. None values mean "not given"."""
    if selection is None:
        return {}
    if not isinstance(selection, dict):
        raise InputError(f"selection must be a mapping, got {type(selection).__name__}")
    unknown = [excerpt(k) for k in selection if k not in SELECTION_KEYS]
    if unknown:
        raise InputError(
            f"unknown selection key(s) {', '.join(unknown[:10])}: known keys are {', '.join(SELECTION_KEYS)}"
        )
    out: dict = {}
    for key, v in selection.items():
        if v is None or (v == [] and key != "max_runs"):
            continue
        problem = CHECKS[key](v)
        if problem:
            raise InputError(f"selection {key} {problem}")
        if key in ("library_strategy", "library_source"):
            out[key] = [x.strip() for x in ([v] if isinstance(v, str) else v)]
        elif key == "layout":
            out[key] = v.strip().upper()
        elif key == "exclude_runs":
            out[key] = {x.strip() for x in ([v] if isinstance(v, str) else v)}
        else:
            out[key] = v
    return out
