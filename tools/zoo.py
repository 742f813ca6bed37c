"""Prints the backbone zoo table; same as ``resvision zoo``. Usage: python tools/zoo.py [--format markdown]."""

import sys

from resvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["zoo", *sys.argv[1:]]))
