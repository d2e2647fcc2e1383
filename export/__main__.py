"""``python -m soundnet8.export``: the export command on its own (the engine runs it to build its cache)."""

import sys

from soundnet8.engine.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
