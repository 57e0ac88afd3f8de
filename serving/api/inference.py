"""The one inference core both front ends call: resolve, validate, run off the event loop.

Model calls run in a thread pool (TF releases the GIL while it computes), so the asyncio event
loop that serves HTTP and gRPC keeps accepting requests. The number of calls waiting for a
thread is bounded: past the bound a request fails fast with UNAVAILABLE (HTTP 503) instead of
queueing without limit and timing out everyone. The core hands that pool to the servable
(``Servable.run_async``'s ``offload``) and never asks what the servable is: a batched version
waits for its batch without using it, as its scheduler has its own threads and bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from serving import protos
from serving.api import model_info
from serving.api.model_control import ConfigReloader
from serving.api.types import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    InferenceObserver,
    PredictResult,
    ResolvedSpec,
    status_error,
)
from serving.batching.scheduler import CALLER_ROWS
from serving.core.model_spec import ModelSpec
from serving.core.server_core import ServableHandle, ServerCore
from serving.errors import (
    BATCH_WIDE_CODES,
    Code,
    ServingError,
    invalid_argument,
    unavailable,
    unimplemented,
)
from serving.monitoring.metrics import ServingMetrics
from serving.servables import examples
from serving.servables.signatures import (
    SignatureDef,
    check_inputs,
    find_signature,
    output_aliases,
    signature_or_default,
)

ResultProto = TypeVar("ResultProto", protos.ClassificationResult, protos.RegressionResult)
InputDecoder = Callable[[SignatureDef], Mapping[str, np.ndarray]]


class InferenceService:
    def __init__(
        self,
        core: ServerCore,
        num_threads: int,
        max_queued: int,
        metrics: ServingMetrics | None = None,
        observers: Sequence[InferenceObserver] = (),
    ) -> None:
        self.core = core
        self.metrics = metrics
        self._reloader = ConfigReloader(core)
        self._observers = tuple(observers)
        self._pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="infer")
        self._num_threads = num_threads
        self._max_queued = max_queued
        self._pending = 0
        self._pending_lock = threading.Lock()

    async def _run(self, fn: Callable[..., object], *args: object) -> object:
        with self._pending_lock:
            if self._pending >= self._num_threads + self._max_queued:
                raise unavailable(
                    f"Server overloaded: {self._pending} inference calls are already in progress "
                    f"or queued (limit {self._num_threads + self._max_queued}); retry later"
                )
            self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            with self._pending_lock:
                self._pending -= 1

    async def _model_call(
        self,
        handle: ServableHandle,
        api: str,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        aliases: Sequence[str],
        timeout_ms: int,
    ) -> dict[str, np.ndarray]:
        """The model call both front ends share, timed as TF Serving's runtime_latency."""
        start = time.perf_counter()
        outputs = await handle.servable.run_async(signature, inputs, aliases, timeout_ms, self._run)
        if self.metrics is not None:
            self.metrics.record_runtime(
                handle.model_name, handle.version, api, time.perf_counter() - start
            )
        return outputs

    def _counted(self, model: str) -> _RequestCounter | contextlib.nullcontext:
        """TF Serving's request_count{model_name,status} for one API call."""
        if self.metrics is None:
            return contextlib.nullcontext()
        return _RequestCounter(self.metrics, model)

    # ------------------------------------------------------------------ predict
    async def predict(
        self,
        spec: ModelSpec,
        decode_inputs: InputDecoder,
        output_filter: Sequence[str] = (),
        timeout_ms: int = 0,
        find: Callable[[Mapping[str, SignatureDef], str], SignatureDef] = find_signature,
    ) -> PredictResult:
        """``decode_inputs`` gets the signature because REST needs its dtypes to read JSON."""
        with self._counted(spec.name), self.core.handle(spec) as handle:
            signature = find(handle.servable.signatures, spec.signature_name)
            inputs = decode_inputs(signature)
            check_inputs(signature, list(inputs))
            aliases = output_aliases(signature, output_filter)
            outputs = await self._model_call(
                handle, "Predict", signature, inputs, aliases, timeout_ms
            )
            resolved = self._resolved(handle, spec)
            for observer in self._observers:
                observer.on_inference("predict", resolved, inputs, outputs)
            return PredictResult(resolved, outputs)

    async def predict_calls(
        self,
        spec: ModelSpec,
        decode_inputs: InputDecoder,
        rows: Sequence[int],
        output_filter: Sequence[str] = (),
        timeout_ms: int = 0,
        find: Callable[[Mapping[str, SignatureDef], str], SignatureDef] = find_signature,
    ) -> PredictResult | list[PredictResult | ServingError]:
        """Predict for several callers at once, each counted as one request.

        ``decode_inputs`` returns the callers' inputs concatenated along the batch dimension,
        caller ``i`` owning the next ``rows[i]`` rows of every tensor: a front-end process
        sends the calls it decoded in one event-loop iteration this way
        (``serving.multiproc.coalesce``), so the per-call work between the front end and the
        batch queue is done once. One model call serves them all, as the batching scheduler
        would have merged them, and the merged result comes back when every output has the
        batch dimension. Otherwise (an error that is not the whole batch's, an output without
        the batch dimension) each caller's rows run again on their own, on the same version,
        and the list holds each caller's result or error: a request fails only for itself, as
        with batching. Only for servers without inference observers: the prediction log needs
        each request's own record and request id, which ``predict`` gives it.
        """
        if self._observers:
            raise ServingError(
                Code.INTERNAL, "coalesced calls reached a server with inference observers"
            )
        total = sum(rows)
        group = _RequestCounter(self.metrics, spec.name, len(rows)) if self.metrics else None
        with self.core.handle(spec) as handle:
            with group or contextlib.nullcontext():
                signature = find(handle.servable.signatures, spec.signature_name)
                inputs = decode_inputs(signature)
                check_inputs(signature, list(inputs))
                aliases = output_aliases(signature, output_filter)
                callers = CALLER_ROWS.set(tuple(rows))  # batching metrics count each caller
                try:
                    outputs = await self._model_call(
                        handle, "Predict", signature, inputs, aliases, timeout_ms
                    )
                except ServingError as error:
                    if error.code in BATCH_WIDE_CODES:
                        raise
                    outputs = None
                finally:
                    CALLER_ROWS.reset(callers)
                if outputs is not None and all(
                    output.ndim and len(output) == total for output in outputs.values()
                ):
                    return PredictResult(self._resolved(handle, spec), outputs)
                if group is not None:
                    group.calls = 0  # each caller is counted with its own outcome below
            return await self._each_alone(
                handle, spec, signature, inputs, aliases, rows, timeout_ms
            )

    async def _each_alone(
        self,
        handle: ServableHandle,
        spec: ModelSpec,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        aliases: Sequence[str],
        rows: Sequence[int],
        timeout_ms: int,
    ) -> list[PredictResult | ServingError]:
        resolved = self._resolved(handle, spec)
        bounds = list(itertools.accumulate(rows, initial=0))

        async def alone(start: int, stop: int) -> PredictResult:
            part = {name: array[start:stop] for name, array in inputs.items()}
            with self._counted(spec.name):
                outputs = await self._model_call(
                    handle, "Predict", signature, part, aliases, timeout_ms
                )
                return PredictResult(resolved, outputs)

        results = await asyncio.gather(
            *(alone(start, stop) for start, stop in itertools.pairwise(bounds)),
            return_exceptions=True,
        )
        return [r if isinstance(r, PredictResult) else status_error(r) for r in results]

    # ------------------------------------------------------------------ classify / regress
    async def classify(
        self, spec: ModelSpec, inp: protos.Input, timeout_ms: int = 0
    ) -> tuple[ResolvedSpec, protos.ClassificationResult]:
        return await self._on_examples(
            "Classify",
            spec,
            inp,
            timeout_ms,
            examples.classification_plan,
            examples.classification_result,
        )

    async def regress(
        self, spec: ModelSpec, inp: protos.Input, timeout_ms: int = 0
    ) -> tuple[ResolvedSpec, protos.RegressionResult]:
        return await self._on_examples(
            "Regress", spec, inp, timeout_ms, examples.regression_plan, examples.regression_result
        )

    async def _on_examples(
        self,
        api: str,
        spec: ModelSpec,
        inp: protos.Input,
        timeout_ms: int,
        plan: Callable[[SignatureDef], tuple[str, list[str]]],
        result: Callable[[Mapping[str, np.ndarray], int], ResultProto],
    ) -> tuple[ResolvedSpec, ResultProto]:
        """Classify and Regress: serialized examples into one signature input, a result out."""
        with self._counted(spec.name), self.core.handle(spec) as handle:
            _, signature = examples.find_inference_signature(
                handle.servable.signatures, spec.signature_name
            )
            alias, fetch = plan(signature)
            batch = examples.serialized_examples(inp)
            outputs = await self._model_call(
                handle, api, signature, {alias: batch}, fetch, timeout_ms
            )
            resolved, answer = self._resolved(handle, spec), result(outputs, len(batch))
            for observer in self._observers:
                observer.on_inference(api.lower(), resolved, inp, answer)
            return resolved, answer

    # ------------------------------------------------------------------ multi-inference
    async def multi_inference(
        self, tasks: Sequence[tuple[ModelSpec, str]], inp: protos.Input, timeout_ms: int = 0
    ) -> list[tuple[ResolvedSpec, InferenceResult]]:
        """TF Serving's MultiInference (multi_inference.cc), a gRPC-only API.

        ``tasks`` are (spec, method name) pairs, at least one. The first spec picks the version
        for all of them, and every task's outputs come from one session run over the shared
        examples, so the results are consistent with each other. As in TF Serving, the tasks'
        signatures may read different input tensors (a TF2 SavedModel gives each signature its
        own placeholder): every one of them is fed the same serialized examples.
        """
        with self._counted(tasks[0][0].name), self.core.handle(tasks[0][0]) as handle:
            plans = _plan_tasks(handle.servable.signatures, tasks)
            # One synthetic signature keyed by tensor name: the tasks' aliases (e.g. two
            # "inputs" or two "scores") may collide, their tensors are what the session feeds
            # and fetches.
            # The servable's own SignatureDef class: its TensorInfos are copied in.
            combined = type(plans[0].signature)()
            for plan in plans:
                info = plan.signature.inputs[plan.input_alias]
                combined.inputs[info.name].CopyFrom(info)
                for output in plan.outputs:
                    info = plan.signature.outputs[output]
                    combined.outputs[info.name].CopyFrom(info)
            batch = examples.serialized_examples(inp)
            fetched = await self._model_call(
                handle,
                "MultiInference",
                combined,
                dict.fromkeys(combined.inputs, batch),
                list(combined.outputs),
                timeout_ms,
            )
            results: list[tuple[ResolvedSpec, InferenceResult]] = []
            for plan in plans:
                outputs = {out: fetched[plan.signature.outputs[out].name] for out in plan.outputs}
                if plan.method == CLASSIFY_METHOD:
                    result = examples.classification_result(outputs, len(batch))
                else:
                    result = examples.regression_result(outputs, len(batch))
                results.append((ResolvedSpec(handle.model_name, handle.version, plan.key), result))
            return results

    @staticmethod
    def _resolved(handle: ServableHandle, spec: ModelSpec) -> ResolvedSpec:
        return ResolvedSpec(
            handle.model_name, handle.version, signature_or_default(spec.signature_name)
        )

    # ------------------------------------------------------------------ model information
    def model_names(self) -> list[str]:
        return self.core.model_names()

    def models_without_available_version(self) -> list[str]:
        return self.core.models_without_available_version()

    async def model_status(self, spec: ModelSpec) -> protos.GetModelStatusResponse:
        return model_info.model_status(self.core, spec)

    async def model_metadata(
        self, spec: ModelSpec, fields: Sequence[str]
    ) -> protos.GetModelMetadataResponse:
        return model_info.model_metadata(self.core, spec, list(fields))

    async def reload_config(self, config: protos.ModelServerConfig, budget_seconds: float) -> None:
        await self._reloader.reload(config, budget_seconds)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


