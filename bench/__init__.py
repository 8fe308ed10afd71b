"""Benchmarks: ``python -m bench`` writes one JSON file per benchmark into bench/results/."""
