"""serving.protos: TF Serving's API messages without TF, wire-identical to the official ones.

Every message type the official ``tensorflow_serving.apis`` modules reach (requests, responses,
TensorProto, Example, SignatureDef/MetaGraphDef for GetModelMetadata, ModelServerConfig for
HandleReloadConfigRequest, PredictionLog, ...) is filled field by field through the official
class and through ours, and the bytes must be equal both ways. The vendored files are TF 2.16's
core protos (the TFX stack's TensorFlow: there their descriptors must be equal) and TF Serving
2.20.0's API protos (newer than the TFX stack's tensorflow-serving-api 2.16.1, a little older
than the current stack's 2.21.0). Where the versions differ, every field both sides declare must
agree on number, name, type and label, and fields only one side declares travel as unknown fields.
"""

from __future__ import annotations

import functools
import importlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message

from serving import protos
from tests.support.server_process import REPO_ROOT

_OFFICIAL_API_MODULES = [
    "classification",
    "get_model_metadata",
    "get_model_status",
    "inference",
    "input",
    "logging",
    "model",
    "model_management",
    "model_service",
    "predict",
    "prediction_log",
    "prediction_service",
    "regression",
    "session_service",
    "status",
]
_MAX_DEPTH = 3


def _official_files() -> dict[str, FileDescriptor]:
    """The file closure the official API modules reach (importing them imports TensorFlow)."""
    seen: dict[str, FileDescriptor] = {}

    def walk(file: FileDescriptor) -> None:
        if file.name not in seen:
            seen[file.name] = file
            for dependency in file.dependencies:
                walk(dependency)

    for name in _OFFICIAL_API_MODULES:
        walk(importlib.import_module(f"tensorflow_serving.apis.{name}_pb2").DESCRIPTOR)
    return seen


def _messages(descriptors) -> Iterator[Descriptor]:
    for descriptor in descriptors:
        if descriptor.GetOptions().map_entry:
            continue
        yield descriptor
        yield from _messages(descriptor.nested_types)


@pytest.fixture(scope="module")
def official_files() -> dict[str, FileDescriptor]:
    return _official_files()


def _all_official_messages(official_files) -> list[Descriptor]:
    return [
        message
        for file in official_files.values()
        if not file.name.startswith("google/protobuf/")
        for message in _messages(file.message_types_by_name.values())
    ]


@pytest.fixture(scope="module")
def official_messages(official_files) -> list[Descriptor]:
    """The official messages we declare too (newer official protos add a few nested ones)."""
    return [m for m in _all_official_messages(official_files) if _ours(m.full_name) is not None]


def _ours(full_name: str) -> Descriptor | None:
    try:
        return protos.POOL.FindMessageTypeByName(full_name)
    except KeyError:
        return None


def _common_fields(message: Descriptor) -> set[int]:
    """Field numbers the official and our declaration of ``message`` both have."""
    official = descriptor_pool.Default().FindMessageTypeByName(message.full_name)
    ours = protos.POOL.FindMessageTypeByName(message.full_name)
    return {field.number for field in official.fields} & {field.number for field in ours.fields}


def _common_enum_values(full_name: str) -> set[int]:
    """Values both declarations of an enum have (newer TF adds DataTypes, for one)."""
    official = descriptor_pool.Default().FindEnumTypeByName(full_name)
    ours = protos.POOL.FindEnumTypeByName(full_name)
    return {v.number for v in official.values} & {v.number for v in ours.values}


def _repeated(field: FieldDescriptor) -> bool:
    """protobuf 7 dropped ``FieldDescriptor.label`` for ``is_repeated`` (added in 5.x)."""
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _scalar(field: FieldDescriptor, rng: random.Random):
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return bytes(rng.randrange(256) for _ in range(5))
        return f"{field.name}-{rng.randrange(1000)}-\u00e9"
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return True
    if kind in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return rng.randrange(-1000, 1000) / 8  # exact in float32
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        values = sorted(_common_enum_values(field.enum_type.full_name) - {0})
        return rng.choice(values) if values else 0
    if kind in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64):
        return rng.randrange(-(2**30), 2**30)  # negative values exercise zigzag / 10-byte varints
    return rng.randrange(1, 2**31)  # unsigned


def _fill(message: Message, variant: int, rng: random.Random, depth: int = 0) -> None:
    """Sets every field both sides declare; ``variant`` picks which member of each oneof."""
    common = _common_fields(message.DESCRIPTOR)
    oneof_choice = {
        oneof.full_name: oneof.fields[variant % len(oneof.fields)].name
        for oneof in message.DESCRIPTOR.oneofs
    }
    for field in message.DESCRIPTOR.fields:
        if field.number not in common:
            continue
        if field.containing_oneof and oneof_choice[field.containing_oneof.full_name] != field.name:
            continue
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if is_message and depth >= _MAX_DEPTH:
            continue
        container = getattr(message, field.name) if _repeated(field) else None
        if is_message and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(2):
                key = _scalar(key_field, rng)
                if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    _fill(container[key], variant, rng, depth + 1)
                else:
                    container[key] = _scalar(value_field, rng)
        elif container is not None and is_message:
            for _ in range(2):
                _fill(container.add(), variant, rng, depth + 1)
        elif container is not None:
            container.extend([_scalar(field, rng), _scalar(field, rng)])
        elif is_message:
            child = getattr(message, field.name)
            child.SetInParent()  # present even when the child has no fields of its own
            _fill(child, variant, rng, depth + 1)
        else:
            setattr(message, field.name, _scalar(field, rng))


