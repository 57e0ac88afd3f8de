"""Which Python runs the metadata worker, and whether it can.

The worker (:mod:`serving.metadata.worker`) is the only process that imports ``ml_metadata``.
ml-metadata 1.16 — the version TFX 1.16 pipelines write with, so the store's schema matches —
has wheels for Python 3.10 only and needs protobuf < 4, while the server also runs on the current
stack (Python 3.12, protobuf 5+; docs/stacks.md). So the worker may run from another
environment than the server: ``$TFX_SERVING_METADATA_PYTHON`` names its interpreter (in the
serving image ``/opt/metadata-venv/bin/python``; in a checkout the TFX stack's
``.venv/bin/python``). Unset, the worker runs on the server's own interpreter, as before.

Server and worker speak only through the spool's SQLite tables and the query socket's JSON
lines, both defined in this package, so both sides must run the same version of it: the check
below compares them before serving starts, and fails with a fix instead of losing reports.
"""

from __future__ import annotations

import os
import subprocess
import sys

from serving.errors import ConfigError
from serving.version import __version__

WORKER_PYTHON_ENV = "TFX_SERVING_METADATA_PYTHON"
_PROBE = "import ml_metadata, serving, serving.metadata.worker; print(serving.__version__)"
_PROBE_TIMEOUT_SECONDS = 120.0


class WorkerPythonError(ConfigError):
    """The metadata worker's interpreter cannot run the worker; the message says what to do."""


def worker_python() -> str:
    return os.environ.get(WORKER_PYTHON_ENV) or sys.executable


def check_worker_python(python: str) -> None:
    """Raises :class:`WorkerPythonError` unless ``python`` can run this version's worker.

    Runs the interpreter once (about a second, at startup only), from the working directory the
    worker will get, so it sees the same ``serving`` package the worker will import.
    """
    if python == sys.executable:
        fix = (
            "install ml-metadata here (pip install 'ml-metadata>=1.16,<1.17'; Python 3.10 only) "
            f"or set {WORKER_PYTHON_ENV} to a Python that has it and this package "
            "(docs/stacks.md), or drop --metadata_connection"
        )
    else:
        fix = (
            "it needs ml-metadata 1.16 and this package (pip install -r "
            "requirements/metadata-worker.txt && pip install --no-deps <this project>)"
        )
    try:
        probe = subprocess.run(
            [python, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkerPythonError(
            f"{WORKER_PYTHON_ENV}={python} cannot be run ({exc}); point it at a Python with "
            "ml-metadata and this package, or unset it"
        ) from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WorkerPythonError(
            f"--metadata_connection: the metadata worker cannot run on {python} ({last}); {fix}"
        )
    version = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else ""
    if version != __version__:
        raise WorkerPythonError(
            f"{WORKER_PYTHON_ENV}={python} has tfx-serving-suite {version or '(unknown)'} but "
            f"this server is {__version__}; install the same version in both environments"
        )
