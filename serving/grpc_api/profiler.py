"""``tensorflow.ProfilerService`` on the model server's gRPC port, as TF Serving registers it.

TF Serving adds TSL's ``ProfilerServiceImpl`` to its main gRPC server (``--enable_profiler``,
default true), so ``tf.profiler.experimental.client.trace('host:8500', logdir, 1000)``
captures a trace of the serving process. This answers the same RPCs the same way, in Python:

* ``Profile``: start TF's in-process profiler session with the request's options, wait
  ``opts.duration_ms`` (ending early on ``Terminate`` for the same session id, or when the
  caller cancels), collect the XSpace and write it where the C++ service does —
  ``<repository_root>/<session_id>/<host_name>.xplane.pb`` (``:`` replaced by ``_``), a path
  the client chose (``<logdir>/plugins/profile/...``) and that must be on storage both see.
  The response says whether the trace is empty; the client retries empty ones. (TF's Python
  session hands out the XSpace only as a TensorBoard export, so it is exported to a private
  temporary directory first and moved into place.)
* ``Terminate``: marks a session id to stop. ``Monitor``: UNIMPLEMENTED, as in TSL.

It is registered on the same ``grpc.aio`` server as PredictionService, so it shares the
listeners, TLS and bearer-token checks. TF's own ``tf.profiler.experimental.server.start``
is deliberately not used: it opens a second, plain-text port on every interface, bypassing
both. The service's messages are not in TF's Python package, so they are declared here from
``tsl/profiler/protobuf/profiler_service.proto`` and ``profiler_options.proto`` (only the fields
it reads or writes; the others are kept as unknown fields when a request is parsed). That also
keeps TensorFlow off this module's import path: it is loaded when a profile is taken, in the
process that runs the models, never by a front end that only imports the gRPC package.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import TYPE_CHECKING

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, text_format

from serving.compat import message_class
from serving.grpc_api.wire import raw_handler
from serving.request_limits import MemoryPool

if TYPE_CHECKING:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

log = logging.getLogger(__name__)

SERVICE = "tensorflow.ProfilerService"
_POLL_SECONDS = 0.01

_PROTO = """
name: "serving/grpc_api/profiler_service.proto"
package: "tensorflow"
syntax: "proto3"
message_type {
  name: "ProfileOptions"
  field { name: "host_tracer_level" number: 2 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "device_tracer_level" number: 3 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "python_tracer_level" number: 4 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "version" number: 5 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "start_timestamp_ns" number: 8 label: LABEL_OPTIONAL type: TYPE_UINT64 }
  field { name: "duration_ms" number: 9 label: LABEL_OPTIONAL type: TYPE_UINT64 }
}
message_type {
  name: "ProfileRequest"
  field { name: "duration_ms" number: 1 label: LABEL_OPTIONAL type: TYPE_UINT64 }
  field { name: "opts" number: 4 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.ProfileOptions" }
  field { name: "repository_root" number: 5 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "session_id" number: 6 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "host_name" number: 7 label: LABEL_OPTIONAL type: TYPE_STRING }
}
message_type {
  name: "ProfileResponse"
  field { name: "empty_trace" number: 7 label: LABEL_OPTIONAL type: TYPE_BOOL }
}
message_type {
  name: "TerminateRequest"
  field { name: "session_id" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
}
message_type { name: "TerminateResponse" }
message_type {
  name: "MonitorRequest"
  field { name: "duration_ms" number: 1 label: LABEL_OPTIONAL type: TYPE_UINT64 }
}
message_type {
  name: "MonitorResponse"
  field { name: "data" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
}
"""


def _message_classes() -> dict[str, type]:
    """The service's message classes, in a private descriptor pool (no clash with a future
    TF that ships its own ``profiler_service_pb2``)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_PROTO, descriptor_pb2.FileDescriptorProto()))
    names = (
        "ProfileRequest",
        "ProfileResponse",
        "TerminateRequest",
        "TerminateResponse",
        "MonitorRequest",
        "MonitorResponse",
    )
    return {name: message_class(pool.FindMessageTypeByName(f"tensorflow.{name}")) for name in names}


_MESSAGES = _message_classes()
ProfileRequest = _MESSAGES["ProfileRequest"]
ProfileResponse = _MESSAGES["ProfileResponse"]
TerminateRequest = _MESSAGES["TerminateRequest"]
TerminateResponse = _MESSAGES["TerminateResponse"]
MonitorRequest = _MESSAGES["MonitorRequest"]
MonitorResponse = _MESSAGES["MonitorResponse"]


