"""``python -m pipeline.refresh``: the command in :mod:`pipeline.cli.refresh`."""

import sys

from .cli.refresh import main

if __name__ == "__main__":
    sys.exit(main())
