"""Exporter: turns a Trainer's Model into a checked, serving-ready SavedModel with a manifest."""
