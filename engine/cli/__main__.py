"""``python -m soundnet8.engine.cli``: the ``soundnet8`` command without the console script."""

import sys

from soundnet8.engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
