"""A front end's coalescing of predict calls (``serving.multiproc.coalesce``) and the packing
of several calls' tensors into one block (``serving.ipc.tensors.pack_rows``).

Calls are added from coroutines started together, so they run their first step in the same
event-loop iteration: which calls share an iteration is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.ipc.arena import Arena
from serving.ipc.tensors import pack, pack_rows, unpack
from serving.multiproc import coalesce
from serving.multiproc.coalesce import Coalescer, PendingCall, call_rows

FIELDS = {
    "op": "predict",
    "spec": ["m", None, None, "", None],
    "fp": "f1",
    "filter": [],
    "timeout": 0,
    "find": "rest",
}


def _x(rows: int, value: float = 0.0, dtype=np.float32, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, dtype=dtype)}


def test_call_rows_is_the_shared_first_dimension_or_zero():
    assert call_rows({"a": np.zeros((3, 2)), "b": np.zeros(3)}) == 3
    assert call_rows({"a": np.zeros((3, 2)), "b": np.zeros(2)}) == 0  # rows differ
    assert call_rows({"a": np.zeros(())}) == 0  # a scalar has no rows
    assert call_rows({"a": np.zeros((0, 4))}) == 0
    assert call_rows({}) == 0


async def _iteration_end() -> None:
    """Returns once the callbacks scheduled in the current iteration (the flush) have run."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def _recorder(sent: list, fields: bool = True):
    """A send that records what it was given and returns the (pending) reply future."""

    def send(message_fields, calls):
        sent.append((message_fields, calls) if fields else calls)
        return asyncio.get_running_loop().create_future()

    return send


def _answerable(sent: list, replies: list[asyncio.Future]):
    """A send that records each group and keeps its reply future, for the test to answer."""

    def send(message_fields, calls):
        sent.append(calls)
        replies.append(asyncio.get_running_loop().create_future())
        return replies[-1]

    return send


def _sent_groups(adds: list[tuple[dict, dict, int]]) -> tuple[list[list[PendingCall]], list]:
    """Adds every (fields, inputs, max_rows) in one iteration; returns the groups sent."""
    sent: list[tuple[dict, list[PendingCall]]] = []

    async def main():
        coalescer = Coalescer(_recorder(sent))
        futures = [coalescer.add(fields, inputs, rows, 4, None) for fields, inputs, rows in adds]
        await _iteration_end()
        return futures

    futures = asyncio.run(main())
    return [calls for _, calls in sent], futures


