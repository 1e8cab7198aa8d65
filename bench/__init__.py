"""Benchmarks of turbine-watch (``make bench``); see :mod:`bench.engine`."""
