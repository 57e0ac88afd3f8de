"""``python -m serving`` == ``tfx-model-server``."""

from serving.cli import run

run()
