#!/usr/bin/env python
"""Same as `resvision extract`: see `python tools/extract.py --help`."""
import sys

from resvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
