"""One error type for the whole runtime, carrying TensorFlow's canonical status code.

Both front ends translate the same code: REST through TF Serving's HTTP table, gRPC 1:1 into
``grpc.StatusCode``. Keeping the code (not an HTTP status) in the core means the inference
logic never knows which front end called it.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """``tensorflow.error.Code`` values (identical to gRPC's numbering)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# Errors that say nothing about a request's own data: re-running the other requests of its
# batch alone would only repeat them (and multiply the wait), so they fail the whole batch.
BATCH_WIDE_CODES = frozenset(
    {Code.DEADLINE_EXCEEDED, Code.CANCELLED, Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED}
)

# TF Serving's ToHTTPStatusCode (http_server.cc). Anything unlisted is a server fault (500).
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    return _HTTP_STATUS.get(code, 500)


class ConfigError(ValueError):
    """A command line or config file the server cannot start with; the message says the fix."""


class ServingError(Exception):
    """An error whose ``code`` decides the HTTP/gRPC status and whose message reaches the client."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(Code.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(Code.UNAVAILABLE, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(Code.UNIMPLEMENTED, message)