def session_options(opts) -> dict[str, int]:
    """``ProfileOptions`` as TF's Python profiler session takes them; version 0 (a client that
    set nothing) means TF's defaults, as in TSL."""
    if not opts.version:
        return {}
    return {
        "host_tracer_level": opts.host_tracer_level,
        "device_tracer_level": opts.device_tracer_level,
        "python_tracer_level": opts.python_tracer_level,
    }


def is_empty(xspace: xplane_pb2.XSpace) -> bool:
    """TSL's IsEmpty: no plane has a line with an event."""
    return not any(line.events for plane in xspace.planes for line in plane.lines)


def trace_path(repository_root: str, session_id: str, host_name: str) -> str:
    """Where TSL's SaveXSpace puts a trace; the names must stay inside the repository root."""
    for what, part in (("session_id", session_id), ("host_name", host_name)):
        if "/" in part or part in (".", ".."):
            raise ValueError(f"{what} must be a plain name, got {part!r}")
    file_name = f"{host_name}.xplane.pb".replace(":", "_")
    return os.path.join(repository_root, session_id, file_name)


class ProfilerService:
    """The three RPCs; one profile at a time per process (TF's profiler allows one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._stop_requested: set[str] = set()

    async def Profile(self, request, context: grpc.aio.ServicerContext):
        log.info(
            "Profile request: %d ms into %s", request.opts.duration_ms, request.repository_root
        )
        try:
            path = trace_path(request.repository_root, request.session_id, request.host_name)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        loop = asyncio.get_running_loop()
        delay = request.opts.start_timestamp_ns / 1e9 - time.time()
        if delay > 0:  # the client's delay_ms, as an absolute start time
            await asyncio.sleep(delay)
        scratch = tempfile.mkdtemp(prefix="tfx-model-server-profile-")
        try:
            from tensorflow.python.profiler.internal import _pywrap_profiler

            session = _pywrap_profiler.ProfilerSession()
            try:
                await loop.run_in_executor(
                    None, session.start, scratch, session_options(request.opts)
                )
            except Exception as exc:  # e.g. another profile is running: TSL answers INTERNAL
                await context.abort(grpc.StatusCode.INTERNAL, _message(exc))
            with self._lock:
                self._running.add(request.session_id)
            try:
                await self._wait(request)
            finally:  # also on cancellation: the process-wide profiler must be released
                with self._lock:
                    self._running.discard(request.session_id)
                    self._stop_requested.discard(request.session_id)
                await loop.run_in_executor(None, session.export_to_tb)
            response = ProfileResponse()
            try:
                response.empty_trace = await loop.run_in_executor(None, _save, scratch, path)
            except Exception as exc:
                await context.abort(grpc.StatusCode.INTERNAL, _message(exc))
            return response
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _wait(self, request) -> None:
        """The profile's duration, cut short by Terminate; a cancelled call raises here."""
        duration_ms = request.opts.duration_ms or request.duration_ms
        deadline = time.monotonic() + duration_ms / 1000.0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            with self._lock:
                if request.session_id in self._stop_requested:
                    return

    async def Terminate(self, request, context: grpc.aio.ServicerContext):
        with self._lock:  # only running sessions: unknown ids must not accumulate
            if request.session_id in self._running:
                self._stop_requested.add(request.session_id)
        return TerminateResponse()

    async def Monitor(self, request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")


def _save(scratch: str, path: str) -> bool:
    """Moves the exported XSpace to ``path``; returns whether it holds no event."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (exported,) = glob.glob(os.path.join(scratch, "plugins", "profile", "*", "*.xplane.pb"))
    with open(exported, "rb") as handle:
        data = handle.read()
    xspace = xplane_pb2.XSpace.FromString(data)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(data)
    log.info("Collected XSpace to repository: %s", path)
    return is_empty(xspace)


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def profiler_handler(memory: MemoryPool) -> grpc.GenericRpcHandler:
    """On raw bytes like the API services (serving.grpc_api.wire): a request that does not
    parse is INVALID_ARGUMENT. One per process: its profile sessions are the process's."""
    service = ProfilerService()
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Profile": raw_handler(service.Profile, ProfileRequest, ProfileResponse, memory),
            "Terminate": raw_handler(
                service.Terminate, TerminateRequest, TerminateResponse, memory
            ),
            "Monitor": raw_handler(service.Monitor, MonitorRequest, MonitorResponse, memory),
        },
    )
