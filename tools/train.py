#!/usr/bin/env python
"""Same as `resvision train`: see `python tools/train.py --help`."""
import sys

from resvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
