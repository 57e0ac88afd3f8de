"""The status page ``tfx-model-server`` serves on its REST port (``/status``)."""
