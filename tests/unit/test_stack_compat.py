"""What the server relies on that differs, or could, between its two stacks (docs/stacks.md).

Runs on both: the TFX 1.16 stack (protobuf 3.20, numpy 1, TF 2.16) and the current one
(protobuf 5+, numpy 2, TF 2.21). Each test checks the behaviour itself, not a version number.
"""

from __future__ import annotations

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool
from tensorflow_serving.apis import get_model_status_pb2

from serving import compat
from serving.servables.saved_model import LoadOptions, load_saved_model
from tests.support.models import write_tf2_scale


def test_message_class_from_a_runtime_descriptor_round_trips():
    pool = descriptor_pool.DescriptorPool()
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="compat_test.proto", package="compat.test", syntax="proto3"
    )
    message = file_proto.message_type.add(name="Pair")
    for number, name in enumerate(("left", "right"), start=1):
        message.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool.Add(file_proto)
    pair_class = compat.message_class(pool.FindMessageTypeByName("compat.test.Pair"))
    pair = pair_class(left=3, right=-4)
    assert pair_class.FromString(pair.SerializeToString()) == pair


def test_message_to_dict_prints_defaults_like_tf_serving():
    """A version in state UNKNOWN (0) with an OK (0) status: TF Serving prints the zeros."""
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.add(version=7).status.SetInParent()
    assert compat.message_to_dict_with_defaults(response, preserving_proto_field_name=True) == {
        "model_version_status": [
            {
                "version": "7",
                "state": "UNKNOWN",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def test_session_callable_feeds_shapes_the_signature_does_not_declare(tmp_path):
    """The servable runs graphs through Session._make_callable_from_options (private API), which
    feeds tensors without Python's static-shape check, as TF Serving does: ``x`` is declared
    [None, 1] and a [2, 3] batch still reaches the graph."""
    servable = load_saved_model(write_tf2_scale(str(tmp_path / "1"), factor=3.0), LoadOptions())
    try:
        signature = servable.signatures["serving_default"]
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        outputs = servable.run(signature, {"x": x}, ["y"])
    finally:
        servable.close()
    np.testing.assert_array_equal(outputs["y"], x * 3.0)
