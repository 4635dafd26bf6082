"""What the pipeline says to the person at the terminal, outside the log: the start-up error block."""

from __future__ import annotations

import sys

BAR = "=" * 72


def report_input_error(error: Exception) -> None:
    """Configuration problems are the user's to fix: say them plainly, in one block on stderr."""
    print(
        f"\n{BAR}\nCannot start: the configuration or metadata has problems:\n{error}\n{BAR}\n",
        file=sys.stderr,
        flush=True,
    )
