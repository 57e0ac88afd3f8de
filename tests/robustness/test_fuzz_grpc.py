"""Thousands of generated gRPC requests against the hardened server: random bytes for every
method, and structurally valid requests with hostile contents — tensors of any dtype number,
rank and dims (negative, zero, 2^63 - 1), values that disagree with their shape, examples with
a context copied into many of them. No call may end INTERNAL or UNKNOWN (a server fault or an
unparsed failure), and afterwards the server answers a good request with its memory bounded.

Generation is seeded (``derandomize``), so a failure reproduces on every run.
"""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from tests.robustness.conftest import good_grpc_predict, good_predictions, raw_call

pytestmark = pytest.mark.integration

_SERVER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# Every method a client can call, except HandleReloadConfigRequest: a generated config that
# parsed would replace the models under test (its garbage case is in test_hostile_requests).
_METHODS = [
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/grpc.health.v1.Health/Check",
]


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


# ----------------------------------------------------------------------------- strategies
_INT64 = st.integers(-(2**63), 2**63 - 1)
# Mostly a model and signature that exist, so hostile contents reach the decoders (names are
# checked first). The slow test model is left out: a generated loop count would run until the
# deadline.
_NAMES = st.sampled_from(["half_plus_two"] * 6 + ["scale", "missing", ""]) | st.text(max_size=8)


@st.composite
def _model_specs(draw, signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=draw(_NAMES))
    choice = draw(st.sampled_from(["", "", "", "version", "label"]))
    if choice == "version":
        spec.version.value = draw(st.sampled_from([123, 123, 1, 0, -1]) | _INT64)
    elif choice == "label":
        spec.version_label = draw(st.text(max_size=6))
    spec.signature_name = draw(
        st.sampled_from([signature] * 6 + ["serving_default", "classify_x_to_y", "regress_x_to_y"])
        | st.text(max_size=6)
    )
    return spec


_DIMS = st.one_of(
    st.integers(-3, 5),
    st.sampled_from([0, 1, 2**31, 2**62, 2**63 - 1, 8388607, 10**9, 10**12]),
)
_DTYPES = st.sampled_from(sorted(types_pb2.DataType.values())) | st.integers(0, 300)
_VALUE_FIELDS = {
    "float_val": st.lists(st.floats(width=32), max_size=8),
    "double_val": st.lists(st.floats(), max_size=8),
    "int_val": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
    "int64_val": st.lists(_INT64, max_size=8),
    "uint32_val": st.lists(st.integers(0, 2**32 - 1), max_size=8),
    "uint64_val": st.lists(st.integers(0, 2**64 - 1), max_size=8),
    "half_val": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
    "bool_val": st.lists(st.booleans(), max_size=8),
    "string_val": st.lists(st.binary(max_size=12), max_size=8),
    "scomplex_val": st.lists(st.floats(width=32), max_size=8),
    "dcomplex_val": st.lists(st.floats(), max_size=8),
}


@st.composite
def _tensors(draw) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=draw(_DTYPES))
    rank = draw(st.sampled_from([0, 1, 2, 3, 33]) | st.integers(0, 40))
    for _ in range(rank):
        tensor.tensor_shape.dim.add().size = draw(st.sampled_from([1, 1, 2]) | _DIMS)
    tensor.tensor_shape.unknown_rank = draw(st.booleans())
    for name in draw(st.lists(st.sampled_from(sorted(_VALUE_FIELDS)), max_size=2, unique=True)):
        getattr(tensor, name).extend(draw(_VALUE_FIELDS[name]))
    if draw(st.integers(0, 4)) == 0:
        tensor.tensor_content = draw(st.binary(max_size=64))
    return tensor


@st.composite
def _predict_requests(draw) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    if draw(st.integers(0, 9)):
        request.model_spec.CopyFrom(draw(_model_specs()))
    aliases = st.sampled_from([["x"]] * 8 + [[], ["x", "y"]]) | st.lists(st.text(max_size=4))
    for alias in draw(aliases):
        request.inputs[alias].CopyFrom(draw(_tensors()))
    request.output_filter.extend(draw(st.lists(st.sampled_from(["y", "label", "z"]), max_size=2)))
    return request


_FEATURES = st.one_of(
    st.lists(st.floats(width=32), max_size=6).map(
        lambda v: feature_pb2.Feature(float_list=feature_pb2.FloatList(value=v))
    ),
    st.lists(_INT64, max_size=6).map(
        lambda v: feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=v))
    ),
    st.lists(st.binary(max_size=8), max_size=6).map(
        lambda v: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=v))
    ),
)
_EXAMPLES = st.dictionaries(st.sampled_from(["x", "y"]) | st.text(max_size=4), _FEATURES).map(
    lambda features: example_pb2.Example(features=feature_pb2.Features(feature=features))
)


