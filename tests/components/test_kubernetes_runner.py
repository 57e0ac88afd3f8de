"""Kubernetes runner with the real ``kubernetes`` client against a fake API server.

No cluster exists here: ``fake_kube_api.FakeKubeApi`` serves the pod endpoints over HTTPS on
loopback and its fake kubelet runs the pod's containers as local processes, so canary requests
reach a real ``python -m serving`` at the pod's (loopback) IP. Scripted pod statuses cover the
failures a real kubelet reports (image pull, unschedulable, container exit).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tfx.proto import infra_validator_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.exporter import executor as exporter_executor
from components.infra_validator import executor
from components.infra_validator.grpc_client import GrpcClient
from components.infra_validator.rest_client import RestClient
from components.infra_validator.runners import kubernetes_runner
from components.infra_validator.runners.base import FailureCode, ValidationFailed
from components.infra_validator.runners.kubernetes_runner import ClusterContext, KubernetesRunner
from tests.components.fake_kube_api import (
    FakeKubeApi,
    exited_status,
    unschedulable_status,
    waiting_status,
)
from tests.support.kfp import kfp_artifact, run_kfp_v2_executor

pytestmark = [
    pytest.mark.integration,
    # kubernetes 26 calls urllib3's deprecated getheaders(); not ours to fix.
    pytest.mark.filterwarnings("ignore:HTTPResponse.getheaders:DeprecationWarning"),
]

IMAGE = "registry.local/tfx-model-server:0.1"
EXECUTOR_POD = "tfx-serving-demo-infravalidator-7x2k"
EXECUTOR_UID = "6f1d8a52-0c1e-4b7e-9a55-1f5c2b9d3e01"
MODEL_NAME = "canary"


def executor_pod(pipeline_root: str) -> dict:
    """The executor's own pod as KFP v2 would run it, with the pipeline root on a PVC."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": EXECUTOR_POD, "namespace": "kubeflow", "uid": EXECUTOR_UID},
        "spec": {
            "serviceAccountName": "pipeline-runner",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.local/tfx-serving-suite:0.1",
                    "volumeMounts": [
                        {"name": "kube-api-access", "mountPath": "/var/run/secrets"},
                        {"name": "pipeline-root", "mountPath": pipeline_root},
                    ],
                }
            ],
            "volumes": [
                {"name": "kube-api-access", "emptyDir": {}},
                {"name": "pipeline-root", "persistentVolumeClaim": {"claimName": "pipeline-pvc"}},
            ],
        },
        "status": {"phase": "Running"},
    }


@pytest.fixture
def pipeline_root(tmp_path) -> str:
    root = tmp_path / "pvc"
    root.mkdir()
    return str(root)


@pytest.fixture
def kube(tmp_path, pipeline_root):
    with FakeKubeApi(tmp_path) as api:
        api.claims["pipeline-pvc"] = pipeline_root
        api.add_pod(executor_pod(pipeline_root))
        yield api


@pytest.fixture
def model_path(pipeline_root, make_saved_model) -> str:
    return make_saved_model(os.path.join(pipeline_root, "Exporter", "model", "3", "Format-Serving"))


def _runner(kube, model_path, tmp_path, pod_name=EXECUTOR_POD, config=None, **kwargs):
    cluster = ClusterContext.in_cluster(kube.service_account_dir(), kube.environ(pod_name))
    options = {"poll_seconds": 0.2, "retry_delay_seconds": 0.05, **kwargs}
    return KubernetesRunner(
        MODEL_NAME,
        model_path,
        IMAGE,
        config or infra_validator_pb2.KubernetesConfig(),
        str(tmp_path / "server.log"),
        cluster=cluster,
        **options,
    )


def _predict_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = "serving_default"
    for name in ("x1", "x2"):
        request.inputs[name].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    return request


