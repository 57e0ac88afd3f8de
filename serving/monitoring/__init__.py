"""Prometheus metrics with TF Serving's names, enabled by --monitoring_config_file."""
