"""Benchmark runner and report writers (``bie bench``); imported only by that command."""
