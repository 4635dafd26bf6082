"""Small file-system helpers: atomic writes and safe paths."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
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
