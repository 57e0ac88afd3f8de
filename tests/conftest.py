"""Test-wide settings: quiet TF logs; the ``tests.support`` helpers import from the repo root."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