def test_pod_on_pipeline_pvc_serves_and_is_cleaned_up(kube, model_path, tmp_path):
    config = infra_validator_pb2.KubernetesConfig(
        active_deadline_seconds=900,
        serving_pod_overrides=infra_validator_pb2.PodOverrides(
            annotations={"sidecar.istio.io/inject": "false"},
            env=[infra_validator_pb2.EnvVar(name="TFX_MODEL_SERVER_LOG_LEVEL", value="DEBUG")],
            resources=infra_validator_pb2.Resources(
                requests={"cpu": "500m"}, limits={"memory": "2Gi"}
            ),
        ),
    )
    runner = _runner(kube, model_path, tmp_path, config=config)
    kube.delete_failures = 2  # cleanup must retry through transient API errors
    kube.linger_reads = 2  # and wait while the pod terminates
    deadline = time.time() + 120
    try:
        runner.start()
        endpoint = runner.wait_until_running(deadline)
        client = RestClient(endpoint, MODEL_NAME)
        client.wait_until_available(deadline, runner.check_alive)
        assert client.send(_predict_request()) > 0
    finally:
        runner.stop()

    (body,) = kube.created
    assert body["metadata"]["generateName"] == "tfx-infraval-modelserver-"
    assert body["metadata"]["labels"] == {"app": "tfx-infraval-modelserver"}
    assert body["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": EXECUTOR_POD, "uid": EXECUTOR_UID}
    ]
    spec = body["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["serviceAccountName"] == "pipeline-runner"
    assert spec["volumes"] == [
        {
            "name": "model",
            "persistentVolumeClaim": {"claimName": "pipeline-pvc", "readOnly": True},
        }
    ]
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["tfx-model-server"]
    assert container["args"] == ["--port=8500", "--rest_api_port=8501"]
    assert container["env"] == [
        {"name": "MODEL_NAME", "value": MODEL_NAME},
        {"name": "MODEL_BASE_PATH", "value": "/model"},
        {"name": "TFX_MODEL_SERVER_LOG_LEVEL", "value": "DEBUG"},
    ]
    assert container["volumeMounts"] == [
        {
            "name": "model",
            "mountPath": f"/model/{MODEL_NAME}/1",
            "subPath": "Exporter/model/3/Format-Serving",
            "readOnly": True,
        }
    ]
    assert container["readinessProbe"]["tcpSocket"] == {"port": 8501}
    assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "2Gi"}}
    # Deleted (after retries) and waited for; the server's own log was saved first.
    assert kube.pod_names() == [EXECUTOR_POD]
    assert sum(1 for method, _ in kube.requests if method == "DELETE") == 3
    log = runner.logs()
    assert "=== container model-server\n" in log
    assert "Running gRPC ModelServer" in log


def test_model_uri_is_fetched_by_init_container_without_owner_when_pod_unknown(
    kube, model_path, tmp_path, caplog
):
    runner = _runner(kube, f"file://{model_path}", tmp_path, pod_name="not-a-pod")
    deadline = time.time() + 180
    try:
        with caplog.at_level(logging.WARNING):
            runner.start()
        endpoint = runner.wait_until_running(deadline)
        client = GrpcClient(endpoint, MODEL_NAME)
        try:
            client.wait_until_available(deadline, runner.check_alive)
            client.send(_predict_request())
        finally:
            client.close()
    finally:
        runner.stop()

    assert "WITHOUT an owner reference" in caplog.text
    (body,) = kube.created
    assert "ownerReferences" not in body["metadata"]
    assert "serviceAccountName" not in body["spec"]
    assert body["spec"]["volumes"] == [{"name": "model", "emptyDir": {}}]
    (fetch,) = body["spec"]["initContainers"]
    assert fetch["image"] == IMAGE
    assert fetch["command"][:2] == ["python", "-c"]
    assert fetch["command"][3:] == [f"file://{model_path}", f"/model/{MODEL_NAME}/1"]
    assert body["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "model", "mountPath": "/model", "readOnly": True}
    ]
    assert kube.pod_names() == [EXECUTOR_POD]


def test_image_pull_failure_is_reported_at_once_and_pod_deleted(kube, model_path, tmp_path):
    message = f'Back-off pulling image "{IMAGE}": manifest unknown'
    kube.script_next_pod(
        [waiting_status("ContainerCreating"), waiting_status("ImagePullBackOff", message)]
    )
    runner = _runner(kube, model_path, tmp_path)
    started = time.time()
    try:
        runner.start()
        with pytest.raises(ValidationFailed) as err:
            runner.wait_until_running(time.time() + 120)
    finally:
        runner.stop()

    assert time.time() - started < 30
    assert err.value.code == FailureCode.IMAGE_PULL_FAILED
    assert "manifest unknown" in err.value.message
    assert kube.pod_names() == [EXECUTOR_POD]
    # The saved log says why, even though the container never ran.
    assert "ImagePullBackOff" in runner.logs()
    assert "waiting to start" in runner.logs()