@st.composite
def _inputs(draw) -> input_pb2.Input:
    inp = input_pb2.Input()
    kind = draw(st.sampled_from(["list", "context", "broadcast", "none"]))
    if kind == "list":
        inp.example_list.examples.extend(draw(st.lists(_EXAMPLES, max_size=6)))
    elif kind == "context":
        inp.example_list_with_context.context.CopyFrom(draw(_EXAMPLES))
        inp.example_list_with_context.examples.extend(draw(st.lists(_EXAMPLES, max_size=6)))
    elif kind == "broadcast":  # a 400 KB context copied into enough examples to pass 64 MiB
        context = inp.example_list_with_context.context
        context.features.feature["x"].float_list.value.extend([0.5] * 100_000)
        count = draw(st.integers(200, 1000))
        inp.example_list_with_context.examples.extend([example_pb2.Example()] * count)
    return inp


_REQUESTS = st.one_of(
    _predict_requests().map(lambda r: ("Predict", r)),
    st.builds(
        lambda spec, inp: (
            "Classify",
            classification_pb2.ClassificationRequest(model_spec=spec, input=inp),
        ),
        _model_specs("classify_x_to_y"),
        _inputs(),
    ),
    st.builds(
        lambda spec, inp: ("Regress", regression_pb2.RegressionRequest(model_spec=spec, input=inp)),
        _model_specs("regress_x_to_y"),
        _inputs(),
    ),
    st.builds(
        lambda tasks, inp: (
            "MultiInference",
            inference_pb2.MultiInferenceRequest(tasks=tasks, input=inp),
        ),
        st.lists(
            st.builds(
                inference_pb2.InferenceTask,
                model_spec=st.sampled_from(["classify_x_to_y", "regress_x_to_y"]).flatmap(
                    _model_specs
                ),
                method_name=st.sampled_from(
                    ["tensorflow/serving/classify", "tensorflow/serving/regress", "x"]
                ),
            ),
            max_size=3,
        ),
        _inputs(),
    ),
    st.builds(
        lambda spec, fields: (
            "GetModelMetadata",
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=fields),
        ),
        _model_specs(),
        st.lists(st.sampled_from(["signature_def", "x"]), max_size=2),
    ),
    _model_specs().map(
        lambda spec: ("GetModelStatus", get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
    ),
)
_SERVICE = {
    "GetModelStatus": "/tensorflow.serving.ModelService/",
}


def _issue_11_message() -> predict_pb2.PredictRequest:
    """Shape [8388607, 64] and one float_val: 2 GiB under TF's fill rule, in 41 bytes."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    for size in (8388607, 64):
        tensor.tensor_shape.dim.add().size = size
    tensor.float_val.append(1.0)
    return request


def _broadcast_classify() -> classification_pb2.ClassificationRequest:
    """A 400 KB context copied into 1000 examples."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.extend([0.5] * 100_000)
    with_context.examples.extend([example_pb2.Example()] * 1000)
    return request


# ----------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def codes(hardened, memory) -> Counter:
    memory.reset()  # the module's peak is checked by its last test
    return Counter()


def _call(channel, codes: Counter, method: str, data: bytes) -> None:
    try:
        raw_call(channel, method, data, timeout=60)
        codes[grpc.StatusCode.OK] += 1
    except grpc.RpcError as error:
        codes[error.code()] += 1
        assert error.code() not in _SERVER_FAULTS, (method, error.code(), error.details())


@_fuzz(800)
@given(method=st.sampled_from(_METHODS), data=st.binary(max_size=256))
def test_random_bytes(channel, codes, method, data):
    _call(channel, codes, method, data)


@_fuzz(1200)
@given(request=_REQUESTS)
# Issue 11's cases run every time, whatever the generator draws.
@example(request=("Predict", _issue_11_message()))
@example(request=("Classify", _broadcast_classify()))
def test_valid_messages_with_hostile_contents(channel, codes, request):
    name, message = request
    service = _SERVICE.get(name, "/tensorflow.serving.PredictionService/")
    _call(channel, codes, service + name, message.SerializeToString())


def test_after_fuzzing_the_server_serves_with_bounded_memory(hardened, channel, memory, codes):
    # The generators reached success, bad input, unknown models and the memory limit.
    reached = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    assert reached <= set(codes), codes
    assert hardened.process.poll() is None
    assert good_grpc_predict(channel)
    assert good_predictions(hardened)
    # The limits allow 96 MiB of decoded requests at a time, and no single fuzzed request
    # here peaks above ~40 MiB; over a thousand varied requests the allocator's retained and
    # fragmented heap still reaches 0.35-0.65 GiB at times (it is returned later). The bound
    # leaves room for that and is far below one unlimited decode (a 2^31-element fill: 8 GiB).
    assert memory.peak_growth_mib() < 1536, memory
