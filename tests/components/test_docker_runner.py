"""Docker runner: the container it would create (no engine needed), and the real
``tensorflow/serving`` image through the InfraValidator when a Docker engine works."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from tfx.proto import infra_validator_pb2
from tfx.utils import proto_utils

from components.infra_validator import executor
from components.infra_validator.runners import platforms
from components.infra_validator.runners.docker_runner import (
    CliEngine,
    DockerRunner,
    SdkEngine,
    build_container_spec,
)

# tensorflow-serving-api is pinned to 2.16.1; validate against the same server release.
TF_SERVING_TAG = "2.16.1"
LOCAL = infra_validator_pb2.LocalDockerConfig()


def _engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None if one answers."""
    try:
        SdkEngine(LOCAL).close()
    except RuntimeError as e:
        return str(e)
    return None


def test_container_spec_mounts_model_read_only_and_publishes_loopback_ports(tmp_path):
    model = tmp_path / "Format-Serving"
    model.mkdir()
    link = tmp_path / "link"
    link.symlink_to(model)

    spec = build_container_spec("canary", str(link), "tensorflow/serving:2.16.1", LOCAL)

    assert spec.sdk_run_kwargs() == {
        "image": "tensorflow/serving:2.16.1",
        "detach": True,
        # Not auto-removed: the log of a server that crashed must still be readable.
        "auto_remove": False,
        "environment": {"MODEL_NAME": "canary", "MODEL_BASE_PATH": "/models"},
        "ports": {"8500/tcp": ("127.0.0.1", None), "8501/tcp": ("127.0.0.1", None)},
        # The engine resolves no symlinks of ours: the real path is mounted.
        "volumes": {str(model): {"bind": "/models/canary/1", "mode": "ro"}},
        "labels": {"tfx-serving-suite.infra-validation": "canary"},
    }
    assert spec.cli_run_args() == [
        "run",
        "--detach",
        "--label",
        "tfx-serving-suite.infra-validation=canary",
        "--env",
        "MODEL_NAME=canary",
        "--env",
        "MODEL_BASE_PATH=/models",
        "--publish",
        "127.0.0.1::8500",
        "--publish",
        "127.0.0.1::8501",
        "--mount",
        f"type=bind,source={model},target=/models/canary/1,readonly",
        "tensorflow/serving:2.16.1",
    ]


def test_remote_engine_host_publishes_on_all_interfaces(tmp_path):
    config = infra_validator_pb2.LocalDockerConfig(host_ip_address="10.0.0.7")

    spec = build_container_spec("m", str(tmp_path), "tensorflow/serving:2.16.1", config)

    assert spec.bind_address == "0.0.0.0"


def test_model_uri_cannot_be_bind_mounted():
    with pytest.raises(ValueError, match="bind-mounts the model"):
        build_container_spec("m", "gs://bucket/model", "tensorflow/serving:latest", LOCAL)


def test_images_follow_stock_tags_and_digests():
    spec = infra_validator_pb2.ServingSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServing(
            tags=["2.16.1", "latest"], digests=["sha256:abc"]
        ),
        local_docker=LOCAL,
    )

    assert platforms.serving_images(spec) == [
        "tensorflow/serving:2.16.1",
        "tensorflow/serving:latest",
        "tensorflow/serving@sha256:abc",
    ]
    spec.tensorflow_serving.ClearField("tags")
    spec.tensorflow_serving.ClearField("digests")
    with pytest.raises(ValueError, match="at least one image tag or digest"):
        platforms.serving_images(spec)


@pytest.mark.skipif(_engine_problem() is None, reason="a Docker engine is reachable here")
@pytest.mark.parametrize("engine", [SdkEngine, CliEngine])
def test_without_an_engine_start_fails_with_what_to_do(engine, tmp_path):
    if engine is CliEngine and shutil.which("docker") is None:
        pytest.skip("no docker CLI installed")
    with pytest.raises(RuntimeError, match=r"No Docker engine reachable.*serving_platform unset"):
        engine(LOCAL)

    runner = DockerRunner("m", str(tmp_path), "tensorflow/serving:latest", LOCAL, "log")
    with pytest.raises(RuntimeError, match="No Docker engine reachable"):
        runner.start()
    runner.stop()  # nothing was created: cleanup is a no-op


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_real_tensorflow_serving_image_validates_exported_model(
    protocol, exported_model, examples, blessing
):
    # Skipped, not failed, under CI too: it needs a Docker-API engine *and* Docker Hub's
    # tensorflow/serving image, and CI provides neither (scripts/test.sh installs only Debian
    # and PyPI packages; podman's image tests build from local bases). The runner's behaviour
    # without an engine is covered above; this is the one check against the real upstream
    # server, run wherever an engine is available.
    problem = _engine_problem()
    if problem is not None:
        pytest.skip(
            f"needs a Docker engine that can run tensorflow/serving:{TF_SERVING_TAG} ({problem}). "
            f"To run it: start Docker (or `podman system service` and set DOCKER_HOST to its "
            f"socket), `docker pull tensorflow/serving:{TF_SERVING_TAG}`, then rerun this test"
        )
    serving_spec = infra_validator_pb2.ServingSpec(
        model_name="canary",
        tensorflow_serving=infra_validator_pb2.TensorFlowServing(tags=[TF_SERVING_TAG]),
        local_docker=LOCAL,
    )

    # Canaries on every signature the Exporter wrote, typed and serialized-Example ones.
    request_spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
            signature_names=["serving_default", "predict_examples", "regression"]
        )
    )

    executor.Executor().Do(
        {"model": [exported_model], "examples": [examples]},
        {"blessing": [blessing]},
        {
            "serving_spec": proto_utils.proto_to_json(serving_spec),
            "request_spec": proto_utils.proto_to_json(request_spec),
            "validation_spec": proto_utils.proto_to_json(
                infra_validator_pb2.ValidationSpec(max_loading_time_seconds=600, num_tries=1)
            ),
            "custom_config": json.dumps({"canary_protocol": protocol}),
        },
    )

    assert blessing.get_int_custom_property("blessed") == 1, blessing.get_string_custom_property(
        "reason_message"
    )
    leftovers = subprocess.run(
        [
            "docker",
            "ps",
            "--all",
            "--quiet",
            "--filter",
            "label=tfx-serving-suite.infra-validation",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert leftovers.stdout.strip() == ""
