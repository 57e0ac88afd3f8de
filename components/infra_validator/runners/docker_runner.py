"""Runs a TF Serving image (by default the real ``tensorflow/serving``) in a local Docker engine.

For checking a model against the exact C++ server it will meet in production, when a Docker
engine is at hand (stock ``serving_platform.local_docker``). The engine is driven through the
``docker`` Python package when it is importable (it is a tfx dependency), else through the
``docker`` CLI; both see the same container spec and the same ``docker inspect`` document.

The container: ``MODEL_NAME`` and ``MODEL_BASE_PATH=/models`` (the image's entrypoint runs
``tensorflow_model_server --port=8500 --rest_api_port=8501``), the model bind-mounted
read-only at ``/models/<name>/1``, ports 8500/8501 published on random host ports bound to
127.0.0.1 (``0.0.0.0`` only when ``host_ip_address`` names a remote engine host), a label
naming it as an infra-validation server, and no auto-remove, so a crashed server's log can
still be read; :meth:`DockerRunner.stop` saves the log and force-removes the container.

Limits, as with stock TFX: the bind mount needs the model on the engine's own file system,
so it fails when the pipeline itself runs in a container without that path or on macOS temp
dirs not shared with the VM (tensorflow/tfx#2912); model URIs (gs://...) are rejected.
Memory is not measured (``max_memory_mib`` fails with a message saying so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
from typing import Any, Protocol

from absl import logging
from tfx.proto import infra_validator_pb2

from components.infra_validator.runners.base import (
    Endpoint,
    FailureCode,
    ModelServerRunner,
    ValidationFailed,
    read_log,
)

GRPC_PORT = 8500
REST_PORT = 8501
MODEL_ROOT = "/models"
LABEL = "tfx-serving-suite.infra-validation"
_LOOPBACK_NAMES = {"", "localhost", "127.0.0.1", "::1"}
_NO_ENGINE_ADVICE = (
    "Start a Docker engine (or point serving_spec.local_docker.client_base_url at one), or "
    "leave serving_platform unset to validate with the bundled model server."
)


@dataclasses.dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = True


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """What ``docker run`` gets; translated for the SDK and the CLI by the methods below."""

    image: str
    environment: dict[str, str]
    ports: tuple[int, ...]
    bind_address: str
    mounts: tuple[BindMount, ...]
    labels: dict[str, str]

    def sdk_run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``docker.DockerClient().containers.run``."""
        return {
            "image": self.image,
            "detach": True,
            "auto_remove": False,
            "environment": dict(self.environment),
            "ports": {f"{port}/tcp": (self.bind_address, None) for port in self.ports},
            "volumes": {
                m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                for m in self.mounts
            },
            "labels": dict(self.labels),
        }

    def cli_run_args(self) -> list[str]:
        """Arguments after ``docker`` for the same container."""
        args = ["run", "--detach"]
        for key, value in self.labels.items():
            args += ["--label", f"{key}={value}"]
        for key, value in self.environment.items():
            args += ["--env", f"{key}={value}"]
        for port in self.ports:
            args += ["--publish", f"{self.bind_address}::{port}"]
        for m in self.mounts:
            readonly = ",readonly" if m.read_only else ""
            args += ["--mount", f"type=bind,source={m.source},target={m.target}{readonly}"]
        return [*args, self.image]


def build_container_spec(
    model_name: str, model_path: str, image: str, config: infra_validator_pb2.LocalDockerConfig
) -> ContainerSpec:
    if "://" in model_path:
        raise ValueError(
            f"local_docker bind-mounts the model, but {model_path} is a URI; run the pipeline "
            "with a local pipeline root, or use serving_platform kubernetes."
        )
    remote_engine = config.host_ip_address not in _LOOPBACK_NAMES
    return ContainerSpec(
        image=image,
        environment={"MODEL_NAME": model_name, "MODEL_BASE_PATH": MODEL_ROOT},
        ports=(GRPC_PORT, REST_PORT),
        bind_address="0.0.0.0" if remote_engine else "127.0.0.1",
        mounts=(
            BindMount(os.path.realpath(model_path), f"{MODEL_ROOT}/{model_name}/1", read_only=True),
        ),
        labels={LABEL: model_name},
    )


