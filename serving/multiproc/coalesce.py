"""Predict calls a front end decoded in one event-loop iteration, handed over as one call.

Every call from a front-end process to the model process costs both sides work that does not
depend on its size: a message each way, a task, the version pin, the signature checks, a
batch-queue entry, the metrics. Batching merges the calls' rows in the model process anyway,
and a front end under load decodes many requests per event-loop iteration (each iteration
reads every connection that is ready), so it hands them over already merged: calls to the same
version and signature, with the same output filter and tensors that differ only in their number
of rows, are concatenated into one shared-memory block and sent as one call listing each caller's
rows (``InferenceService.predict_calls``); the outputs come back merged and each caller gets
views of its own rows.

When to send: a group goes out at the end of the iteration that decoded its calls, unless the
front end already has as many coalesced calls of that kind in flight as the model process has
batch threads: then the group keeps collecting until one of those answers, or for about one
round trip of that kind of call at most (:func:`hold_seconds`; then it joins the batch queue,
where it would have waited for a batch thread anyway). A request arriving alone on an idle
server is therefore sent at once, and under load the calls that would have queued one by one in
the model process are handed over as one. (The gRPC front end receives one call per listener
per event-loop iteration, a few at most; without that rule it would send them a few at a time.)

Only calls to batched versions are coalesced (the snapshot's ``coalesce_rows``: the version's
``max_batch_size``), never into more rows than that: an unbatched version runs each request
on its own, and a model call never holds more rows than the batching allows. TF Serving has no
such step because its front ends and batching share one process; this is the process hop's
per-call cost paid once per group instead of once per request.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np

Inputs = Mapping[str, np.ndarray]


@dataclass(eq=False, slots=True)
class PendingCall:
    """One decoded call waiting for the end of the iteration. Its future gets the call's
    reply: ``{"spec": [...], "arrays": {...}}``, or the model process's ``{"retry": ...}``."""

    inputs: Inputs
    rows: int
    timeout_ms: int  # the caller's remaining deadline (0: none)
    rid: str | None  # the request id (prediction log), sent when the call goes alone
    future: asyncio.Future


# send(message fields, calls): packs the calls' inputs and sends them as one model call; the
# future of its reply, or None if it could not be sent (the calls have failed then).
Send = Callable[[dict, list[PendingCall]], "asyncio.Future | None"]


# How long a group is held for a call in flight to land: the recent round trip of its kind of
# call (sent -> answered), within these bounds. A call in flight lands within about one round
# trip, so held calls reach the batch queue -- its bound, deadlines, merging with the other
# front ends' calls -- about when a batch thread would have been free for them anyway. The
# floor lets several calls join a group (a gRPC front end decodes one every few hundred µs):
# held calls go when the call in flight lands, so it is a cap on the wait, not a wait. At 2 ms
# against 1 ms, gRPC at N=2, c=64 sent 7.6 rows a message instead of 5.6 and the model process
# spent 76 instead of 93 µs per request (means of 5 and 6 interleaved runs; p50 and p99 alike).
# The ceiling keeps a slow model's calls, or one stuck call, from holding the next ones out of
# the queue for long.
HOLD_MIN_SECONDS = 0.002
HOLD_MAX_SECONDS = 0.005
# The weight of the newest round trip in the running mean.
_ROUND_TRIP_WEIGHT = 0.125
# Round trips are remembered per kind of call; more kinds than this (versions come and go)
# start over.
_ROUND_TRIP_KINDS = 1024


def hold_seconds(round_trip: float) -> float:
    """The hold for a group whose calls recently took ``round_trip`` seconds to answer."""
    return min(max(round_trip, HOLD_MIN_SECONDS), HOLD_MAX_SECONDS)


@dataclass(eq=False)
class _Group:
    fields: dict
    max_rows: int
    max_in_flight: int
    calls: list[PendingCall] = field(default_factory=list)
    rows: int = 0
    in_flight: int = 0
    hold: asyncio.TimerHandle | None = None  # armed while calls are held
    due: bool = False  # held for its hold already

    @property
    def ready(self) -> bool:
        return bool(self.calls) and (
            self.in_flight < self.max_in_flight or self.rows >= self.max_rows or self.due
        )


def call_rows(inputs: Inputs) -> int:
    """The rows every input of a call has along its first dimension; 0 when the call cannot
    be merged with others (no inputs, a scalar, inputs with different row counts, no rows)."""
    rows = 0
    for array in inputs.values():
        if not isinstance(array, np.ndarray) or not array.ndim:
            return 0
        count = array.shape[0]
        if rows and count != rows:
            return 0
        rows = count
    return rows


