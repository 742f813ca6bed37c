#!/usr/bin/env python
"""Same as `resvision export`: see `python tools/export.py --help`."""
import sys

from resvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
