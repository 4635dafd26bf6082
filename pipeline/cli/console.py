"""What the pipeline says to the person at the terminal: the start-up error block, and one line
instead of a traceback for each failure the pipeline foresees."""

from __future__ import annotations

import logging
import sys
from typing import Any

from ..model import ExpectedFailure

BAR = "=" * 72


def report_input_error(error: Exception) -> None:
    """Configuration problems are the user's to fix: say them plainly, in one block on stderr."""
    print(
        f"\n{BAR}\nCannot start: the configuration or metadata has problems:\n{error}\n{BAR}\n",
        file=sys.stderr,
        flush=True,
    )
    if isinstance(error, ExpectedFailure):
        error.reported = True
    _REPORTED.add(str(error).splitlines()[0] if str(error) else "")


#: first lines of the messages already shown in full (a traceback of them is not shown again)
_REPORTED: set[str] = set()


def _expected_names() -> set[str]:
    """Qualified names of every ExpectedFailure class, as a traceback's last line spells them."""
    out, todo = set(), [ExpectedFailure]
    while todo:
        cls = todo.pop()
        out.add(f"{cls.__module__}.{cls.__qualname__}")
        todo.extend(cls.__subclasses__())
    return out


def _from_trace(trace: str) -> tuple[str, str] | None:
    """``(exception class, message)`` from a formatted traceback whose exception is foreseen."""
    lines = trace.rstrip().splitlines()
    names = _expected_names()
    for i in range(len(lines) - 1, -1, -1):  # the message may span lines: find its "Class: " start
        name, sep, first = lines[i].partition(": ")
        if sep and name in names:
            return name, "\n".join([first, *lines[i + 1 :]])
    return None


def task_label(task: Any) -> str:
    """``BatchDownload Camponotus_floridanus batch 3`` for a pipeline task; ``str(task)`` otherwise."""
    try:
        label = f"{task.get_task_family()} {task.cfg.species}"
    except Exception:
        return str(task)
    batch = getattr(task, "batch", None)
    return label if batch is None else f"{label} batch {batch}"


class ExpectedFailureFilter(logging.Filter):
    """On Luigi's logger: a record about a foreseen failure (:class:`~pipeline.model.ExpectedFailure`)
    loses its traceback and says ``TASK failed: MESSAGE``; one already shown in full is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        task = next((a for a in args if hasattr(a, "task_id")), None)
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        if isinstance(exc, ExpectedFailure):
            if exc.reported:
                return False
            message: str = str(exc)
        else:  # Luigi passes some tracebacks as text (an error in requires() or complete())
            texts = [a for a in args if isinstance(a, str)] + ([record.msg] if isinstance(record.msg, str) else [])
            found = next((f for t in texts if "Traceback" in t and (f := _from_trace(t))), None)
            if found is None:
                return True
            message = found[1]
            if message.splitlines()[0] in _REPORTED:
                return False
        label = task_label(task) if task is not None else "the pipeline"
        record.msg, record.args = "%s failed: %s", (label, message)
        record.exc_info, record.exc_text = None, None
        return True


def install_failure_filter() -> None:
    logger = logging.getLogger("luigi-interface")
    if not any(isinstance(f, ExpectedFailureFilter) for f in logger.filters):
        logger.addFilter(ExpectedFailureFilter())


class _ProgressFormatter(logging.Formatter):
    """The pipeline's own lines: progress as it is, warnings and errors with their level first."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


class ProgressHandler(logging.StreamHandler):
    """Prints the ``pipeline`` loggers' records (progress at INFO, warnings, errors) on stderr."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(_ProgressFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the stream of the moment (a test may have replaced it)
        super().emit(record)


def install_progress_handler() -> None:
    logger = logging.getLogger("pipeline")
    if not any(isinstance(h, ProgressHandler) for h in logger.handlers):
        logger.addHandler(ProgressHandler())
        logger.setLevel(logging.INFO)
