"""What a request may cost in memory once read and decoded, checked before it is allocated.

TF Serving bounds the *encoded* request only (2 GiB gRPC messages, 100 MB after gzip on REST),
yet a 41-byte ``TensorProto`` (shape ``[8388607, 64]``, one ``float_val``) decodes into a 2 GiB
tensor under TF's fill-from-the-last-value rule, a ``context`` is copied into every
``tf.Example`` of a classify request, and a JSON body becomes ~15-40 times its size as Python
objects. So every front end *charges* each allocation a request is about to make to the
request's :class:`RequestBudget`, before making it:

* the body or message as received (REST: as it arrives, and again as it is inflated; gRPC:
  twice the message size, the bytes plus the parsed message);
* the JSON document a REST body will parse into (:func:`json_document_bytes`, an upper bound
  computed from the body's bytes before parsing);
* every decoded tensor: ``elements x itemsize`` after the fill rule for numbers (plus the
  64-bit temporaries the codecs convert through), and for strings
  :data:`STRING_ELEMENT_BYTES` per element plus their payload twice (Python copy, TF copy);
* the serialized ``tf.Example`` batch of classify/regress, context copies included.

Two limits apply (``--max_request_memory_bytes``, ``--max_total_request_memory_bytes``; 0 turns a
limit off). A request that alone exceeds the first is refused with RESOURCE_EXHAUSTED (REST
413) naming both numbers; one that would push the sum held by all requests in progress past the
second is refused with UNAVAILABLE (REST 503, retry later) — so memory stays bounded however
many clients send at once, and a refusal costs no allocation. A request's charges are returned
when its answer has been produced.

What is not charged: the model's own working memory and outputs, and protobuf's parse of a
gRPC message made of millions of tiny elements (it can take ~20 times the message size before
the decoder sees it; ``--max_request_bytes`` bounds that).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass

from serving.errors import Code, ServingError

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_MAX_REQUEST_MEMORY_BYTES = 1 * GIB
DEFAULT_MAX_TOTAL_REQUEST_MEMORY_BYTES = 3 * GIB

# One string element: a numpy object slot (8) pointing at a Python bytes object (33-byte header,
# 40 with malloc's rounding), the list slot it was collected through (8), and the 24-byte
# tstring TF copies it into.
STRING_ELEMENT_BYTES = 80
# Numbers pass through a pointer list and a 64-bit array (JSON) or a 64-bit varint array
# (protobuf int fields) on their way to the tensor's dtype.
NUMBER_TEMPORARY_BYTES = 16

# JSON document bound, fitted to orjson's peak RSS (its yyjson arena plus the Python objects)
# on adversarial documents with margin: 2 bytes per body byte (text copies), per value 64
# (a float object and its slot, the arena node), per array 96, per object 320 (dict with its
# first keys), per string 48 (two quotes each).
_JSON_PER_BYTE = 2
_JSON_PER_VALUE = 64
_JSON_PER_ARRAY = 96
_JSON_PER_OBJECT = 320
_JSON_PER_QUOTE = 24
# Below this size the worst case (~38x measured, for arrays of one-key objects) is charged
# outright: counting the structure costs ~7 ns per byte, too much for every small request.
_JSON_COUNT_ABOVE = 64 * 1024
_JSON_WORST_RATIO = 48

Describe = Callable[[], str]


def string_bytes(count: int, payload: int) -> int:
    """Memory of ``count`` string elements holding ``payload`` bytes in total."""
    return count * STRING_ELEMENT_BYTES + 2 * payload


def number_bytes(count: int, itemsize: int) -> int:
    """Memory of ``count`` numbers of ``itemsize`` bytes, temporaries included."""
    return count * (itemsize + NUMBER_TEMPORARY_BYTES)


def json_document_bytes(body: bytes) -> int:
    """An upper bound on the memory ``orjson.loads(body)`` takes, computed without parsing."""
    size = len(body)
    if size <= _JSON_COUNT_ABOVE:
        return size * _JSON_WORST_RATIO
    values = body.count(b",") + body.count(b":") + 1
    return (
        size * _JSON_PER_BYTE
        + values * _JSON_PER_VALUE
        + body.count(b"[") * _JSON_PER_ARRAY
        + body.count(b"{") * _JSON_PER_OBJECT
        + body.count(b'"') * _JSON_PER_QUOTE
    )


@dataclass(frozen=True)
class MemoryLimits:
    """Bytes one request may hold, and all requests in progress together; 0 = no limit."""

    per_request: int = DEFAULT_MAX_REQUEST_MEMORY_BYTES
    total: int = DEFAULT_MAX_TOTAL_REQUEST_MEMORY_BYTES


class RequestTooLarge(ServingError):
    """RESOURCE_EXHAUSTED that REST answers with 413: retrying the same request cannot help
    (TF Serving's table maps RESOURCE_EXHAUSTED to 429, which tells clients to retry)."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, message)


class MemoryPool:
    """The process-wide account of memory held by requests in progress. ``on_release`` is told
    what each request held once it is done (``serving.memory`` returns large ones to the OS)."""

    def __init__(
        self, limits: MemoryLimits, on_release: Callable[[int], None] | None = None
    ) -> None:
        self.limits = limits
        self._held = 0
        self._lock = threading.Lock()
        self._on_release = on_release

    @property
    def held(self) -> int:
        return self._held

    def request(self) -> RequestBudget:
        """A budget for one request; use it as a context manager around the whole request."""
        return RequestBudget(self)

    def _busy(self, held: int, nbytes: int, describe: Describe) -> ServingError:
        total = self.limits.total
        return ServingError(
            Code.UNAVAILABLE,
            f"Server busy: requests in progress hold {held} bytes of decoded data and "
            f"{describe()} needs {nbytes} more, over the limit of {total} bytes "
            "(--max_total_request_memory_bytes); retry later",
        )

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes
        if self._on_release is not None:
            self._on_release(nbytes)


_current: contextvars.ContextVar[RequestBudget | None] = contextvars.ContextVar(
    "request_budget", default=None
)


class RequestBudget:
    """One request's charges. Entering binds it to the current task, so the codecs charge it
    through :func:`charge` without every decoding signature carrying it; leaving returns what
    it holds to the pool. (A class rather than ``@contextmanager``: it runs on every request.)
    """

    __slots__ = ("_pool", "_token", "charged")

    def __init__(self, pool: MemoryPool) -> None:
        self._pool = pool
        self._token: contextvars.Token | None = None
        self.charged = 0

    def charge(self, nbytes: int, describe: Describe) -> None:
        """Accounts ``nbytes`` the request is about to allocate, or raises without doing so.
        (The pool's part inlined: this runs several times per request.)"""
        pool = self._pool
        limits = pool.limits
        limit = limits.per_request
        if limit and self.charged + nbytes > limit:
            raise RequestTooLarge(
                f"Request too large: {describe()} needs {nbytes} bytes of memory"
                + (f" on top of the {self.charged} this request holds" if self.charged else "")
                + f", over the limit of {limit} bytes per request (--max_request_memory_bytes)"
            )
        total = limits.total
        with pool._lock:
            held = pool._held
            if not total or held + nbytes <= total:
                pool._held = held + nbytes
                self.charged += nbytes
                return
        raise pool._busy(held, nbytes, describe)

    def __enter__(self) -> RequestBudget:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)
        self._pool._give_back(self.charged)
        self.charged = 0


def charge(nbytes: int, describe: Describe) -> None:
    """Charges the budget of the request being served; outside a request (model warmup, which
    replays the model's own files) nothing is limited."""
    budget = _current.get()
    if budget is not None:
        budget.charge(nbytes, describe)
