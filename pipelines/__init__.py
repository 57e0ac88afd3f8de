"""Example pipelines using the tfx-serving-suite components."""
