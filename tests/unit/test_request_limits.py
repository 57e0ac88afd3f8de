"""The request memory budget: its arithmetic, its two limits, and every decoder charging it
*before* allocating (checked with tracemalloc, which sees numpy's and Python's allocations)."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import input_pb2

from serving import request_limits, tensor_codec
from serving.errors import Code, ServingError
from serving.request_limits import MemoryLimits, MemoryPool, RequestTooLarge
from serving.rest import app, json_body, json_tensors
from serving.servables import examples

MIB = 1024 * 1024


def _pool(per_request: int = 64 * MIB, total: int = 128 * MIB) -> MemoryPool:
    return MemoryPool(MemoryLimits(per_request, total))


def _peak_during(call) -> tuple[Exception | None, int]:
    """(the exception ``call`` raised, the peak bytes traced while it ran)."""
    tracemalloc.start()
    try:
        call()
        error = None
    except Exception as exc:
        error = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, peak


# ------------------------------------------------------------------------------ arithmetic
def test_element_costs():
    assert request_limits.number_bytes(10, 4) == 10 * (4 + request_limits.NUMBER_TEMPORARY_BYTES)
    assert request_limits.string_bytes(3, 100) == 3 * request_limits.STRING_ELEMENT_BYTES + 200


def test_charges_accumulate_and_return_to_the_pool():
    pool = _pool(per_request=100, total=150)
    with pool.request() as first:
        first.charge(60, lambda: "a")
        first.charge(40, lambda: "b")  # exactly the limit is fine
        assert (first.charged, pool.held) == (100, 100)
        with pool.request() as second:
            second.charge(50, lambda: "c")
            assert pool.held == 150
        assert pool.held == 100
    assert pool.held == 0


def test_per_request_limit_names_the_numbers_and_the_flag():
    pool = _pool(per_request=100, total=1000)
    with pool.request() as budget:
        budget.charge(30, lambda: "the body")
        with pytest.raises(RequestTooLarge) as err:
            budget.charge(71, lambda: "input x (float [71])")
        assert budget.charged == 30 and pool.held == 30  # a refusal charges nothing
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    assert err.value.message == (
        "Request too large: input x (float [71]) needs 71 bytes of memory on top of the 30 "
        "this request holds, over the limit of 100 bytes per request (--max_request_memory_bytes)"
    )


def test_total_limit_sheds_with_unavailable_until_memory_returns():
    pool = _pool(per_request=100, total=150)
    with pool.request() as first:
        first.charge(100, lambda: "first")
        with pool.request() as second, pytest.raises(ServingError) as err:
            second.charge(60, lambda: "input y")
        assert err.value.code == Code.UNAVAILABLE and not isinstance(err.value, RequestTooLarge)
        assert "hold 100 bytes" in err.value.message
        assert "input y needs 60 more" in err.value.message
        assert "--max_total_request_memory_bytes" in err.value.message
    with pool.request() as third:
        third.charge(100, lambda: "third")  # served once the first has finished


def test_zero_means_unlimited():
    pool = MemoryPool(MemoryLimits(0, 0))
    with pool.request() as budget:
        budget.charge(2**62, lambda: "anything")
    assert pool.held == 0


def test_charge_goes_to_the_budget_of_the_current_task_only():
    pool = _pool(per_request=100, total=1000)

    async def request(amount: int) -> int:
        with pool.request() as budget:
            await asyncio.sleep(0)  # interleave with the other request
            request_limits.charge(amount, lambda: "x")
            await asyncio.sleep(0)
            return budget.charged

    async def both():
        return await asyncio.gather(request(10), request(90))

    assert asyncio.run(both()) == [10, 90]
    request_limits.charge(2**62, lambda: "outside any request: not limited")
    assert pool.held == 0


# -------------------------------------------------------------------------- JSON documents
_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


def _held_after_parse(body: bytes) -> int:
    tracemalloc.start()
    doc = orjson.loads(body)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del doc
    return held


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(value=_JSON_VALUES, copies=st.sampled_from([1, 40, 3000]))
def test_json_estimate_bounds_the_parsed_document(value, copies):
    """Below and above the size where structure is counted, for any mix of JSON values."""
    body = orjson.dumps([value] * copies)
    assert _held_after_parse(body) <= request_limits.json_document_bytes(body)


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b",".join([b"{}"] * 100_000) + b"]",  # empty objects: the costliest per byte
        b"[" + b",".join([b'{"a":1}'] * 100_000) + b"]",
        b"[" + b",".join([b"[]"] * 100_000) + b"]",
        b"[" + b",".join([b'"a"'] * 100_000) + b"]",
        b"[" + b",".join([b"0.5"] * 200_000) + b"]",
        b'"' + b"a" * 1_000_000 + b'"',
    ],
    ids=["objects", "one_key_objects", "arrays", "strings", "floats", "one_string"],
)
def test_json_estimate_bounds_adversarial_documents(body):
    assert _held_after_parse(body) <= request_limits.json_document_bytes(body)


def test_json_estimate_is_not_wildly_pessimistic_for_numbers():
    body = orjson.dumps({"instances": np.linspace(0, 1, 100_000).round(4).tolist()})
    assert request_limits.json_document_bytes(body) < 16 * len(body)


def test_parse_json_charges_before_parsing():
    body = b"[" + b",".join([b"[]"] * 500_000) + b"]"  # ~1.5 MB, ~50 MB parsed
    pool = _pool(per_request=8 * MIB)
    with pool.request():
        error, peak = _peak_during(lambda: json_body.parse_json(body))
    assert isinstance(error, RequestTooLarge)
    assert f"the JSON body ({len(body)} bytes)" in error.message
    assert peak < MIB


# ------------------------------------------------------------------------- gRPC tensors
def _float_tensor(shape, values=(1.0,)) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    proto.float_val.extend(values)
    return proto


def test_the_41_byte_message_is_refused_without_allocating():
    """Issue 11: shape [8388607, 64] and one float_val would fill 2 GiB."""
    tensor = _float_tensor([8388607, 64])
    assert tensor.ByteSize() < 41
    pool = _pool(per_request=1024 * MIB, total=3 * 1024 * MIB)
    with pool.request():
        error, peak = _peak_during(lambda: tensor_codec.decode(tensor, "x"))
    assert isinstance(error, RequestTooLarge)
    assert error.message.startswith(
        "Request too large: input x (float [8388607, 64]) needs 2147483400 bytes of memory"
    )
    assert "limit of 1073741824 bytes per request (--max_request_memory_bytes)" in error.message
    assert peak < MIB
    assert pool.held == 0


def test_decoded_tensors_are_charged_what_they_allocate():
    pool = _pool()
    with pool.request() as budget:
        tensor_codec.decode(_float_tensor([1000, 10], [1.0, 2.0]), "x")
        assert budget.charged == 1000 * 10 * 4 + 2 * 8  # the filled tensor + packed values
        content = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_content=b"\0" * 80)
        content.tensor_shape.dim.add().size = 10
        before = budget.charged
        tensor_codec.decode(content, "y")
        assert budget.charged - before == 80


def test_a_filled_string_tensor_is_charged_per_element():
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x" * 100])
    tensor.tensor_shape.dim.add().size = 10**7
    pool = _pool(per_request=512 * MIB, total=512 * MIB)
    with pool.request():
        error, peak = _peak_during(lambda: tensor_codec.decode(tensor, "s"))
    assert isinstance(error, RequestTooLarge)
    needed = request_limits.string_bytes(10**7, tensor.ByteSize() + (10**7 - 1) * 100)
    assert f"needs {needed} bytes" in error.message
    assert peak < MIB


@pytest.mark.parametrize("rank", [33, 100, 254])
def test_ranks_numpy_cannot_hold_are_invalid_argument(rank):
    with pytest.raises(ServingError) as err:
        tensor_codec.decode(_float_tensor([1] * rank), "x")
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == (
        f"Input x has {rank} dimensions: tensors of more than 32 dimensions are not supported"
    )


def test_empty_tensor_with_dimensions_beyond_63_bits_is_invalid_argument():
    with pytest.raises(ServingError) as err:
        tensor_codec.decode(_float_tensor([1, 3, 0, 2**63 - 1], []), "x")
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "shape [1, 3, 0, 9223372036854775807]" in err.value.message
    # The largest empty shape numpy holds for float32 is still served, as TF would.
    assert tensor_codec.decode(_float_tensor([0, 2**61 - 1], []), "x").shape == (0, 2**61 - 1)


# --------------------------------------------------------------------------- JSON tensors
def _signature(**dtypes: int) -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef()
    for alias, dtype in dtypes.items():
        signature.inputs[alias].dtype = dtype
        signature.inputs[alias].name = f"{alias}:0"
    return signature


def test_json_tensors_are_charged_before_the_array_is_built():
    doc = {"instances": [[0.5] * 100] * 1000}
    pool = _pool(per_request=2 * MIB)
    with pool.request():
        error, _ = _peak_during(
            lambda: json_tensors.decode_predict_inputs(doc, _signature(x=types_pb2.DT_DOUBLE))
        )
    assert isinstance(error, RequestTooLarge)
    assert f"input x (double [1000, 100]) needs {100_000 * (8 + 16)} bytes" in error.message
    with _pool().request() as budget:
        json_tensors.decode_predict_inputs(doc, _signature(x=types_pb2.DT_FLOAT))
        assert budget.charged == request_limits.number_bytes(100_000, 4)


def test_json_string_tensors_are_charged_their_payload():
    doc = {"inputs": {"s": ["abc", {"b64": "AAAA"}]}}
    with _pool().request() as budget:
        json_tensors.decode_predict_inputs(doc, _signature(s=types_pb2.DT_STRING))
        assert budget.charged == request_limits.string_bytes(2, 3 + 3)


# ---------------------------------------------------------------------- tf.Example batches
def test_a_context_copied_into_every_example_is_refused_before_serializing():
    inp = input_pb2.Input()
    with_context = inp.example_list_with_context
    with_context.context.features.feature["big"].float_list.value.extend([0.5] * 100_000)
    for _ in range(10_000):
        with_context.examples.add()
    pool = _pool(per_request=256 * MIB, total=256 * MIB)
    with pool.request():
        error, peak = _peak_during(lambda: examples.serialized_examples(inp))
    assert isinstance(error, RequestTooLarge)
    assert "the batch of 10000 serialized tf.Examples" in error.message
    assert peak < MIB


def test_example_batches_within_the_limit_are_charged_and_served():
    inp = input_pb2.Input()
    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(2.0)
    inp.example_list.examples.extend([example] * 3)
    with _pool().request() as budget:
        batch = examples.serialized_examples(inp)
        assert budget.charged == request_limits.string_bytes(3, inp.ByteSize())
    assert list(batch) == [example.SerializeToString()] * 3


# ------------------------------------------------------------------ compressed REST bodies
def _inflate(body: bytes, encoding: str, limit: int = 100 * MIB) -> bytes:
    return app._decompress(body, encoding, limit, "--max_request_bytes")


def test_gzip_and_deflate_bodies_are_inflated():
    text = b'{"instances": [1.0]}' * 1000
    assert _inflate(gzip.compress(text), "gzip") == text
    assert _inflate(gzip.compress(text[:7]) + gzip.compress(text[7:]), "gzip") == text
    assert _inflate(zlib.compress(text), "deflate") == text
    assert _inflate(text, "identity") == text


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (gzip.compress(b"x" * 10_000)[:-20], "gzip"),  # cut short
        (b"not gzip at all", "gzip"),
        (gzip.compress(b"{}") + b"garbage", "gzip"),
        (zlib.compress(b"{}")[:-3], "deflate"),
    ],
    ids=["truncated", "garbage", "trailing_garbage", "truncated_deflate"],
)
def test_broken_compressed_bodies_are_invalid_argument(body, encoding):
    with pytest.raises(ServingError) as err:
        _inflate(body, encoding)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message.startswith(f"Failed to decompress {encoding} request body")


def test_a_gzip_bomb_is_cut_at_the_limit_without_inflating_it_all():
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(inflater.compress(b" " * MIB) for _ in range(64)) + inflater.flush()
    assert len(bomb) < MIB // 2
    error, peak = _peak_during(lambda: _inflate(bomb, "gzip", limit=8 * MIB))
    assert isinstance(error, RequestTooLarge)
    assert "gzip-inflated request body of 9437184 bytes exceeds" in error.message
    assert "limit of 8388608 bytes (--max_request_bytes)" in error.message
    assert peak < 12 * MIB


def test_inflated_bytes_are_charged_to_the_request():
    body = gzip.compress(b" " * (4 * MIB))
    pool = _pool(per_request=2 * MIB)
    with pool.request():
        error, _ = _peak_during(lambda: _inflate(body, "gzip"))
    assert isinstance(error, RequestTooLarge)
    assert "the gzip-inflated body" in error.message