def test_unschedulable_pod_is_reported_at_the_deadline(kube, model_path, tmp_path):
    kube.script_next_pod([unschedulable_status("0/3 nodes are available: 3 Insufficient memory.")])
    runner = _runner(kube, model_path, tmp_path)
    try:
        runner.start()
        with pytest.raises(ValidationFailed) as err:
            runner.wait_until_running(time.time() + 2)
    finally:
        runner.stop()

    assert err.value.code == FailureCode.UNSCHEDULABLE
    assert "Insufficient memory" in err.value.message


def test_pod_stuck_pending_times_out_with_its_state(kube, model_path, tmp_path):
    kube.script_next_pod([waiting_status("ContainerCreating")])
    runner = _runner(kube, model_path, tmp_path)
    try:
        runner.start()
        with pytest.raises(ValidationFailed) as err:
            runner.wait_until_running(time.time() + 2)
    finally:
        runner.stop()

    assert err.value.code == FailureCode.LOAD_TIMEOUT
    assert "model-server waiting ContainerCreating" in err.value.message


def test_exited_server_is_reported_with_its_log(kube, model_path, tmp_path):
    kube.script_next_pod(
        [exited_status(2)], logs={"model-server": "tfx-model-server: error: bad flag\n"}
    )
    runner = _runner(kube, model_path, tmp_path)
    try:
        runner.start()
        with pytest.raises(ValidationFailed) as err:
            runner.wait_until_running(time.time() + 60)
    finally:
        runner.stop()

    assert err.value.code == FailureCode.SERVER_EXITED
    assert "model-server exited 2" in err.value.message
    assert "error: bad flag" in runner.logs()


def test_forbidden_pod_creation_fails_the_execution_with_the_rbac_needed(
    kube, model_path, tmp_path
):
    kube.forbid.add("create")
    runner = _runner(kube, model_path, tmp_path)

    with pytest.raises(RuntimeError, match=r"HTTP 403.*pods create/get/delete and pods/log get"):
        runner.start()
    runner.stop()  # nothing was created: a no-op


def test_failed_cleanup_is_logged_with_the_command_to_finish_it(kube, model_path, tmp_path, caplog):
    kube.script_next_pod([waiting_status("ContainerCreating")])
    runner = _runner(kube, model_path, tmp_path, delete_retries=2)
    runner.start()
    kube.delete_failures = 100

    with caplog.at_level(logging.INFO):
        runner.stop()  # never raises

    assert sum(1 for method, _ in kube.requests if method == "DELETE") == 3
    assert "kubectl delete pod --namespace kubeflow tfx-infraval-modelserver-" in caplog.text


def test_local_model_outside_any_claim_is_rejected_before_creating_a_pod(
    kube, tmp_path, make_saved_model
):
    elsewhere = make_saved_model(str(tmp_path / "local-disk" / "Format-Serving"))
    runner = _runner(kube, elsewhere, tmp_path)

    with pytest.raises(ValueError, match="not on a PersistentVolumeClaim mounted in this pod"):
        runner.start()
    assert kube.created == []


def test_outside_a_pod_the_error_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="must run inside a Kubernetes pod"):
        ClusterContext.in_cluster(str(tmp_path / "no-serviceaccount"), {})


# --- the InfraValidator executor with serving_platform kubernetes -------------------------


@pytest.fixture
def in_executor_pod(kube, monkeypatch):
    """This process as the executor container of EXECUTOR_POD under KubeflowV2DagRunner:
    in-cluster env and service-account files, and no KFP v1 variables."""
    monkeypatch.setattr(kubernetes_runner, "SERVICE_ACCOUNT_DIR", kube.service_account_dir())
    for name, value in kube.environ(EXECUTOR_POD).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KFP_POD_NAME", raising=False)
    monkeypatch.delenv("KFP_NAMESPACE", raising=False)
    monkeypatch.delenv("POD_NAME", raising=False)
    return kube


@pytest.fixture
def exported_model_uri(pipeline_root, trained_model_uri) -> str:
    """The Exporter's output on the pipeline-root PVC, as on Kubeflow."""
    trained = standard_artifacts.Model()
    trained.uri = trained_model_uri
    exported = standard_artifacts.Model()
    exported.uri = os.path.join(pipeline_root, "Exporter", "exported_model", "4")
    exporter_executor.Executor().Do({"model": [trained]}, {"exported_model": [exported]}, {})
    return exported.uri


