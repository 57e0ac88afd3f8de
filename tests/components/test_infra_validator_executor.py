"""InfraValidator executor against the real model server (``python -m serving``) subprocess."""

from __future__ import annotations

import json
import logging
import os
import re
import time

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.components.pusher import executor as stock_pusher_executor
from tfx.proto import infra_validator_pb2, pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.infra_validator import executor
from components.infra_validator.runners.base import FailureCode, ValidationFailed
from components.infra_validator.runners.local_process import LocalProcessRunner
from components.summary import LOGGER_NAME as SUMMARY_LOGGER

pytestmark = pytest.mark.integration

SIGNATURES = ["serving_default", "predict_examples", "regression", "classification"]


def _validate(tmp_path, model, examples=None, request_spec=None, **extra):
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    exec_properties = {
        "serving_spec": proto_utils.proto_to_json(
            infra_validator_pb2.ServingSpec(model_name="canary")
        ),
        "validation_spec": proto_utils.proto_to_json(
            infra_validator_pb2.ValidationSpec(max_loading_time_seconds=120, num_tries=1)
        ),
        **extra,
    }
    if request_spec is not None:
        exec_properties["request_spec"] = proto_utils.proto_to_json(request_spec)
    inputs = {"model": [model]}
    if examples is not None:
        inputs["examples"] = [examples]
    executor.Executor().Do(inputs, {"blessing": [blessing]}, exec_properties)
    return blessing


def _request_spec(**kwargs) -> infra_validator_pb2.RequestSpec:
    return infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
            signature_names=SIGNATURES
        ),
        **kwargs,
    )


def _summaries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SUMMARY_LOGGER]


def test_load_and_query_blesses_and_stamps_model_for_stock_pusher(
    tmp_path, exported_model, examples, caplog
):
    with caplog.at_level(logging.INFO, logger=SUMMARY_LOGGER):
        blessing = _validate(
            tmp_path,
            exported_model,
            examples,
            _request_spec(num_examples=2, make_warmup=True),
        )

    assert blessing.get_int_custom_property("blessed") == 1, blessing.get_string_custom_property(
        "reason_message"
    )
    assert os.path.exists(os.path.join(blessing.uri, "INFRA_BLESSED"))
    assert blessing.get_string_custom_property("validation_mode") == "LOAD_AND_QUERY"
    assert blessing.get_string_custom_property("reason") == "OK"
    assert blessing.get_float_custom_property("latency_p99_ms") > 0
    assert blessing.get_float_custom_property("peak_memory_mib") > 0
    report = json.loads((tmp_path / "blessing" / "validation_report.json").read_text())
    assert [a["ok"] for a in report["attempts"]] == [True]
    assert os.path.getsize(os.path.join(blessing.uri, "model_server.log")) > 0
    [line] = _summaries(caplog)
    p99 = blessing.get_float_custom_property("latency_p99_ms")
    memory = blessing.get_float_custom_property("peak_memory_mib")
    assert line == (
        f"InfraValidator: BLESSED: p99 latency {p99:.1f} ms, peak memory {memory:.0f} MiB "
        "(8 canary requests over rest); stamped model with warmup written; server log "
        f"{os.path.join(blessing.uri, 'model_server.log')}"
    )
    # make_warmup: the validated model + its 2 x 4 canaries as PredictionLogs (one signature
    # of each kind: predict, regress and classify requests all answered by the real server).
    assert blessing.get_int_custom_property("has_model") == 1
    warmup = os.path.join(
        blessing.uri, "stamped_model", "assets.extra", "tf_serving_warmup_requests"
    )
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(warmup)
    ]
    assert len(logs) == 8

    # A stock TFX Pusher accepts our blessing as its only input and pushes the stamped model.
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    store = str(tmp_path / "store")
    stock_pusher_executor.Executor().Do(
        {"infra_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {
            "push_destination": proto_utils.proto_to_json(
                pusher_pb2.PushDestination(
                    filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=store)
                )
            )
        },
    )
    assert pushed.get_int_custom_property("pushed") == 1
    version_dir = pushed.get_string_custom_property("pushed_destination")
    assert os.path.exists(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests"))


def test_load_only_without_examples(tmp_path, exported_model):
    blessing = _validate(tmp_path, exported_model)

    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_string_custom_property("validation_mode") == "LOAD_ONLY"
    assert not blessing.has_custom_property("has_model")


def test_model_that_cannot_load_is_not_blessed_with_reason_and_log(tmp_path, exported_model):
    variables = os.path.join(exported_model.uri, "Format-Serving", "variables")
    for name in os.listdir(variables):
        os.remove(os.path.join(variables, name))

    blessing = _validate(tmp_path, exported_model)

    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "INFRA_NOT_BLESSED"))
    assert blessing.get_string_custom_property("reason") in {
        FailureCode.MODEL_UNAVAILABLE.value,
        FailureCode.SERVER_EXITED.value,
    }
    assert blessing.get_string_custom_property("reason_message")
    assert os.path.getsize(os.path.join(blessing.uri, "model_server.log")) > 0


def test_memory_limit_is_enforced(tmp_path, exported_model, examples, caplog):
    with caplog.at_level(logging.INFO, logger=SUMMARY_LOGGER):
        blessing = _validate(
            tmp_path,
            exported_model,
            examples,
            _request_spec(),
            custom_config=json.dumps({"max_memory_mib": 1}),
        )

    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_string_custom_property("reason") == "MEMORY_LIMIT_EXCEEDED"
    [line] = _summaries(caplog)
    assert re.fullmatch(
        r"InfraValidator: NOT BLESSED \(MEMORY_LIMIT_EXCEEDED: peak RSS \d+ MiB > limit 1 MiB\): "
        r"p99 latency [\d.]+ ms, peak memory \d+ MiB \(4 canary requests over rest\); "
        r"server log .*/blessing/model_server\.log",
        line,
    ), line


def test_server_that_exits_fails_fast(tmp_path):
    runner = LocalProcessRunner(
        "m", str(tmp_path), str(tmp_path / "log"), extra_args=("--no_such_flag=1",)
    )
    runner.start()
    started = time.time()
    try:
        with pytest.raises(ValidationFailed) as err:
            runner.wait_until_running(time.time() + 120)
    finally:
        runner.stop()

    assert err.value.code == FailureCode.SERVER_EXITED
    assert time.time() - started < 60
    assert "no_such_flag" in runner.logs()
