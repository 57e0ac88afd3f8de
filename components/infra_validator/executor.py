"""InfraValidator executor: stock LOAD_ONLY / LOAD_AND_QUERY semantics, structured results.

Behaviour kept from stock TFX 1.16: LOAD_AND_QUERY iff ``examples`` and ``request_spec`` are
given; up to ``num_tries`` attempts, each bounded by ``max_loading_time_seconds``; a failed
validation is a *successful* execution with ``blessed=0`` and ``INFRA_NOT_BLESSED``; SIGTERM stops
the server and fails the execution; ``make_warmup`` stamps the validated model with the canary
requests into ``stamped_model/`` and sets ``has_model=1``.

Added: the server's log (``model_server.log``) and a ``validation_report.json`` in the blessing,
custom properties ``reason``/``reason_message``/``validation_mode``/``latency_p99_ms``/
``peak_memory_mib``, optional p99-latency and memory limits, and predict canaries for any typed
inputs, canaries over REST (default) or gRPC (``custom_config`` ``canary_protocol``; stock
always uses gRPC). Everything the executor creates outside the blessing dir (temp dirs, server
processes, containers, pods) is removed in ``finally``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.proto import infra_validator_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as stock
from tfx.utils import io_utils, path_utils, proto_utils

from components import serving_requests, store_io
from components.infra_validator.grpc_client import GrpcClient
from components.infra_validator.rest_client import RestClient
from components.infra_validator.runners import platforms
from components.infra_validator.runners.base import FailureCode, ValidationFailed
from components.manifest import build_manifest, manifest_path_for
from components.summary import log_summary

DEFAULT_MODEL_NAME = "infra-validation-model"
_DEFAULT_NUM_TRIES = 5
_DEFAULT_MAX_LOADING_TIME_SECONDS = 300
_DEFAULT_LATENCY_REQUESTS = 100
BLESSED_KEY = "blessed"
HAS_MODEL_KEY = "has_model"
REASON_KEY = "reason"
REASON_MESSAGE_KEY = "reason_message"
MODE_KEY = "validation_mode"
LATENCY_KEY = "latency_p99_ms"
MEMORY_KEY = "peak_memory_mib"
BLESSED_FILENAME = "INFRA_BLESSED"
NOT_BLESSED_FILENAME = "INFRA_NOT_BLESSED"
SERVER_LOG_FILENAME = "model_server.log"
REPORT_FILENAME = "validation_report.json"
LOAD_ONLY = "LOAD_ONLY"
LOAD_AND_QUERY = "LOAD_AND_QUERY"
REST = "rest"
GRPC = "grpc"


class GracefulShutdown(Exception):
    """SIGTERM arrived: stop the server, clean up, fail the execution (never retried)."""


@dataclasses.dataclass(frozen=True)
class ValidationOptions:
    """``custom_config``: optional thresholds and the canary transport; unknown keys are
    rejected, not ignored."""

    max_latency_p99_ms: float | None = None
    latency_requests: int = _DEFAULT_LATENCY_REQUESTS
    max_memory_mib: float | None = None
    canary_protocol: str = REST

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> ValidationOptions:
        config = config or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Unknown InfraValidator custom_config keys {unknown}; supported: {sorted(known)}."
            )
        limits = cls(**config)
        if limits.latency_requests < 1:
            raise ValueError("custom_config latency_requests must be >= 1.")
        if limits.canary_protocol not in (REST, GRPC):
            raise ValueError(
                f"custom_config canary_protocol must be {REST!r} or {GRPC!r}, got "
                f"{limits.canary_protocol!r}."
            )
        return limits


@dataclasses.dataclass
class Attempt:
    number: int
    image: str | None = None
    ok: bool = False
    code: str = "OK"
    message: str = ""
    seconds: float = 0.0
    latency_p99_ms: float | None = None
    peak_memory_mib: float | None = None


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turns SIGTERM into GracefulShutdown so ``finally`` stops the server (main thread only,
    which is where LocalDagRunner and the Kubeflow entrypoint run executors)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise GracefulShutdown(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parse(exec_properties: dict[str, Any], key: str, message: Any) -> Any:
    if exec_properties.get(key):
        proto_utils.json_to_proto(exec_properties[key], message)
    return message


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        # Bucket pipeline roots (gs://, s3://): the model is validated from a local copy and
        # the blessing (report, log, stamped model) uploaded (components.store_io).
        blessing_uri = artifact_utils.get_single_instance(output_dict[stock.BLESSING_KEY]).uri
        with store_io.staged_artifacts(
            input_dict.get(stock.MODEL_KEY, []), output_dict[stock.BLESSING_KEY]
        ):
            self._validate(input_dict, output_dict, exec_properties, blessing_uri)

    def _validate(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
        blessing_uri: str,
    ) -> None:
        """``blessing_uri``: where the blessing ends up (a bucket URI when staged locally)."""
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[stock.MODEL_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[stock.BLESSING_KEY])
        examples = input_dict.get(stock.EXAMPLES_KEY)

        serving_spec = _parse(
            exec_properties, stock.SERVING_SPEC_KEY, infra_validator_pb2.ServingSpec()
        )
        serving_spec.model_name = serving_spec.model_name or DEFAULT_MODEL_NAME
        validation_spec = _parse(
            exec_properties, stock.VALIDATION_SPEC_KEY, infra_validator_pb2.ValidationSpec()
        )
        num_tries = validation_spec.num_tries or _DEFAULT_NUM_TRIES
        max_loading = validation_spec.max_loading_time_seconds or _DEFAULT_MAX_LOADING_TIME_SECONDS
        request_spec = None
        if exec_properties.get(stock.REQUEST_SPEC_KEY):
            request_spec = _parse(
                exec_properties, stock.REQUEST_SPEC_KEY, infra_validator_pb2.RequestSpec()
            )
        custom_config = json.loads(exec_properties.get(stock.CUSTOM_CONFIG_KEY) or "null")
        limits = ValidationOptions.from_config(custom_config)

        model_path = path_utils.serving_model_path(
            model.uri, path_utils.is_old_model_artifact(model)
        )
        mode = LOAD_AND_QUERY if examples and request_spec is not None else LOAD_ONLY
        requests: list[serving_requests.Request] = []
        if mode == LOAD_AND_QUERY:
            requests = self._build_requests(
                serving_spec.model_name,
                model_path,
                artifact_utils.get_single_instance(examples),
                request_spec,
            )
        elif limits.max_latency_p99_ms is not None:
            raise ValueError(
                "max_latency_p99_ms needs LOAD_AND_QUERY: pass examples and request_spec."
            )
        images = platforms.serving_images(serving_spec)
        logging.info(
            "InfraValidator mode %s with %d canary requests over %s, servers %s",
            mode,
            len(requests),
            limits.canary_protocol,
            images,
        )

        attempts: list[Attempt] = []
        # Local temp dir on purpose: the server needs a local model path (the orchestrator's
        # tmp dir may be a gs:// URI on Kubeflow).
        with tempfile.TemporaryDirectory(prefix="infraval-") as tmp, _sigterm_raises():
            base_path = self._model_base_path(tmp, serving_spec.model_name, model_path)
            log_path = os.path.join(tmp, SERVER_LOG_FILENAME)
            open(log_path, "w").close()  # exists even if no server ever starts
            # Stock semantics: every image (tag/digest) must pass, each with num_tries tries.
            for image in images:
                for number in range(1, num_tries + 1):
                    attempt = self._validate_once(
                        number,
                        serving_spec,
                        image,
                        model_path,
                        base_path,
                        log_path,
                        max_loading,
                        requests,
                        limits,
                    )
                    attempts.append(attempt)
                    if attempt.ok:
                        break
                    logging.warning(
                        "Infra validation attempt %d (%s) failed: %s",
                        number,
                        image or "bundled server",
                        attempt.message,
                    )
                if not attempts[-1].ok:
                    break
            # fileio, not shutil: on Kubeflow the blessing URI is usually gs://.
            io_utils.copy_file(
                log_path, os.path.join(blessing.uri, SERVER_LOG_FILENAME), overwrite=True
            )

        final = attempts[-1]
        self._write_result(blessing, mode, attempts)
        stamped = final.ok and request_spec is not None and request_spec.make_warmup and requests
        if stamped:
            self._stamp_model(blessing, model_path, requests)
        log_summary(
            "InfraValidator",
            _summary(
                attempts,
                mode,
                len(requests),
                limits.canary_protocol,
                posixpath.join(blessing_uri, SERVER_LOG_FILENAME),
                bool(stamped),
            ),
        )

    @staticmethod
    def _build_requests(
        model_name: str,
        model_path: str,
        examples: types.Artifact,
        request_spec: infra_validator_pb2.RequestSpec,
    ) -> list[serving_requests.Request]:
        tf_spec = request_spec.tensorflow_serving
        defs = serving_requests.load_signature_defs(
            model_path, tuple(tf_spec.tag_set) or ("serve",)
        )
        names = list(tf_spec.signature_names) or ["serving_default"]
        records = serving_requests.read_examples(
            examples, request_spec.split_name or None, request_spec.num_examples or 1
        )
        return serving_requests.build_requests(model_name, defs, names, records)

    @staticmethod
    def _model_base_path(tmp: str, model_name: str, model_path: str) -> str:
        """TF Serving wants ``<base>/<integer version>``; link the model in as version 1."""
        base = os.path.join(tmp, "models", model_name)
        os.makedirs(base)
        os.symlink(os.path.abspath(model_path), os.path.join(base, "1"))
        return base

    def _validate_once(
        self,
        number: int,
        serving_spec: infra_validator_pb2.ServingSpec,
        image: str | None,
        model_path: str,
        base_path: str,
        log_path: str,
        max_loading_seconds: int,
        requests: list[serving_requests.Request],
        limits: ValidationOptions,
    ) -> Attempt:
        attempt = Attempt(number, image)
        started = time.time()
        deadline = started + max_loading_seconds
        runner = platforms.make_runner(serving_spec, image, model_path, base_path, log_path)
        client_class = GrpcClient if limits.canary_protocol == GRPC else RestClient
        try:
            runner.start()
            endpoint = runner.wait_until_running(deadline)
            with contextlib.closing(client_class(endpoint, serving_spec.model_name)) as client:
                client.wait_until_available(deadline, runner.check_alive)
                latencies = [client.send(r) for r in requests]
                if limits.max_latency_p99_ms is not None:
                    while len(latencies) < limits.latency_requests:
                        latencies.append(client.send(requests[len(latencies) % len(requests)]))
            if latencies:
                attempt.latency_p99_ms = float(np.percentile(latencies, 99) * 1000)
            peak = runner.peak_memory_bytes()
            if peak is not None:
                attempt.peak_memory_mib = peak / (1 << 20)
            _check_limits(attempt, limits)
            attempt.ok = True
        except ValidationFailed as e:
            attempt.code, attempt.message = e.code.value, e.message
        except GracefulShutdown:
            logging.error("Shutting down; model server log:\n%s", runner.logs())
            raise
        finally:
            runner.stop()
            attempt.seconds = round(time.time() - started, 3)
        if not attempt.ok:
            logging.info("BEGIN_MODEL_SERVER_LOG\n%s\nEND_MODEL_SERVER_LOG", runner.logs()[-20000:])
        return attempt

    @staticmethod
    def _write_result(blessing: types.Artifact, mode: str, attempts: list[Attempt]) -> None:
        final = attempts[-1]
        report = {
            "mode": mode,
            "blessed": final.ok,
            "attempts": [dataclasses.asdict(a) for a in attempts],
        }
        io_utils.write_string_file(
            os.path.join(blessing.uri, REPORT_FILENAME), json.dumps(report, indent=1)
        )
        marker = BLESSED_FILENAME if final.ok else NOT_BLESSED_FILENAME
        io_utils.write_string_file(os.path.join(blessing.uri, marker), "")
        blessing.set_int_custom_property(BLESSED_KEY, int(final.ok))
        blessing.set_string_custom_property(MODE_KEY, mode)
        blessing.set_string_custom_property(REASON_KEY, final.code)
        message = f"[{final.image}] {final.message}" if final.image and final.message else ""
        blessing.set_string_custom_property(REASON_MESSAGE_KEY, message or final.message)
        if final.latency_p99_ms is not None:
            blessing.set_float_custom_property(LATENCY_KEY, final.latency_p99_ms)
        if final.peak_memory_mib is not None:
            blessing.set_float_custom_property(MEMORY_KEY, final.peak_memory_mib)

    @staticmethod
    def _stamp_model(
        blessing: types.Artifact, model_path: str, requests: list[serving_requests.Request]
    ) -> None:
        """Stock ``make_warmup``: the validated model plus its canaries as warmup requests."""
        stamped = path_utils.stamped_model_path(blessing.uri)
        io_utils.copy_dir(model_path, stamped)
        serving_requests.write_warmup_requests(stamped, requests)
        build_manifest(stamped).write(manifest_path_for(stamped))
        blessing.set_int_custom_property(HAS_MODEL_KEY, 1)


def _summary(
    attempts: list[Attempt],
    mode: str,
    num_requests: int,
    protocol: str,
    server_log: str,
    stamped: bool,
) -> str:
    """The verdict line: blessed or not and why, p99, peak memory, where the server log is."""
    final = attempts[-1]
    verdict = "BLESSED" if final.ok else f"NOT BLESSED ({final.code}: {final.message})"
    checked = (
        f"{num_requests} canary requests over {protocol}"
        if mode == LOAD_AND_QUERY
        else "load only (no examples/request_spec)"
    )
    if final.image:
        checked += f" on {final.image}"
    tries = f", attempt {final.number}" if final.number > 1 else ""
    p99 = f"{final.latency_p99_ms:.1f} ms" if final.latency_p99_ms is not None else "-"
    memory = f"{final.peak_memory_mib:.0f} MiB" if final.peak_memory_mib is not None else "-"
    stamp = "; stamped model with warmup written" if stamped else ""
    return (
        f"{verdict}: p99 latency {p99}, peak memory {memory} ({checked}{tries}){stamp}; "
        f"server log {server_log}"
    )


def _check_limits(attempt: Attempt, limits: ValidationOptions) -> None:
    if (
        limits.max_latency_p99_ms is not None
        and attempt.latency_p99_ms is not None
        and attempt.latency_p99_ms > limits.max_latency_p99_ms
    ):
        raise ValidationFailed(
            FailureCode.LATENCY_LIMIT_EXCEEDED,
            f"p99 latency {attempt.latency_p99_ms:.1f} ms > limit {limits.max_latency_p99_ms} ms",
        )
    if limits.max_memory_mib is not None:
        if attempt.peak_memory_mib is None:
            raise ValidationFailed(
                FailureCode.MEMORY_LIMIT_EXCEEDED,
                "max_memory_mib is set but this serving platform cannot measure memory; use "
                "pod resource limits on Kubernetes instead.",
            )
        if attempt.peak_memory_mib > limits.max_memory_mib:
            raise ValidationFailed(
                FailureCode.MEMORY_LIMIT_EXCEEDED,
                f"peak RSS {attempt.peak_memory_mib:.0f} MiB > limit {limits.max_memory_mib} MiB",
            )