class Engine(Protocol):
    """The few engine operations the runner needs; ``inspect`` returns ``docker inspect``."""

    def ensure_image(self, image: str) -> None: ...

    def run(self, spec: ContainerSpec) -> str: ...

    def inspect(self, container_id: str) -> dict[str, Any]: ...

    def logs(self, container_id: str) -> str: ...

    def remove(self, container_id: str) -> None: ...

    def close(self) -> None: ...


class SdkEngine:
    """The ``docker`` package (docker-py)."""

    def __init__(self, config: infra_validator_pb2.LocalDockerConfig) -> None:
        import docker

        self._errors = docker.errors
        kwargs: dict[str, Any] = {}
        if config.client_api_version:
            kwargs["version"] = config.client_api_version
        if config.client_timeout_seconds:
            kwargs["timeout"] = config.client_timeout_seconds
        try:
            if config.client_base_url:
                self._client = docker.DockerClient(base_url=config.client_base_url, **kwargs)
            else:
                self._client = docker.from_env(**kwargs)
            self._client.ping()
        except docker.errors.DockerException as e:
            raise RuntimeError(f"No Docker engine reachable: {e}. {_NO_ENGINE_ADVICE}") from e

    def ensure_image(self, image: str) -> None:
        try:
            self._client.images.get(image)
        except self._errors.ImageNotFound:
            logging.info("Pulling %s", image)
            try:
                self._client.images.pull(image)
            except self._errors.APIError as e:
                raise ValidationFailed(
                    FailureCode.IMAGE_PULL_FAILED, f"cannot pull image {image}: {e}"
                ) from e

    def run(self, spec: ContainerSpec) -> str:
        try:
            return self._client.containers.run(**spec.sdk_run_kwargs()).id
        except self._errors.APIError as e:
            raise ValidationFailed(
                FailureCode.SERVER_START_FAILED, f"docker run {spec.image} failed: {e}"
            ) from e

    def inspect(self, container_id: str) -> dict[str, Any]:
        return self._client.api.inspect_container(container_id)

    def logs(self, container_id: str) -> str:
        return self._client.api.logs(container_id).decode(errors="replace")

    def remove(self, container_id: str) -> None:
        self._client.api.remove_container(container_id, force=True)

    def close(self) -> None:
        self._client.close()


