"""The free-space guard of the download step, and measuring how much disk a tree uses.

Two ways of saying how much room there is:

* the file system's free space (:func:`free_bytes`, what ``df`` calls *Avail*: space an ordinary
  user may still write);
* a budget: ``limit`` bytes for everything below ``used_root`` (a ``disk_limit`` style cap), so
  that :func:`available_bytes` is ``min(free, limit - tree_bytes(used_root))``. This lets a
  pipeline keep to a share of a big disk, and lets tests simulate a small disk without filling one.

:func:`check_space` raises :class:`DiskSpaceError` when ``need + min_free`` does not fit;
:func:`wait_for_space` polls until it does (another batch's cleanup may free room) or times out.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from ..model import ExpectedFailure
from .sizes import human


class DiskSpaceError(ExpectedFailure):
    """Not enough room for a batch. ``path``, ``need``, ``min_free`` and ``available`` (bytes)
    are kept as attributes; the message gives them in human units."""

    def __init__(self, message: str, path=None, need: int = 0, min_free: int = 0, available: int = 0):
        super().__init__(message)
        self.path = path
        self.need = need
        self.min_free = min_free
        self.available = available


class DiskFullError(ExpectedFailure):
    """The disk filled during a download. The message names the run, the folder and the bytes needed."""


def _existing(path) -> Path:
    """``path`` or its nearest existing parent (the folder a download will be created in may not
    exist yet)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path) -> int:
    """Bytes an ordinary user may still write on the file system holding ``path`` (or its nearest
    existing parent)."""
    return shutil.disk_usage(_existing(path)).free


def total_bytes(path) -> int:
    """Size of the file system holding ``path`` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing(path)).total


def tree_bytes(path) -> int:
    """Apparent size (``st_size``) of the regular files at or below ``path``; 0 when it is absent.

    Symbolic links are not followed. Files or folders that vanish during the walk (a cleanup
    running at the same time) are skipped, so this can be called while others write and delete.
    """
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_size if os.path.isfile(path) and not os.path.islink(path) else 0
    total = 0
    linked: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:  # vanished, or unreadable
            continue
        with it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if st.st_nlink > 1:  # a hard link (the amalgkit-named quant files): count it once
                            if (st.st_dev, st.st_ino) in linked:
                                continue
                            linked.add((st.st_dev, st.st_ino))
                        total += st.st_size
                except OSError:
                    continue
    return total


def _measure(path, limit: Optional[int], used_root) -> tuple[int, str]:
    """(available bytes, words explaining a budget for error messages)."""
    free = free_bytes(path)
    if limit is None:
        return free, ""
    root = used_root if used_root is not None else path
    used = tree_bytes(root)
    avail = max(0, min(free, limit - used))
    return avail, (
        f" (disk_limit {human(limit)} with {human(used)} already used under {root}; {human(free)} free on the disk)"
    )


def available_bytes(path, limit: Optional[int] = None, used_root=None) -> int:
    """Room for new data under ``path``.

    Without ``limit``: :func:`free_bytes`. With ``limit``: ``min(free_bytes(path), limit -
    tree_bytes(used_root))`` (``used_root`` defaults to ``path``), never below 0, i.e. the
    pipeline may hold at most ``limit`` bytes below ``used_root`` whatever the disk's size.
    """
    return _measure(path, limit, used_root)[0]


def check_space(
    path, need: int, min_free: int = 0, *, limit: Optional[int] = None, used_root=None, what: str = "batch"
) -> int:
    """Raise DiskSpaceError unless ``need`` bytes plus a ``min_free`` margin fit under ``path``.

    Room is :func:`available_bytes` (``limit``/``used_root`` as there). Returns the room found. The
    message reads ``batch needs 3.0 GiB (+ 10.0 GiB margin) under /out/fastq but only 1.2 GiB is
    free``; ``what`` replaces ``batch`` (e.g. ``"batch 7 of Homo_sapiens"``).
    """
    if need < 0 or min_free < 0:
        raise ValueError(f"need and min_free must be >= 0, got need={need}, min_free={min_free}")
    avail, detail = _measure(path, limit, used_root)
    if need + min_free > avail:
        raise DiskSpaceError(
            f"{what} needs {human(need)} (+ {human(min_free)} margin) under {path} "
            f"but only {human(avail)} is free{detail}",
            path=path,
            need=need,
            min_free=min_free,
            available=avail,
        )
    return avail


def _logger(log) -> Callable[[str], None]:
    if log is None:
        return lambda message: None
    for name in ("write", "info"):  # RunLog.write, logging.Logger.info
        fn = getattr(log, name, None)
        if callable(fn):
            return fn
    if callable(log):
        return log
    raise TypeError(f"log must be a callable, a RunLog or a logger, got {type(log).__name__}")


def wait_for_space(
    path,
    need: int,
    min_free: int = 0,
    timeout_s: float = 0,
    poll_s: float = 10,
    log=None,
    *,
    limit: Optional[int] = None,
    used_root=None,
    what: str = "batch",
    log_every_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Poll :func:`check_space` every ``poll_s`` s until it passes; return the room found.

    Gives up with DiskSpaceError after ``timeout_s`` (0: check once), and at once when waiting
    cannot help: ``need + min_free`` larger than ``limit`` or than the whole file system. ``log``
    (a callable, a RunLog or a logging.Logger) hears of the first shortfall, then at most every
    ``log_every_s`` s, and of the end of the wait. ``sleep``/``clock`` are for tests.
    """
    want = need + min_free
    ceiling = total_bytes(path) if limit is None else min(limit, total_bytes(path))
    if want > ceiling:
        kind = "disk_limit" if limit is not None and limit <= total_bytes(path) else "file system size"
        raise DiskSpaceError(
            f"{what} needs {human(need)} (+ {human(min_free)} margin) under {path}, more than the "
            f"{kind} of {human(ceiling)}: it can never fit; raise the limit or make batches smaller "
            "(batch.max_bytes / batch.size)",
            path=path,
            need=need,
            min_free=min_free,
            available=0,
        )
    say = _logger(log)
    start = clock()
    last_said = None
    while True:
        try:
            avail = check_space(path, need, min_free, limit=limit, used_root=used_root, what=what)
        except DiskSpaceError as e:
            waited = clock() - start
            if waited >= timeout_s:
                if timeout_s > 0:
                    raise DiskSpaceError(
                        f"{e}; gave up after waiting {waited:.0f} s",
                        path=e.path,
                        need=e.need,
                        min_free=e.min_free,
                        available=e.available,
                    ) from None
                raise
            if last_said is None or clock() - last_said >= log_every_s:
                say(f"waiting for disk space (up to {timeout_s:.0f} s): {e}")
                last_said = clock()
            sleep(max(0.0, min(poll_s, timeout_s - waited)))
            continue
        if last_said is not None:
            say(f"disk space: {human(avail)} free under {path} after waiting {clock() - start:.0f} s")
        return avail
