"""Runs the real ``tfx-model-server`` CLI as a subprocess on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


FRONTENDS_ENV = "TFX_SERVING_TEST_FRONTENDS"


def frontend_processes() -> int:
    """The ``--frontend_processes`` test servers run with: 0 (one process) unless the run sets
    ``TFX_SERVING_TEST_FRONTENDS`` (scripts/test.sh runs the request-path suites at 0, 1 and 2)."""
    return int(os.environ.get(FRONTENDS_ENV, "0"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``with ServerProcess(["--model_name=m", ...]) as server: server.get(...)``."""

    def __init__(
        self,
        args: list[str],
        grpc: bool = False,
        env: dict | None = None,
        ssl_context: ssl.SSLContext | None = None,
        rest: bool = True,
        python: str | None = None,
    ) -> None:
        """``python``: the interpreter to run the server on (default: this test's; see
        tests/support/stacks.py for the other stack's)."""
        self.python = python or sys.executable
        self.ssl_context = ssl_context
        self.rest_port = free_port() if rest else 0
        self.grpc_port = free_port() if grpc else 0
        self.args = [
            f"--rest_api_port={self.rest_port}",
            f"--port={self.grpc_port}",
            "--host=127.0.0.1",
            # The suites run once per process model (scripts/test.sh): one process, or one or two
            # front-end processes around a model process. A test that needs one of them says so
            # in its own arguments, which come later and win.
            f"--frontend_processes={frontend_processes()}",
            *args,
        ]
        self._env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        fd, self._log_path = tempfile.mkstemp(prefix="model-server-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.rest_port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        self.process = subprocess.Popen(
            [self.python, "-m", "serving", *self.args],
            cwd=REPO_ROOT,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                ready_port = self.rest_port or self.grpc_port
                with socket.create_connection(("127.0.0.1", ready_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"server did not open its REST port in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log_path).read_text(errors="replace")

    def request(
        self, method: str, path: str, body: bytes | str | dict | None = None, headers=None
    ) -> tuple[int, bytes]:
        status, payload, _ = self.request_with_headers(method, path, body, headers)
        return status, payload

    def request_with_headers(
        self, method: str, path: str, body: bytes | str | dict | None = None, headers=None
    ) -> tuple[int, bytes, dict[str, str]]:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.ssl_context) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def json(self, method: str, path: str, body=None) -> tuple[int, dict]:
        status, payload = self.request(method, path, body)
        return status, json.loads(payload) if payload else {}

    def wait_for(self, predicate, timeout: float = 60.0, interval: float = 0.2):
        """Polls ``predicate()`` until it returns a truthy value; returns that value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"condition not met in {timeout} s; server log:\n{self.log()}")

    def available_versions(self, model: str) -> list[int]:
        status, body = self.json("GET", f"/v1/models/{model}")
        if status != 200:
            return []
        return sorted(
            int(v["version"]) for v in body["model_version_status"] if v["state"] == "AVAILABLE"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            # Every thread's stack into the log (the server's SIGUSR1 handler), then the log
            # tail into the error: a stop that hangs says what it waits on.
            self.process.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(2)
            self.process.kill()
            self.process.wait()
            raise RuntimeError(
                f"server did not exit within {timeout:.0f} s of signal {sig}; its log "
                f"ends:\n{self.log()[-6000:]}"
            ) from exc

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log_path)
