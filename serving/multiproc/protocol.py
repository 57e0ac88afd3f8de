"""The control messages between front ends and the model process: small JSON dicts.

Tensors never travel in them (``serving.ipc.tensors`` describes where they sit in shared
memory); only names, shapes, offsets, specs, errors and the occasional small proto (a status
or metadata response, a route's body) as base64. The helpers here are the one place both
sides agree on field names.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from serving.core.model_spec import ModelSpec
from serving.errors import Code, ServingError

# How the supervisor tells a child where things are.
MODEL_SOCKET_ENV = "TFX_SERVING_MODEL_SOCKET"
READY_FD_ENV = "TFX_SERVING_READY_FD"
# Where a child writes its stack dump on SIGUSR1: a pipe the supervisor relays from, so that
# dumps of processes signalled at once do not interleave on the shared stderr.
STACK_DUMP_FD_ENV = "TFX_SERVING_STACK_DUMP_FD"
# A front-end process reads its slot number (``"3\n"``) here once the supervisor gives it one;
# until then it is a spare: imports done, nothing bound, nothing connected.
SLOT_FD_ENV = "TFX_SERVING_SLOT_FD"
# What a front-end process writes on its ready pipe: imports done (it waits for a slot), then
# listening on its ports. Its exit closes the pipe.
READY_FOR_SLOT = b"s"
LISTENING = b"1"
# Its name in /proc/<pid>/comm (``ps``, ``top``; at most 15 bytes): which slot it serves, or
# that it is the spare waiting for one.
SPARE_NAME = "frontend-spare"


def frontend_name(index: int) -> str:
    return f"frontend-{index}"


# A front end's exit code when it cannot listen (uvicorn's own for that): the supervisor stops
# the server, as the single-process server exits when a port is taken.
STARTUP_FAILURE = 3
# A front end's request arena when request memory is unlimited: sparse shared memory, so its
# size costs address space, not RAM.
UNLIMITED_ARENA_BYTES = 16 << 30


def arena_bytes(max_total_request_memory_bytes: int) -> int:
    """Room for every request in flight: what the request memory budget lets in at once."""
    return max_total_request_memory_bytes or UNLIMITED_ARENA_BYTES


# Operations a front end asks of the model process.
HELLO = "hello"
PREDICT = "predict"
CLASSIFY = "classify"
REGRESS = "regress"
MULTI_INFERENCE = "multi"
RESOLVE = "resolve"
STATUS = "status"
METADATA = "metadata"
RELOAD = "reload"
ROUTE = "route"
METRICS = "metrics"
# One-way messages: front end -> model process, and the snapshot the model process pushes.
OBSERVE = "observe"
FREE = "free"
SNAPSHOT = "snapshot"
FLUSH = "flush"  # model process -> front ends: send your metric samples now


def spec_fields(spec: ModelSpec) -> list[Any]:
    return [spec.name, spec.version, spec.label, spec.signature_name, spec.routing_key]


def spec_from(fields: list[Any]) -> ModelSpec:
    name, version, label, signature_name, routing_key = fields
    return ModelSpec(name, version, label, signature_name, routing_key)


def error_from(code: int, message: str) -> ServingError:
    """The error the model process raised, as the front end raises it again."""
    try:
        return ServingError(Code(code), message)
    except ValueError:
        return ServingError(Code.UNKNOWN, message)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def fingerprint(serialized: bytes) -> str:
    """Identifies a SignatureDef by its bytes: what decoding against it depends on."""
    return hashlib.blake2b(serialized, digest_size=12).hexdigest()
