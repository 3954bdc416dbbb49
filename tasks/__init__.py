"""Benchmarks (``evalkit.tasks``): loading, prompting, which judges, how to aggregate."""
