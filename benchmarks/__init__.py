"""Benchmark of this model server against its alternatives (see benchmarks/README.md)."""
