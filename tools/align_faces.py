"""Aligns every face of an identity-folder tree. Usage: python tools/align_faces.py SRC DST [--size 112]."""

import sys

from resvision.tasks.face.align import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
