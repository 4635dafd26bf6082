import sys

from ..cli.report import main

sys.exit(main())
