"""The metadata worker's interpreter ($TFX_SERVING_METADATA_PYTHON) is checked before serving.

Runs on both stacks. The working configuration (a current-stack server whose worker runs on the
TFX stack) is exercised end to end in test_serving_lineage_e2e.py; here, the ways it can be
wrong end the server at startup with a message that says what to do, and nothing half-starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from serving.metadata.worker_python import (
    WORKER_PYTHON_ENV,
    WorkerPythonError,
    check_worker_python,
)
from tests.support.models import write_half_plus_two
from tests.support.server_process import REPO_ROOT, free_port
from tests.support.stacks import tfx_stack_python


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A real, empty environment on this interpreter: no ml-metadata in it."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False).create(root)
    return str(root / "bin" / "python")


def _start_server(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    store = tmp_path / "models" / "half"
    write_half_plus_two(str(store / "1"))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--host=127.0.0.1",
            f"--rest_api_port={free_port()}",
            "--port=0",
            "--model_name=half",
            f"--model_base_path={store}",
            f"--metadata_connection=sqlite://{tmp_path / 'metadata.sqlite'}",
            f"--metadata_spool_dir={tmp_path / 'spool'}",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.integration
def test_server_refuses_to_start_with_a_worker_python_lacking_ml_metadata(tmp_path, bare_python):
    result = _start_server(tmp_path, {WORKER_PYTHON_ENV: bare_python})
    assert result.returncode == 2, result.stderr
    [error] = [line for line in result.stderr.splitlines() if "tfx-model-server: error" in line]
    assert f"the metadata worker cannot run on {bare_python}" in error
    assert "No module named 'ml_metadata'" in error
    assert "requirements/metadata-worker.txt" in error
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "metadata.sqlite").exists()


def test_missing_interpreter_is_named():
    missing = "/nonexistent/bin/python3.10"
    with pytest.raises(
        WorkerPythonError, match=re.escape(f"{WORKER_PYTHON_ENV}={missing} cannot be run")
    ):
        check_worker_python(missing)


def test_tfx_stack_python_can_run_this_worker():
    check_worker_python(tfx_stack_python())  # what the serving image and the demo configure


def test_worker_of_another_package_version_is_refused(tmp_path, monkeypatch):
    """Server and worker share the spool's format: a worker environment holding another
    version of this package is refused rather than left to misread reports."""
    fake = tmp_path / "serving"
    (fake / "metadata").mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.0.0-other"\n')
    (fake / "metadata" / "__init__.py").write_text("")
    (fake / "metadata" / "worker.py").write_text("")
    monkeypatch.chdir(tmp_path)  # `python -c` puts the working directory first on sys.path
    with pytest.raises(WorkerPythonError, match=re.escape("has tfx-serving-suite 0.0.0-other but")):
        check_worker_python(tfx_stack_python())
