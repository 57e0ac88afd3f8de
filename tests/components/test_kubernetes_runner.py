"""Kubernetes runner with the real ``kubernetes`` client against a fake API server.

No cluster exists here: ``fake_kube_api.FakeKubeApi`` serves the pod endpoints over HTTPS on
loopback and its fake kubelet runs the pod's containers as local processes, so canary requests
reach a real ``python -m serving`` at the pod's (loopback) IP. Scripted pod statuses cover the
failures a real kubelet reports (image pull, unschedulable, container exit).
"""

from __future__ import annotations

import logging
import os
import time

import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tfx.proto import infra_validator_pb2

from components.infra_validator.grpc_client import GrpcClient
from components.infra_validator.rest_client import RestClient
from components.infra_validator.runners.base import FailureCode, ValidationFailed
from components.infra_validator.runners.kubernetes_runner import ClusterContext, KubernetesRunner
from tests.components.fake_kube_api import (
    FakeKubeApi,
    exited_status,
    unschedulable_status,
    waiting_status,
)

pytestmark = pytest.mark.integration

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
    assert "=== container model-server" in log
    assert "AVAILABLE" in log or "available" in log.lower()


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
