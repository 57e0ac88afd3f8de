"""Shared test helpers: real SavedModels built on the fly and a real server subprocess."""