def _variants(descriptor: Descriptor) -> int:
    return max([1, *(len(oneof.fields) for oneof in descriptor.oneofs)])


def test_importing_the_messages_does_not_import_tensorflow() -> None:
    """A front end builds, serializes and parses a PredictRequest with no TensorFlow loaded."""
    probe = (
        "import json, resource, sys, time\n"
        "t = time.perf_counter()\n"
        "from serving import protos\n"
        "r = protos.PredictRequest()\n"
        "r.model_spec.name = 'm'\n"
        "r.inputs['x'].dtype = protos.DT_FLOAT\n"
        "r.inputs['x'].float_val.extend([1.0, 2.0])\n"
        "again = protos.PredictRequest.FromString(r.SerializeToString())\n"
        "print(json.dumps({'equal': again == r, 'seconds': time.perf_counter() - t,\n"
        "  'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,\n"
        "  'loaded': sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    ('tensorflow', 'tensorflow_serving', 'tfx', 'keras'))}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["equal"]
    assert report["loaded"] == []


def test_every_top_level_api_message_is_declared(official_files) -> None:
    """Newer official protos may add nested options; every API request/response must be here."""
    missing = [
        m.full_name
        for m in _all_official_messages(official_files)
        if _ours(m.full_name) is None
        and (m.containing_type is None and m.file.name.startswith("tensorflow_serving/apis/"))
    ]
    assert missing == []


def test_every_official_message_is_declared_with_the_same_fields(official_messages) -> None:
    mismatches = []
    for official in official_messages:
        ours = protos.POOL.FindMessageTypeByName(official.full_name)
        for number in _common_fields(official):
            a = official.fields_by_number[number]
            b = ours.fields_by_number[number]
            if (a.name, a.type, _repeated(a)) != (b.name, b.type, _repeated(b)):
                mismatches.append(f"{official.full_name}.{a.name} #{number}")
            elif a.message_type is not None and a.message_type.full_name != (
                b.message_type.full_name
            ):
                mismatches.append(f"{official.full_name}.{a.name}: message type")
            elif a.enum_type is not None and a.enum_type.full_name != b.enum_type.full_name:
                mismatches.append(f"{official.full_name}.{a.name}: enum type")
    assert mismatches == []
    assert len(official_messages) > 150  # the whole closure, not a handful


def test_the_vendored_files_match_the_official_ones_on_the_stack_they_come_from(
    official_files,
) -> None:
    """The vendored TensorFlow core protos are TF 2.16's: equal to the TFX stack's, descriptor
    for descriptor (the TF Serving API files are 2.20.0's, which neither stack ships exactly)."""
    import tensorflow as tf

    if not tf.__version__.startswith("2.16."):
        pytest.skip(f"TensorFlow {tf.__version__}: the field-by-field tests cover this stack")
    compared = [name for name in official_files if name.startswith(("tensorflow/", "tsl/"))]
    assert len(compared) > 30
    differing = []
    for name in compared:
        official = official_files[name]
        theirs = descriptor_pb2.FileDescriptorProto()
        official.CopyToProto(theirs)
        ours = descriptor_pb2.FileDescriptorProto()
        protos.POOL.FindFileByName(name).CopyToProto(ours)
        for proto in (theirs, ours):  # protoc versions differ in whether they spell json_name
            for message in proto.message_type:
                _clear_json_names(message)
        if theirs != ours:
            differing.append(name)
    assert differing == []


def _clear_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _clear_json_names(nested)


def test_every_message_round_trips_byte_for_byte(official_messages) -> None:
    """Official -> bytes -> ours -> bytes, and ours -> bytes -> official -> bytes, all equal."""
    failures = []
    for official in official_messages:
        official_class = _official_class(official)
        our_class = protos.message_type(official.full_name)
        for variant in range(_variants(official)):
            theirs = official_class()
            _fill(theirs, variant, random.Random(f"{official.full_name}/{variant}"))
            ours = our_class()
            _fill(ours, variant, random.Random(f"{official.full_name}/{variant}"))
            wire = theirs.SerializeToString(deterministic=True)
            if ours.SerializeToString(deterministic=True) != wire:
                failures.append(f"{official.full_name}[{variant}]: filled alike, bytes differ")
            parsed = our_class.FromString(wire)
            if parsed.SerializeToString(deterministic=True) != wire:
                failures.append(f"{official.full_name}[{variant}]: official -> ours")
            back = official_class.FromString(ours.SerializeToString(deterministic=True))
            if back != theirs:
                failures.append(f"{official.full_name}[{variant}]: ours -> official")
            if len(wire) == 0 and official.fields:
                failures.append(f"{official.full_name}[{variant}]: nothing was filled")
    assert failures == []


@functools.cache
def _official_modules() -> dict[str, object]:
    """Loaded ``*_pb2`` modules by .proto name (TF moves some, e.g. tsl/ under tensorflow.tsl)."""
    return {
        module.DESCRIPTOR.name: module
        for module in list(sys.modules.values())
        if isinstance(getattr(module, "DESCRIPTOR", None), FileDescriptor)
    }


def _official_class(descriptor: Descriptor) -> type[Message]:
    """The official generated class: its module attribute (nested classes hang off parents)."""
    chain = []
    top = descriptor
    while top.containing_type is not None:
        chain.append(top.name)
        top = top.containing_type
    chain.append(top.name)
    module = _official_modules()[top.file.name]
    cls = module
    for name in reversed(chain):
        cls = getattr(cls, name)
    return cls
