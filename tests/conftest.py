"""Test-wide settings: quiet TF logs; the ``tests.support`` helpers import from the repo root."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Bind ``tests`` to this directory before anything imports TensorFlow: importing it puts
# IPython/extensions (which holds a regular ``tests`` package) on sys.path, and a regular package
# anywhere on the path wins over this namespace package, breaking ``import tests.support``.
import tests.support  # noqa: F401
