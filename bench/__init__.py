"""Benchmarks: where registry-watcher stands against the naive approach and against the floor.

`make bench` (or `python -m bench`) runs every benchmark; `python -m bench NAME` runs one.
See bench/README.md for what each measures and how to read the figures.
"""