def test_calls_of_one_iteration_with_equal_options_and_layouts_go_as_one_group():
    groups, futures = _sent_groups([(FIELDS, _x(1, i), 64) for i in range(5)])
    assert len(groups) == 1
    assert [float(call.inputs["x"][0, 0]) for call in groups[0]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [call.future for call in groups[0]] == futures


def test_what_the_model_process_must_see_equal_splits_groups():
    adds = [
        (FIELDS, _x(1), 64),
        ({**FIELDS, "fp": "f2"}, _x(1), 64),  # another signature
        ({**FIELDS, "filter": ["y"]}, _x(1), 64),  # other outputs
        ({**FIELDS, "spec": ["m", 2, None, "", None]}, _x(1), 64),  # another version
        (FIELDS, _x(1, dtype=np.float64), 64),  # another dtype
        (FIELDS, _x(1, dtype=np.dtype(">f4")), 64),  # another byte order
        (FIELDS, {**_x(1), "z": np.zeros(1)}, 64),  # another input
        (FIELDS, {"z": np.zeros(2), **_x(2)}, 64),  # the same inputs in another order: joins
        (FIELDS, _x(1, width=4), 64),  # another inner shape
        (FIELDS, _x(2), 64),  # same layout, more rows: joins the first
    ]
    groups, _ = _sent_groups(adds)
    assert sorted(len(group) for group in groups) == [1, 1, 1, 1, 1, 1, 2, 2]


def test_callers_with_different_deadlines_share_a_group_with_the_longest():
    """gRPC deadlines differ per call to the millisecond: they must not keep calls apart. The
    group gets the batching scheduler's rule for a merged batch: the longest, none if any."""
    sent: list[tuple[dict, list[PendingCall]]] = []

    async def main():
        coalescer = Coalescer(_recorder(sent))
        for timeout in (50, 80, 20):
            coalescer.add({**FIELDS, "timeout": timeout}, _x(1), 64, 4, None)
        await _iteration_end()
        for timeout in (50, 0):
            coalescer.add({**FIELDS, "timeout": timeout}, _x(1), 64, 4, None)
        await _iteration_end()

    asyncio.run(main())
    assert [(fields["timeout"], len(calls)) for fields, calls in sent] == [(80, 3), (0, 2)]


def test_groups_never_hold_more_rows_than_the_batch_allows():
    groups, futures = _sent_groups([(FIELDS, _x(3), 8) for _ in range(6)] + [(FIELDS, _x(9), 8)])
    assert [sum(call.rows for call in group) for group in groups] == [6, 6, 6]
    assert futures[-1] is None  # larger than a batch: the caller sends it alone


def test_calls_of_different_iterations_are_not_held_for_each_other():
    sent: list[list[PendingCall]] = []

    async def main():
        coalescer = Coalescer(_recorder(sent, fields=False))
        coalescer.add(FIELDS, _x(1), 64, 4, None)
        await _iteration_end()
        assert len(sent) == 1  # gone at the end of its own iteration
        coalescer.add(FIELDS, _x(1), 64, 4, None)
        await _iteration_end()

    asyncio.run(main())
    assert [len(calls) for calls in sent] == [1, 1]


def test_a_call_given_up_before_the_send_is_left_out():
    sent: list[list[PendingCall]] = []

    async def main():
        coalescer = Coalescer(_recorder(sent, fields=False))
        kept = coalescer.add(FIELDS, _x(1, 1.0), 64, 4, None)
        left = coalescer.add(FIELDS, _x(1, 2.0), 64, 4, None)
        left.cancel()  # its client disconnected
        await _iteration_end()
        return kept

    kept = asyncio.run(main())
    assert len(sent) == 1 and [call.future for call in sent[0]] == [kept]


def test_calls_wait_while_the_model_process_has_enough_of_them_in_flight():
    """Two coalesced calls in flight at most: the third iteration's calls are held (they
    would only queue in the model process) and go as one group when a reply lands."""
    sent: list[list[PendingCall]] = []
    replies: list[asyncio.Future] = []
    send = _answerable(sent, replies)

    async def iteration(coalescer, count):
        for _ in range(count):
            coalescer.add(FIELDS, _x(1), 64, 2, None)
        await _iteration_end()

    async def main():
        coalescer = Coalescer(send)
        await iteration(coalescer, 1)
        await iteration(coalescer, 1)
        assert [len(calls) for calls in sent] == [1, 1]  # an idle model process: at once
        await iteration(coalescer, 3)
        await iteration(coalescer, 2)
        assert len(sent) == 2  # two in flight: held
        replies[0].set_result(({}, []))
        await _iteration_end()
        assert [len(calls) for calls in sent] == [1, 1, 5]

    asyncio.run(main())


def test_held_calls_go_after_the_hold_even_if_nothing_lands(monkeypatch):
    """A call in flight that takes long (a slow model) must not keep the next ones out of
    the batch queue for longer than the hold."""
    monkeypatch.setattr(coalesce, "HOLD_MAX_SECONDS", 0.02)
    sent: list[list[PendingCall]] = []

    async def main():
        coalescer = Coalescer(_recorder(sent, fields=False))  # its replies never land
        coalescer.add(FIELDS, _x(1), 64, 1, None)
        await _iteration_end()
        coalescer.add(FIELDS, _x(1), 64, 1, None)
        coalescer.add(FIELDS, _x(1), 64, 1, None)
        await _iteration_end()
        assert len(sent) == 1  # held behind the first
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert [len(calls) for calls in sent] == [1, 2]


def test_the_hold_is_the_recent_round_trip_within_its_bounds():
    assert coalesce.hold_seconds(0.0) == coalesce.HOLD_MIN_SECONDS
    assert coalesce.hold_seconds(0.003) == 0.003
    assert coalesce.hold_seconds(1.0) == coalesce.HOLD_MAX_SECONDS


def test_held_calls_wait_about_as_long_as_recent_calls_took_to_land(monkeypatch):
    """Calls that took 0.2 s to answer: a group held behind one of them is not sent after the
    1 ms floor, but after about that round trip."""
    monkeypatch.setattr(coalesce, "HOLD_MAX_SECONDS", 10.0)
    sent: list[list[PendingCall]] = []
    replies: list[asyncio.Future] = []
    send = _answerable(sent, replies)

    async def main():
        coalescer = Coalescer(send)
        coalescer.add(FIELDS, _x(1), 64, 1, None)
        await _iteration_end()
        await asyncio.sleep(0.2)
        replies[0].set_result(({}, []))  # one round trip of at least 0.2 s observed
        coalescer.add(FIELDS, _x(1), 64, 1, None)  # in flight, never lands
        await _iteration_end()
        coalescer.add(FIELDS, _x(1), 64, 1, None)
        coalescer.add(FIELDS, _x(1), 64, 1, None)
        await _iteration_end()
        await asyncio.sleep(0.02)
        assert len(sent) == 2  # still held: 20 times the floor, a tenth of the round trip
        await asyncio.sleep(0.4)
        assert [len(calls) for calls in sent] == [1, 1, 2]

    asyncio.run(main())


def test_a_full_batch_goes_even_while_others_are_in_flight():
    sent: list[list[PendingCall]] = []

    async def main():
        coalescer = Coalescer(_recorder(sent, fields=False))
        coalescer.add(FIELDS, _x(2), 4, 1, None)
        await _iteration_end()
        coalescer.add(FIELDS, _x(1), 4, 1, None)  # held: one call in flight
        await _iteration_end()
        assert len(sent) == 1
        coalescer.add(FIELDS, _x(3), 4, 1, None)  # now 4 rows: a full batch
        await _iteration_end()

    asyncio.run(main())
    assert [[call.rows for call in calls] for calls in sent] == [[2], [1, 3]]


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_pack_rows_writes_the_concatenation_in_one_block(dtype):
    arena = Arena(1 << 16, "test")
    parts = [{"x": np.arange(rows * 3, dtype=dtype).reshape(rows, 3) + rows} for rows in (1, 4, 2)]
    descriptors, block = pack_rows(parts, arena)
    merged = unpack(descriptors, arena.view)["x"]
    np.testing.assert_array_equal(merged, np.concatenate([part["x"] for part in parts]))
    assert merged.dtype == dtype
    arena.free(block)
    arena.close()


def test_pack_rows_joins_string_tensors_and_one_part_packs_as_pack_does():
    arena = Arena(1 << 16, "test")
    parts = [{"s": np.array([b"a", b"bc"], dtype=object)}, {"s": np.array(["d"], dtype=object)}]
    descriptors, _ = pack_rows(parts, arena)
    assert unpack(descriptors, arena.view)["s"].tolist() == [b"a", b"bc", b"d"]
    one, _ = pack_rows(parts[:1], arena)
    alone, _ = pack(parts[0], arena)
    assert [[*d[:3], d[4]] for d in one] == [[*d[:3], d[4]] for d in alone]
    arena.close()
