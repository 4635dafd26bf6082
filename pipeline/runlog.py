"""Per-run log files under ``work/logs/RUN.log``: one timestamped line per event."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional


class RunLog:
    def __init__(self, path: Optional[Path]):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, message: str) -> None:
        if not self.path:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
