"""``python -m ragserve.cli``: the same as the ``ragserve`` console script."""

import sys

from ragserve.cli.app import main

sys.exit(main())
