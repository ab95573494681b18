"""Benchmarks: `python -m experiments.bench.NAME` (cat, decode, seqmatch, throughput). Leaf
scripts: they import the libraries and the core, never one another."""
