"""Helpers of ``tools/benchmark.py`` (``make bench``): timing method and the compared training loops."""
