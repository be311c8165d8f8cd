"""``python -m ktg.cli``: the ``ktg`` command without its console script."""

import sys

from ktg.cli import main

sys.exit(main())
