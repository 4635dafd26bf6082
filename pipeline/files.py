"""Writing files so that a kill at any instant leaves either the old version or the new one.

Two helpers cover every output the pipeline writes: :func:`staged_file` for a file written from
Python, :func:`staged_path` for a file or folder that another program (kallisto, fasterq-dump) or
several steps fill. Both use a temporary name beside the destination (:func:`temp_path`) and
rename it into place only when the block ends without error; on error the temporary is removed.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

#: Every temporary name the pipeline makes is ``.NAME.TAG.tmp`` (or ``.NAME.tmp``) in the
#: destination's folder, so one pattern finds what an interrupted run left.
TEMP_SUFFIX = ".tmp"


def temp_path(dest, tag: str = "") -> Path:
    """The temporary name for ``dest``: ``.NAME.tmp``, or ``.NAME.TAG.tmp``."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}{'.' + tag if tag else ''}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_path(path) -> None:
    """Remove a file or a folder tree; nothing when it is absent."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextmanager
def staged_path(dest, tag: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` (cleared first) for a file or folder to be made.

    When the block ends without error and the temporary exists, it replaces ``dest`` (a folder at
    ``dest`` is removed first); a block that removed it leaves ``dest`` as it was. On error the
    temporary is removed and the error goes on.
    """
    dest = Path(dest)
    tmp = temp_path(dest, tag)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_path(tmp)
    try:
        yield tmp
        if tmp.exists():
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
    finally:
        remove_path(tmp)


@contextmanager
def staged_file(dest, mode: str = "w", sync: bool = True, tag: str = "", **open_kw: Any) -> Iterator[IO]:
    """Open a temporary file beside ``dest`` for writing; it becomes ``dest`` (synced to disk
    first, unless ``sync`` is false) when the block ends without error."""
    with staged_path(dest, tag) as tmp:
        with open(tmp, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())


def atomic_write_text(path, text: str, sync: bool = True) -> None:
    """``text`` into ``path`` by rename; ``sync=False`` leaves the flush to the caller, who writes
    many files and then calls :func:`sync_filesystem` once before anything that depends on them."""
    with staged_file(path, "w", sync=sync, tag=str(os.getpid()), encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_json(path, obj, sync: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", sync=sync)


def sync_filesystem(path) -> None:
    """Flush every written file of the file system holding ``path`` to disk (``syncfs``; a whole
    ``sync`` where that call is missing). One call costs about what one ``fsync`` does, where
    12,500 batch files synced one by one took 19 s."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS is None or _SYNCFS(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _find_syncfs():
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _find_syncfs()


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


def inside(path, root) -> bool:
    """True when ``path`` resolves to ``root`` or somewhere below it."""
    p, r = Path(path).resolve(), Path(root).resolve()
    return p == r or r in p.parents


def remove_tree_files(root) -> int:
    """Delete every file below ``root`` (keeping ``root`` itself); return the bytes freed."""
    freed = 0
    root = Path(root)
    if not root.exists():
        return 0
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = Path(dirpath) / name
            try:
                freed += p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                pass
        if Path(dirpath) != root:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    return freed


def remove_stale_temps(root) -> list[Path]:
    """Remove every temporary (``.NAME[.TAG].tmp``, file or folder) below ``root``; return them.

    Only for a process that alone writes ``root`` (it holds the run lock exclusively): what an
    interrupted run left is never needed again (resumable downloads are ``.NAME.part``, kept).
    """
    removed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            if is_temp_name(name):
                p = Path(dirpath) / name
                remove_path(p)
                removed.append(p)
        dirnames[:] = [d for d in dirnames if not is_temp_name(d)]
    return removed
