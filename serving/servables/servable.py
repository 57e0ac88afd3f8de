"""The servable type: what a loader returns, the model manager keeps and requests call.

TF Serving's core knows a loaded version only through a ``ServableHandle`` to a servable (a
``SavedModelBundle`` whose ``Session`` may be a ``BatchingSession`` wrapping the real one): the
manager and the inference code never ask which. This protocol is that contract here. A SavedModel
session, a TF Lite interpreter pool and the batching wrapper all implement it, so the core and
the front ends call ``run_async`` on whatever they were handed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from serving.servables.signatures import SignatureDef

if TYPE_CHECKING:  # the core and front ends import this protocol; only servables load TF
    from tensorflow.core.protobuf import meta_graph_pb2

Outputs = dict[str, np.ndarray]

# ``offload(fn, *args)`` runs a blocking call on the caller's bounded thread pool (TF Serving
# hands its request thread pools to ``Session::Run`` the same way, as
# ``thread::ThreadPoolOptions``). A servable that blocks in ``run`` uses it; one that waits
# without a thread (the batching wrapper: its scheduler has its own threads and queue bound)
# does not.
Offload = Callable[..., Awaitable[Outputs]]


@runtime_checkable
class Servable(Protocol):
    """One loaded model version. Every method may be called from many threads at once.

    ``timeout_ms`` is the caller's remaining deadline (0: none), TF's
    ``RunOptions.timeout_in_ms``; how it is enforced (and at what granularity) is the
    servable's business, so front ends pass the client's deadline as it is.
    """

    path: str
    signatures: Mapping[str, SignatureDef]
    meta_graph: meta_graph_pb2.MetaGraphDef

    def run(
        self,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
        timeout_ms: int = 0,
    ) -> Outputs:
        """Blocks the calling thread (warmup, MultiInference helpers, the batch threads)."""
        ...

    async def run_async(
        self,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
        timeout_ms: int,
        offload: Offload,
    ) -> Outputs:
        """What request handlers await; ``offload`` runs blocking work off the event loop."""
        ...

    def close(self) -> None:
        """Releases the version's resources; called once, after its last request."""
        ...


class BlockingServable:
    """``run_async`` for servables whose ``run`` holds a thread while the model computes."""

    async def run_async(
        self,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
        timeout_ms: int,
        offload: Offload,
    ) -> Outputs:
        return await offload(self.run, signature, inputs, output_aliases, timeout_ms)  # type: ignore[attr-defined]
