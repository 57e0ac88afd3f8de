"""Output that says nothing to the user, silenced by our entry points (never on import).

Used by ``scripts/demo.py`` and ``python -m pipelines.serving_demo``; the library itself
(components/, serving/) changes no warning filter or log level for its importers.

- Google client libraries warn on every import under Python 3.10 ("You are using a
  non-supported Python version", "Support for google-cloud-storage < 3.0.0 will be removed"):
  FutureWarnings about the environment, 36 of them per pipeline run.
- TensorFlow's C++ runtime prints at import time that it cannot register the cuFFT, cuDNN and
  cuBLAS factories (XLA registers them twice in the pip wheel; harmless, tensorflow/tensorflow
  #62075), that no CUDA driver or TensorRT exists, and which CPU instructions it was built
  for. These are written to file descriptor 2 by C++, so Python cannot filter them: a parent
  process reading the child's output drops them (:func:`is_noise`), and
  :func:`native_stderr_filtered` does it for the calling process.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

_NOISE = re.compile(
    "|".join(
        [
            r"Unable to register cu(FFT|DNN|BLAS) factory: Attempting to register factory",
            r"Could not find cuda drivers on your machine, GPU will not be used",
            r"TF-TRT Warning: Could not find TensorRT",
            r"oneDNN custom operations are on\. You may see slightly different numerical",
            r"This TensorFlow binary is optimized to use available CPU instructions",
            r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate",
            r"^\s*warnings\.warn\(message, FutureWarning\)$",
            r"google/api_core/_python_version_support\.py:\d+: FutureWarning",
        ]
    )
)


def silence_python_warnings() -> None:
    """FutureWarnings raised by ``google.*`` modules (Python-version and dependency-version
    notices from the Google SDKs TFX imports); call before importing TFX or TensorFlow."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google(\.|$)")


def is_noise(line: str) -> bool:
    """A line of a child's output that only repeats import-time environment noise."""
    return bool(_NOISE.search(line.rstrip("\n")))


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Captures file descriptor 2 for the block (e.g. ``import tensorflow``) and replays
    every line except :func:`is_noise` ones, so real errors still reach the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for raw in capture:
                line = raw.decode("utf-8", "replace")
                if not is_noise(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
