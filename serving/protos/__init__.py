"""TF Serving's API messages without TensorFlow: wire-identical, in a private descriptor pool.

Why: the published ``tensorflow_serving.apis.*_pb2`` modules import TensorFlow's own ``*_pb2``
modules through the ``tensorflow`` package, so ``import tensorflow_serving.apis.predict_pb2``
loads all of TensorFlow (about 15 s and 500 MB RSS here, on both stacks; docs/serving.md,
"API messages without TensorFlow"). A front-end process that only parses, checks and encodes
requests must not pay that, and must not hold a copy of TensorFlow that a crash would throw
away.

What: ``api_descriptors.binpb`` is a ``FileDescriptorSet`` compiled by protoc
(scripts/gen_api_descriptors.sh) from the .proto files vendored under ``proto/`` -- TF Serving
2.20.0's ``apis/`` and ``config/`` files and the TensorFlow 2.16 core protos they import,
unchanged (Apache-2.0, see proto/README.md). Fields either stack's official modules add on top
(e.g. 2.21's ``PredictRequest.RequestOptions.handshake``) travel as unknown fields, which
protobuf keeps and re-serializes. A descriptor set is protobuf wire data, so one committed file
works on every protobuf runtime the server supports (3.20 on the TFX stack, 5+ on the current
one), where committed ``*_pb2.py`` gencode is tied to the protoc/runtime version pairs protobuf
allows. Message classes are built from it at run time, lazily, the way protobuf's own gencode
does.

Names: every message keeps TF Serving's full name (``tensorflow.serving.PredictRequest``,
``tensorflow.TensorProto``), so the bytes on the wire, ``Any`` type URLs, JSON field names and
gRPC method paths (``/tensorflow.serving.PredictionService/Predict``) are TF Serving's. The
descriptors live in a private ``DescriptorPool``, not protobuf's default pool: the official
modules register the same full names in the default pool, and two registrations of one name
there fail (or silently share one class) when a process imports both, as the in-process server
and the tests do. The price of a private pool: a message from here cannot be assigned into a
field of an official message (or back) -- convert through bytes
(``FromString(m.SerializeToString())``), which is what crossing a process boundary does anyway.

Use: ``from serving import protos``; then ``protos.PredictRequest``, ``protos.TensorProto``,
``protos.DataType`` (an enum wrapper) and ``protos.DT_FLOAT`` (its value), like the names the
official ``*_pb2`` modules export for the same top-level messages, enums and enum values.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

from serving.compat import message_class

__all__ = ["POOL", "message_type", "method_path", "service"]

_DESCRIPTOR_SET = "api_descriptors.binpb"

# Proto packages whose top-level names this module exports (the ones the API files declare or
# use directly); everything else in the closure is reachable through message_type().
_EXPORTED_PACKAGES = ("tensorflow", "tensorflow.serving")


def _load_pool() -> tuple[descriptor_pool.DescriptorPool, dict[str, tuple[str, str]]]:
    """Adds every file of the committed descriptor set to a new pool; indexes exported names."""
    data = resources.files(__package__).joinpath(_DESCRIPTOR_SET).read_bytes()
    pool = descriptor_pool.DescriptorPool()
    exported: dict[str, tuple[str, str]] = {}
    for file_proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file_proto)
        if file_proto.package not in _EXPORTED_PACKAGES:
            continue
        prefix = file_proto.package + "."
        for message in file_proto.message_type:
            exported[message.name] = ("message", prefix + message.name)
        for enum in file_proto.enum_type:
            exported[enum.name] = ("enum", prefix + enum.name)
            for value in enum.value:
                exported[value.name] = ("enum_value", prefix + enum.name)
    return pool, exported


POOL, _EXPORTED = _load_pool()


@cache
def message_type(full_name: str) -> type[Message]:
    """The class of the message ``full_name`` (e.g. ``tensorflow.serving.PredictRequest``)."""
    descriptor: Descriptor = POOL.FindMessageTypeByName(full_name)
    return message_class(descriptor)


def service(full_name: str) -> ServiceDescriptor:
    """The descriptor of a TF Serving gRPC service, e.g. ``tensorflow.serving.ModelService``."""
    return POOL.FindServiceByName(full_name)


def method_path(service_full_name: str, method: str) -> str:
    """The path TF Serving clients call, e.g. ``/tensorflow.serving.PredictionService/Predict``."""
    descriptor = service(service_full_name).methods_by_name[method]
    return f"/{service_full_name}/{descriptor.name}"


@cache
def _enum(full_name: str) -> EnumTypeWrapper:
    return EnumTypeWrapper(POOL.FindEnumTypeByName(full_name))


def __getattr__(name: str) -> Any:
    """Top-level messages, enums and enum values by their short name, built on first use and
    then kept as module attributes: request handlers read ``protos.PredictResponse`` on every
    call, which then costs a plain attribute lookup (as with a ``*_pb2`` module), not a call."""
    try:
        kind, full_name = _EXPORTED[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if kind == "message":
        value: Any = message_type(full_name)
    elif kind == "enum":
        value = _enum(full_name)
    else:
        value = _enum(full_name).Value(name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTED])