class CliEngine:
    """The ``docker`` command line, for environments without the Python package."""

    def __init__(self, config: infra_validator_pb2.LocalDockerConfig) -> None:
        self._global = ["--host", config.client_base_url] if config.client_base_url else []
        self._env = dict(os.environ)
        if config.client_api_version:
            self._env["DOCKER_API_VERSION"] = config.client_api_version
        self._timeout = config.client_timeout_seconds or 60
        try:
            self._docker("version", "--format", "{{.Server.Version}}")
        except RuntimeError as e:
            raise RuntimeError(f"No Docker engine reachable: {e}. {_NO_ENGINE_ADVICE}") from e

    def _docker(self, *args: str) -> str:
        try:
            done = subprocess.run(
                ["docker", *self._global, *args],
                capture_output=True,
                text=True,
                env=self._env,
                timeout=self._timeout,
                check=False,
            )
        except FileNotFoundError as e:
            raise RuntimeError("the docker CLI is not installed") from e
        if done.returncode != 0:
            raise RuntimeError(f"docker {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def ensure_image(self, image: str) -> None:
        try:
            self._docker("image", "inspect", image)
        except RuntimeError:
            logging.info("Pulling %s", image)
            try:
                self._docker("pull", image)
            except RuntimeError as e:
                raise ValidationFailed(
                    FailureCode.IMAGE_PULL_FAILED, f"cannot pull image {image}: {e}"
                ) from e

    def run(self, spec: ContainerSpec) -> str:
        try:
            return self._docker(*spec.cli_run_args()).strip()
        except RuntimeError as e:
            raise ValidationFailed(FailureCode.SERVER_START_FAILED, str(e)) from e

    def inspect(self, container_id: str) -> dict[str, Any]:
        (document,) = json.loads(self._docker("inspect", container_id))
        return document

    def logs(self, container_id: str) -> str:
        # The server logs to stderr; capture both streams in order.
        done = subprocess.run(
            ["docker", *self._global, "logs", container_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env,
            timeout=self._timeout,
            check=False,
        )
        return done.stdout

    def remove(self, container_id: str) -> None:
        self._docker("rm", "--force", container_id)

    def close(self) -> None:
        """Nothing to release: every call is its own process."""


def make_engine(config: infra_validator_pb2.LocalDockerConfig) -> Engine:
    """The SDK when importable, else the CLI; RuntimeError if no engine answers."""
    try:
        import docker  # noqa: F401
    except ImportError:
        logging.info("The docker Python package is not installed; using the docker CLI.")
        return CliEngine(config)
    return SdkEngine(config)


def _host_port(attrs: dict[str, Any], port: int) -> int:
    bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    return int(bindings[f"{port}/tcp"][0]["HostPort"])


class DockerRunner(ModelServerRunner):
    """One container per attempt; see the module docstring."""

    def __init__(
        self,
        model_name: str,
        model_path: str,
        image: str,
        config: infra_validator_pb2.LocalDockerConfig,
        log_path: str,
        poll_seconds: float = 0.5,
    ) -> None:
        self._model_name = model_name
        self._model_path = model_path
        self._image = image
        self._config = config
        self._log_path = log_path
        self._poll_seconds = poll_seconds
        self._engine: Engine | None = None
        self._container: str | None = None

    def start(self) -> None:
        spec = build_container_spec(self._model_name, self._model_path, self._image, self._config)
        self._engine = make_engine(self._config)
        self._engine.ensure_image(self._image)
        self._container = self._engine.run(spec)
        logging.info("Started container %s from %s", self._container[:12], self._image)

    def _state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._engine is None or self._container is None:
            raise ValidationFailed(FailureCode.SERVER_START_FAILED, "server was never started")
        attrs = self._engine.inspect(self._container)
        state = attrs.get("State") or {}
        if state.get("Status") in ("exited", "dead"):
            raise ValidationFailed(
                FailureCode.SERVER_EXITED,
                f"container from {self._image} exited with code {state.get('ExitCode')} "
                f"{state.get('Error') or ''}; see the server log in the blessing.",
            )
        return attrs, state

    def check_alive(self) -> None:
        self._state()

    def wait_until_running(self, deadline: float) -> Endpoint:
        host = self._config.host_ip_address
        host = "127.0.0.1" if host in _LOOPBACK_NAMES else host
        while time.time() < deadline:
            attrs, state = self._state()
            if state.get("Status") == "running":
                endpoint = Endpoint(
                    host, _host_port(attrs, REST_PORT), _host_port(attrs, GRPC_PORT)
                )
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((host, endpoint.rest_port), timeout=1),
                ):
                    return endpoint
            time.sleep(self._poll_seconds)
        raise ValidationFailed(
            FailureCode.LOAD_TIMEOUT,
            f"container from {self._image} did not accept connections before the deadline; "
            "raise validation_spec.max_loading_time_seconds if pulling or starting is slow.",
        )

    def logs(self) -> str:
        return read_log(self._log_path)

    def stop(self) -> None:
        """Saves the container log, force-removes it, closes the engine; never raises."""
        engine, container = self._engine, self._container
        self._engine = self._container = None
        if engine is None:
            return
        try:
            if container is not None:
                try:
                    text = engine.logs(container)
                except Exception as e:  # the log is best effort; removal must still happen
                    text = f"(no log: {e})"
                with open(self._log_path, "a") as f:
                    f.write(f"=== container {container[:12]} ({self._image})\n{text}\n")
                engine.remove(container)
        except Exception as e:  # cleanup must not hide the validation result
            logging.error(
                "Could not remove container %s (%s); remove it by hand: docker rm --force %s",
                container,
                e,
                container,
            )
        finally:
            engine.close()
