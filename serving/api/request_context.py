"""Request ids: taken from ``X-Request-Id`` (REST) / ``x-request-id`` metadata (gRPC), generated
when absent, always returned, and carried to the prediction log through a context variable so
no inference signature has to change."""

from __future__ import annotations

import contextvars
import os
import re

HEADER = "x-request-id"
HEADER_BYTES = HEADER.encode()
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def accept(value: str | None) -> str:
    """The client's id when it is a sane token (it ends up in logs and SQL), else a new one."""
    if value and _VALID.fullmatch(value):
        return value
    return os.urandom(16).hex()  # uuid4's randomness without building a UUID object


def bind(value: str | None) -> str:
    """Accepts and binds the id for the current request; returns it for the response."""
    request_id = accept(value)
    current.set(request_id)
    return request_id
