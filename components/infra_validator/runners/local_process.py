"""Runs this project's model server (``python -m serving``) as a child process on loopback.

No Docker or cluster is needed, so the same validation works under LocalDagRunner, in CI and
inside any Kubeflow pod. The child runs with the executor's own interpreter and a PYTHONPATH
that can import the ``serving`` package; it never imports TFX.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import portpicker
from absl import logging

from components.infra_validator.runners.base import (
    Endpoint,
    FailureCode,
    ModelServerRunner,
    ValidationFailed,
    read_log,
)

_LOOPBACK = "127.0.0.1"
_STOP_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.2


def _serving_pythonpath() -> str:
    spec = importlib.util.find_spec("serving")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The 'serving' package (this project's model server) is not importable; install "
            "tfx-serving-suite in the environment that runs the InfraValidator."
        )
    package_parent = os.path.dirname(os.path.dirname(spec.origin))
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([package_parent, existing] if existing else [package_parent])


class LocalProcessRunner(ModelServerRunner):
    """``sys.executable -m serving`` serving ``model_base_path`` on free loopback ports."""

    def __init__(
        self,
        model_name: str,
        model_base_path: str,
        log_path: str,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._model_name = model_name
        self._model_base_path = model_base_path
        self._log_path = log_path
        self._extra_args = extra_args
        self._process: subprocess.Popen | None = None
        self._endpoint: Endpoint | None = None

    def start(self) -> None:
        rest_port, grpc_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
        self._endpoint = Endpoint(_LOOPBACK, rest_port, grpc_port)
        command = [
            sys.executable,
            "-m",
            "serving",
            f"--host={_LOOPBACK}",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            f"--model_name={self._model_name}",
            f"--model_base_path={self._model_base_path}",
            "--file_system_poll_wait_seconds=1",
            *self._extra_args,
        ]
        logging.info("Starting model server: %s", " ".join(command))
        env = {**os.environ, "PYTHONPATH": _serving_pythonpath()}
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: stop() reaps all children
            )

    def check_alive(self) -> None:
        if self._process is None:
            raise ValidationFailed(FailureCode.SERVER_START_FAILED, "server was never started")
        code = self._process.poll()
        if code is not None:
            raise ValidationFailed(
                FailureCode.SERVER_EXITED,
                f"model server exited with code {code}; see the server log in the blessing.",
            )

    def wait_until_running(self, deadline: float) -> Endpoint:
        if self._endpoint is None:
            raise RuntimeError("wait_until_running() called before start()")
        while time.time() < deadline:
            self.check_alive()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(
                    (self._endpoint.host, self._endpoint.rest_port), timeout=1
                ),
            ):
                return self._endpoint
            time.sleep(_POLL_SECONDS)
        raise ValidationFailed(
            FailureCode.LOAD_TIMEOUT,
            f"REST port {self._endpoint.rest_port} did not open before the loading deadline; "
            "raise validation_spec.max_loading_time_seconds if the server is just slow.",
        )

    def logs(self) -> str:
        return read_log(self._log_path)

    def peak_memory_bytes(self) -> int | None:
        """VmHWM (peak RSS) from /proc, read while the process is still alive."""
        if self._process is None:
            return None
        try:
            with open(f"/proc/{self._process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            logging.warning("Model server ignored SIGTERM for %ss; killing.", _STOP_GRACE_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