def _serving_spec(**kubernetes) -> infra_validator_pb2.ServingSpec:
    return infra_validator_pb2.ServingSpec(
        model_name=MODEL_NAME,
        tensorflow_serving=infra_validator_pb2.TensorFlowServing(
            image_name=IMAGE.split(":")[0], tags=[IMAGE.split(":")[1]]
        ),
        kubernetes=infra_validator_pb2.KubernetesConfig(**kubernetes),
    )


def test_executor_under_kfp_v2_entrypoint_validates_in_a_pod_over_grpc(
    in_executor_pod, exported_model_uri, examples_uri, pipeline_root, tmp_path
):
    blessing_uri = os.path.join(pipeline_root, "InfraValidator", "blessing", "5")
    os.makedirs(blessing_uri)
    output_file = tmp_path / "task" / "output_metadata.json"
    request_spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
            signature_names=["serving_default", "regression"]
        ),
        split_name="eval",
    )
    executor_input = {
        "inputs": {
            "artifacts": {
                "model": kfp_artifact(exported_model_uri, "tfx.Model"),
                "examples": kfp_artifact(
                    examples_uri, "tfx.Examples", {"split_names": '["train", "eval"]'}
                ),
            },
            "parameters": {
                "serving_spec": {"stringValue": proto_utils.proto_to_json(_serving_spec())},
                "validation_spec": {
                    "stringValue": proto_utils.proto_to_json(
                        infra_validator_pb2.ValidationSpec(
                            max_loading_time_seconds=180, num_tries=1
                        )
                    )
                },
                "request_spec": {"stringValue": proto_utils.proto_to_json(request_spec)},
                "custom_config": {"stringValue": json.dumps({"canary_protocol": "grpc"})},
            },
        },
        "outputs": {
            "artifacts": {"blessing": kfp_artifact(blessing_uri, "tfx.InfraBlessing")},
            "outputFile": str(output_file),
        },
    }

    run_kfp_v2_executor("components.infra_validator.executor.Executor", executor_input)

    output = json.loads(output_file.read_text())
    metadata = output["artifacts"]["blessing"]["artifacts"][0]["metadata"]
    assert metadata["blessed"] == 1.0, metadata.get("reason_message")
    assert metadata["reason"] == "OK"
    assert metadata["validation_mode"] == "LOAD_AND_QUERY"
    assert os.path.exists(os.path.join(blessing_uri, "INFRA_BLESSED"))
    (body,) = in_executor_pod.created
    assert body["metadata"]["ownerReferences"][0]["uid"] == EXECUTOR_UID
    assert body["spec"]["containers"][0]["volumeMounts"][0]["subPath"] == (
        "Exporter/exported_model/4/Format-Serving"
    )
    assert in_executor_pod.pod_names() == [EXECUTOR_POD]
    with open(os.path.join(blessing_uri, "model_server.log")) as f:
        assert "=== container model-server\n" in f.read()


def test_executor_records_image_pull_failure_as_unblessed_reason(
    in_executor_pod, exported_model_uri, blessing
):
    for _ in range(2):
        in_executor_pod.script_next_pod(
            [waiting_status("ErrImagePull", f'pull access denied for "{IMAGE}"')]
        )
    model = standard_artifacts.Model()
    model.uri = exported_model_uri

    executor.Executor().Do(
        {"model": [model]},
        {"blessing": [blessing]},
        {
            "serving_spec": proto_utils.proto_to_json(_serving_spec()),
            "validation_spec": proto_utils.proto_to_json(
                infra_validator_pb2.ValidationSpec(max_loading_time_seconds=60, num_tries=2)
            ),
        },
    )

    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_string_custom_property("reason") == "IMAGE_PULL_FAILED"
    assert blessing.get_string_custom_property("reason_message").startswith(
        f"[{IMAGE}] cannot pull image"
    )
    report = json.loads((Path(blessing.uri) / "validation_report.json").read_text())
    assert [(a["image"], a["code"]) for a in report["attempts"]] == [
        (IMAGE, "IMAGE_PULL_FAILED")
    ] * 2
    assert len(in_executor_pod.created) == 2
    assert in_executor_pod.pod_names() == [EXECUTOR_POD]