InferenceResult = protos.ClassificationResult | protos.RegressionResult


@dataclass(frozen=True)
class _TaskPlan:
    key: str
    method: str
    signature: SignatureDef
    input_alias: str
    outputs: list[str]


def _plan_tasks(
    signatures: Mapping[str, SignatureDef], tasks: Sequence[tuple[ModelSpec, str]]
) -> list[_TaskPlan]:
    """MultiInference's checks, in TF Serving's order and words (multi_inference.cc)."""
    model = ""
    plans: list[_TaskPlan] = []
    for spec, method in tasks:
        if not spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model and spec.name != model:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        model = spec.name
        key = signature_or_default(spec.signature_name)
        if any(plan.key == key for plan in plans):
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        if key not in signatures:
            raise invalid_argument(f"Requested signature not found in model graph: {key}")
        signature = signatures[key]
        if method == CLASSIFY_METHOD:
            alias, outputs = examples.classification_plan(signature)
        elif method == REGRESS_METHOD:
            alias, outputs = examples.regression_plan(signature)
        else:
            raise unimplemented(f"Unsupported signature method_name: {method}")
        plans.append(_TaskPlan(key, method, signature, alias, outputs))
    return plans


class _RequestCounter:
    """Counts ``calls`` calls (one API call, or a front end's coalesced ones) under the status
    they ended with. A class rather than ``@contextmanager``, which costs several times more
    on every request."""

    __slots__ = ("_metrics", "_model", "calls")

    def __init__(self, metrics: ServingMetrics, model: str, calls: int = 1) -> None:
        self._metrics = metrics
        self._model = model
        self.calls = calls

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb) -> None:
        if exc_type is None:
            status = Code.OK.name
        elif issubclass(exc_type, asyncio.CancelledError):
            status = Code.CANCELLED.name
        elif isinstance(exc, Exception):
            status = status_error(exc).code.name
        else:
            return
        if self.calls:
            self._metrics.record_request(self._model, status, self.calls)
