#!/usr/bin/env python
"""Same as `resvision predict`: see `python tools/predict.py --help`."""
import sys

from resvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
