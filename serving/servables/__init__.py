"""Loaders that turn a version directory into a runnable servable."""