class Coalescer:
    """Groups calls by everything the model process must see equal for them to be one call,
    and sends each group when it may (see the module docstring)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._groups: dict[tuple, _Group] = {}
        self._round_trips: dict[tuple, float] = {}  # running mean per kind of call, seconds
        self._scheduled = False

    def add(
        self, fields: dict, inputs: Inputs, max_rows: int, max_in_flight: int, rid: str | None
    ) -> asyncio.Future | None:
        """The future of this call's reply, or None when it cannot be coalesced (the caller
        sends it alone). ``fields``: the call's message without its tensors."""
        rows = call_rows(inputs)
        if not rows or rows > max_rows:
            return None
        key = (
            tuple(fields["spec"]),
            fields["fp"],
            tuple(fields["filter"]),
            fields["find"],
            _layout(inputs),
        )
        future = asyncio.get_running_loop().create_future()
        call = PendingCall(inputs, rows, fields["timeout"], rid, future)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(fields, max_rows, max(1, max_in_flight))
        group.calls.append(call)
        group.rows += rows
        if group.ready:
            self._schedule()
        elif group.hold is None:
            group.hold = asyncio.get_running_loop().call_later(
                hold_seconds(self._round_trips.get(key, 0.0)), self._held_long_enough, group
            )
        return call.future

    def _held_long_enough(self, group: _Group) -> None:
        group.hold, group.due = None, True
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            # In a context of its own: the request that happened to come first lends the group
            # neither its request id nor anything else of its context.
            asyncio.get_running_loop().call_soon(self._flush, context=contextvars.Context())

    def _flush(self) -> None:
        self._scheduled = False
        for key, group in list(self._groups.items()):
            if not group.ready:
                continue
            live = [call for call in group.calls if not call.future.done()]  # not given up on
            group.calls, group.rows, group.due = [], 0, False
            if group.hold is not None:
                group.hold.cancel()
                group.hold = None
            sent_at = asyncio.get_running_loop().time()
            for chunk in _chunks(live, group.max_rows):
                reply = self._send({**group.fields, "timeout": _deadline(chunk)}, chunk)
                if reply is not None:
                    group.in_flight += 1
                    reply.add_done_callback(partial(self._landed, key, group, sent_at))
            if not group.in_flight:
                del self._groups[key]

    def _landed(self, key: tuple, group: _Group, sent_at: float, reply: asyncio.Future) -> None:
        group.in_flight -= 1
        self._observe_round_trip(key, asyncio.get_running_loop().time() - sent_at)
        if group.ready:
            self._schedule()
        elif not group.in_flight and not group.calls and self._groups.get(key) is group:
            del self._groups[key]

    def _observe_round_trip(self, key: tuple, seconds: float) -> None:
        round_trips = self._round_trips
        previous = round_trips.get(key)
        if previous is None:
            if len(round_trips) >= _ROUND_TRIP_KINDS:
                round_trips.clear()
            round_trips[key] = seconds
        else:
            round_trips[key] = previous + _ROUND_TRIP_WEIGHT * (seconds - previous)


def _layout(inputs: Inputs) -> tuple:
    """What the calls of one group must share of their tensors: names, dtypes and the shape
    after the rows (a lone input, what most models take, without sorting)."""
    if len(inputs) == 1:
        for name, array in inputs.items():
            return ((name, array.dtype, array.shape[1:]),)
    return tuple(sorted((name, array.dtype, array.shape[1:]) for name, array in inputs.items()))


def _deadline(calls: list[PendingCall]) -> int:
    """The group's deadline, as the batching scheduler sets a merged batch's: the longest, or
    none if a caller has none. (gRPC deadlines differ per call, to the millisecond; a caller
    whose own deadline passes first is still cancelled by its front end.)"""
    timeouts = [call.timeout_ms for call in calls]
    return 0 if 0 in timeouts else max(timeouts)


def _chunks(calls: list[PendingCall], max_rows: int) -> Iterator[list[PendingCall]]:
    """Consecutive runs of calls holding at most ``max_rows`` rows each."""
    chunk: list[PendingCall] = []
    rows = 0
    for call in calls:
        if chunk and rows + call.rows > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(call)
        rows += call.rows
    if chunk:
        yield chunk
