"""Custom op libraries: registered before any model loads, so graphs using their ops import.

TF Serving's binary links TF Text's kernels in; a Python server has exactly the ops of the
packages it imported. So at startup this registers the ops of op-library packages that are
installed (``tensorflow-text``, via ``pip install 'tfx-serving-suite[text]'``) and whatever
``--custom_op_libraries`` names: a ``.so`` file (``tf.load_op_library``) or a Python module
whose import registers its ops (``tensorflow_decision_forests``, ``my_project.ops``).

A model that still needs an unknown op fails its load with a message that names the op and
both ways to add it, instead of TensorFlow's bare "Op type not registered". The command line
is checked (files exist, modules are installed) before TensorFlow is even imported, so a typo
fails in a second, not after TensorFlow's start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from collections.abc import Sequence

from serving.errors import Code, ConfigError, ServingError

log = logging.getLogger(__name__)

# Packages whose import registers ops that TF Serving's own binary ships with.
AUTOLOAD_PACKAGES = ("tensorflow_text",)

_UNREGISTERED_OP = re.compile(r"Op type not registered '([^']+)'")


class OpLibraryError(ConfigError):
    """A library named by ``--custom_op_libraries`` that cannot be loaded."""


def parse_op_libraries(text: str) -> list[str]:
    """``--custom_op_libraries`` is comma-separated, like TF Serving's list flags."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _is_shared_object(spec: str) -> bool:
    return spec.endswith(".so") or os.sep in spec


def check_op_libraries(specs: Sequence[str]) -> None:
    """Cheap checks without importing anything heavy: each file exists, each module is
    installed. Raises OpLibraryError."""
    for spec in specs:
        if _is_shared_object(spec):
            if not os.path.isfile(spec):
                raise OpLibraryError(f"--custom_op_libraries: no such op library file: {spec}")
            continue
        try:
            found = importlib.util.find_spec(spec) is not None
        except (ImportError, ValueError):  # a parent package is missing, or a bad name
            found = False
        if not found:
            raise OpLibraryError(
                f"--custom_op_libraries: cannot import Python module {spec!r} (not installed); "
                "install the package that provides it, or give the path of its .so file"
            )


def load_op_library(spec: str) -> None:
    """Loads one ``.so`` path or imports one Python module; raises OpLibraryError."""
    import tensorflow as tf

    check_op_libraries([spec])
    if _is_shared_object(spec):
        try:
            tf.load_op_library(spec)
        except (tf.errors.OpError, OSError) as exc:
            message = getattr(exc, "message", str(exc))
            raise OpLibraryError(
                f"--custom_op_libraries: cannot load {spec}: {message}. An op library must be "
                f"built against this TensorFlow ({tf.__version__})"
            ) from None
        return
    try:
        importlib.import_module(spec)
    except ImportError as exc:
        raise OpLibraryError(
            f"--custom_op_libraries: cannot import Python module {spec!r} ({exc}); install the "
            "package that provides it, or give the path of its .so file"
        ) from None


def load_op_libraries(requested: Sequence[str]) -> list[str]:
    """Installed autoload packages, then ``requested`` in order; returns what was loaded."""
    loaded: list[str] = []
    for package in AUTOLOAD_PACKAGES:
        if package in requested or importlib.util.find_spec(package) is None:
            continue
        try:
            importlib.import_module(package)
        except Exception as exc:  # e.g. built for another TF version: say so, keep serving
            log.warning("Installed op library %s could not be loaded: %s", package, exc)
            continue
        loaded.append(package)
    for spec in requested:
        load_op_library(spec)
        loaded.append(spec)
    if loaded:
        log.info("Op libraries loaded: %s", ", ".join(loaded))
    return loaded


def missing_op_error(message: str) -> ServingError | None:
    """An actionable load error when ``message`` is TF's "Op type not registered 'X'"."""
    match = _UNREGISTERED_OP.search(message)
    if match is None:
        return None
    import tensorflow as tf

    op = match.group(1)
    return ServingError(
        Code.NOT_FOUND,
        f"The model uses op '{op}', which no loaded op library registers. If it is a TF Text "
        "op, install tensorflow-text matching TensorFlow "
        f"{tf.__version__} (pip install 'tfx-serving-suite[text]'); otherwise start the "
        "server with --custom_op_libraries=<python module or /path/to/ops.so> naming the "
        f"library that defines it. TensorFlow said: {message.splitlines()[0]}",
    )
