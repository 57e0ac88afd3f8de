"""What the inference core and its front ends exchange, with no TensorFlow on the import path.

The front ends (``serving.rest``, ``serving.grpc_api``) import only these names from the core's
side, so a front-end process that never loads TensorFlow can build requests and read results;
the messages inside results are ``serving.protos`` classes, wire-identical to TF Serving's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from serving.errors import Code, ServingError

# SignatureDef.method_name of the signatures Classify and Regress run (signature_constants.h).
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class ResolvedSpec:
    """The ``model_spec`` a response carries: the version and signature actually used."""

    name: str
    version: int
    signature_name: str


@dataclass(frozen=True)
class PredictResult:
    spec: ResolvedSpec
    outputs: dict[str, np.ndarray]


class InferenceObserver(Protocol):
    """Told of every successful Predict / Classify / Regress, on the request path (so it must
    stay cheap: the prediction logger only enqueues). The seam plug-ins such as
    ``serving.metadata`` use instead of the core knowing them."""

    def on_inference(
        self, kind: str, spec: ResolvedSpec, request: object, response: object
    ) -> None:
        """``kind``: predict/classify/regress; ``request``: the decoded inputs (a dict of
        arrays) or the ``Input`` proto; ``response``: the outputs or the result proto (both
        ``serving.protos`` messages)."""
        ...


def status_error(exc: BaseException) -> ServingError:
    """Anything unexpected becomes INTERNAL with a message, never a bare crash."""
    if isinstance(exc, ServingError):
        return exc
    return ServingError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")


class RequestMetrics(Protocol):
    """What a front end records per call (``ServingMetrics`` in one process; forwarded to the
    model process's registry by a front-end process)."""

    path: str | None

    def record_request_latency(
        self, model: str, api: str, entrypoint: str, seconds: float
    ) -> None: ...


class Dataplane(Protocol):
    """What the REST and gRPC front ends ask of the server behind them: ``InferenceService``
    in one process, ``serving.multiproc.remote.RemoteDataplane`` in a front-end process.
    Front ends hold no reference to the core, so the same front-end code serves both."""

    metrics: RequestMetrics | None

    async def predict(
        self,
        spec: Any,
        decode_inputs: Callable[[Any], Mapping[str, np.ndarray]],
        output_filter: Sequence[str] = (),
        timeout_ms: int = 0,
        find: Callable[[Mapping[str, Any], str], Any] = ...,
    ) -> PredictResult: ...

    async def classify(
        self, spec: Any, inp: Any, timeout_ms: int = 0
    ) -> tuple[ResolvedSpec, Any]: ...

    async def regress(
        self, spec: Any, inp: Any, timeout_ms: int = 0
    ) -> tuple[ResolvedSpec, Any]: ...

    async def multi_inference(
        self, tasks: Sequence[tuple[Any, str]], inp: Any, timeout_ms: int = 0
    ) -> list[tuple[ResolvedSpec, Any]]: ...

    def model_names(self) -> list[str]: ...

    def models_without_available_version(self) -> list[str]: ...

    async def model_status(self, spec: Any) -> Any: ...

    async def model_metadata(self, spec: Any, fields: Sequence[str]) -> Any: ...

    async def reload_config(self, config: Any, budget_seconds: float) -> None: ...
