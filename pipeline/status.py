"""``python -m pipeline.status``: the command in :mod:`pipeline.cli.status`."""

import sys

from .cli.status import main

if __name__ == "__main__":
    sys.exit(main())
