"""Servers the benchmark compares against; each is started as its own process."""
