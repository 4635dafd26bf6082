"""``python -m pipeline.retry``: the command in :mod:`pipeline.cli.reset`."""

import sys

from .cli.reset import main

if __name__ == "__main__":
    sys.exit(main())
