"""What the inference core and its front ends exchange, with no TensorFlow on the import path.

The front ends (``serving.rest``, ``serving.grpc_api``) import only these names from the core's
side, so a front-end process that never loads TensorFlow can build requests and read results;
the messages inside results are ``serving.protos`` classes, wire-identical to TF Serving's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
