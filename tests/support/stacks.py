"""The two Python environments the serving runtime runs on (docs/stacks.md), for tests that
start a process on the other one: the TFX 1.16 stack (``.venv``, Python 3.10) and the current
serving stack (``.venv-serving``, Python 3.12). ``scripts/bootstrap.sh tfx serving`` makes both;
``TFX_SERVING_TFX_PYTHON`` / ``TFX_SERVING_CURRENT_PYTHON`` point elsewhere.

A missing environment skips the test with the command that makes it, and fails it under CI,
where ``scripts/test.sh`` always makes both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.metadata.worker_python import WORKER_PYTHON_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]


def _python(env: str, venv: str, stack: str) -> str:
    path = os.environ.get(env) or str(REPO_ROOT / venv / "bin" / "python")
    if os.access(path, os.X_OK):
        return path
    message = (
        f"the {stack} environment is missing ({path}): run scripts/bootstrap.sh "
        f"{'tfx' if venv == '.venv' else 'serving'}, or set {env}"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tfx_stack_python() -> str:
    """Python 3.10 with TFX 1.16, TF 2.16, protobuf 3.20 and ml-metadata 1.16."""
    return _python("TFX_SERVING_TFX_PYTHON", ".venv", "TFX 1.16 stack")


def current_stack_python() -> str:
    """Python 3.12 with TF 2.21 (CPU), protobuf 5+ and numpy 2; no tfx, no ml-metadata."""
    return _python("TFX_SERVING_CURRENT_PYTHON", ".venv-serving", "current serving stack")


_VERSIONS = """
import importlib.metadata as m, json, platform
def version(*names):
    for name in names:
        try:
            return m.version(name)
        except m.PackageNotFoundError:
            pass
    return ""
print(json.dumps({"python": platform.python_version(),
                  "tensorflow": version("tensorflow", "tensorflow-cpu"),
                  "protobuf": version("protobuf"), "numpy": version("numpy")}))
"""


def stack_versions(python: str) -> dict[str, str]:
    """Python, TensorFlow, protobuf and numpy versions in ``python``'s environment."""
    out = subprocess.run([python, "-c", _VERSIONS], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def runtime_version_of(python: str) -> str:
    """The stack part of the ``runtime_version`` a server on ``python`` reports to MLMD
    (``serving.metadata.reporter.runtime_version``)."""
    versions = stack_versions(python)
    return f"(Python {versions['python']}, TensorFlow {versions['tensorflow']})"


def server_on_current_stack() -> dict:
    """``ServerProcess`` arguments that run the server on the current stack with its MLMD worker
    on this (TFX stack) interpreter: the serving image's configuration (docs/stacks.md)."""
    python = current_stack_python()
    assert stack_versions(python)["python"].startswith("3.12"), python
    return {"python": python, "env": {WORKER_PYTHON_ENV: sys.executable}}
