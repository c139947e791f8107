"""Benchmarks: runnable scripts that print their figures (not timed tests)."""
