"""The model-server runner interface (the stock ``BaseModelServerRunner`` contract, in Python
naming) and the failure type every validation step raises."""

from __future__ import annotations

import abc
import dataclasses
import enum


class FailureCode(str, enum.Enum):
    """Why a model was not blessed; stored verbatim in the blessing's ``reason`` property."""

    SERVER_START_FAILED = "SERVER_START_FAILED"
    IMAGE_PULL_FAILED = "IMAGE_PULL_FAILED"
    UNSCHEDULABLE = "UNSCHEDULABLE"
    SERVER_EXITED = "SERVER_EXITED"
    LOAD_TIMEOUT = "LOAD_TIMEOUT"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    REQUEST_FAILED = "REQUEST_FAILED"
    LATENCY_LIMIT_EXCEEDED = "LATENCY_LIMIT_EXCEEDED"
    MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"


class ValidationFailed(Exception):
    """The model (or its server) failed a check; the execution still succeeds, unblessed."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str
    rest_port: int
    grpc_port: int


def read_log(path: str) -> str:
    """A runner's server log file; empty until the server has written one."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class ModelServerRunner(abc.ABC):
    """One server lifetime: start, wait until it listens, read logs, stop (idempotent)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def wait_until_running(self, deadline: float) -> Endpoint:
        """Blocks until the server accepts connections; raises ValidationFailed otherwise."""

    @abc.abstractmethod
    def check_alive(self) -> None:
        """Raises ValidationFailed(SERVER_EXITED) if the server is gone (polled while loading)."""

    @abc.abstractmethod
    def logs(self) -> str: ...

    def peak_memory_bytes(self) -> int | None:
        """Peak resident memory of the server, if this platform can measure it."""
        return None

    @abc.abstractmethod
    def stop(self) -> None: ...
