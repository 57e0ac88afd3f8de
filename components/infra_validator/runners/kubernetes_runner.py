"""Runs this project's serving image as a Kubernetes pod for one validation attempt.

Why not stock TFX's ``KubernetesRunner``: it requires the KFP v1 env vars ``KFP_POD_NAME`` /
``KFP_NAMESPACE``, which ``KubeflowV2DagRunner`` does not inject (tensorflow/tfx#5512), and it
reads the server's log from the wrong container. This runner finds everything from inside the
executor's own pod instead:

- **API access**: in-cluster config (``KUBERNETES_SERVICE_HOST``/``_PORT``, the service-account
  token and CA under :data:`SERVICE_ACCOUNT_DIR`).
- **Namespace**: the service-account file ``<SERVICE_ACCOUNT_DIR>/namespace``; the server pod
  is created next to the executor pod.
- **Executor pod**: name from the downward-API env var ``POD_NAME``, else ``HOSTNAME`` (which
  Kubernetes sets to the pod name). The pod supplies the owner reference (the server pod is
  garbage-collected with the executor pod), the default service account, and the volume that
  holds the model. If it cannot be read, the runner proceeds without an owner reference and
  says so in the log; ``activeDeadlineSeconds`` then bounds a leaked pod's life.

The model reaches the server pod in one of two ways: a local path on a PersistentVolumeClaim
mounted in the executor pod is mounted read-only (``subPath``) at ``/model/<name>/1`` (the
claim must be ReadWriteMany/ReadOnlyMany unless both pods share a node); a URI (``gs://``…,
the usual KFP v2 pipeline root) is copied by an init container running the same image with
``tf.io.gfile`` into an ``emptyDir``. The server runs as ``tfx-model-server --port=8500
--rest_api_port=8501`` with ``MODEL_NAME`` and ``MODEL_BASE_PATH=/model``, a TCP readiness
probe on the REST port, ``restartPolicy: Never`` (retries are the executor's ``num_tries``,
each with a fresh pod) and ``activeDeadlineSeconds``.

Failures become ``ValidationFailed`` codes, i.e. a structured unblessed reason: image pull
errors (``IMAGE_PULL_FAILED``, at once), container config/start errors and exits
(``SERVER_START_FAILED`` / ``SERVER_EXITED``, at once), a pod the scheduler cannot place
(``UNSCHEDULABLE``, at the loading deadline, since an autoscaler may still add a node), and
anything else still pending at the deadline (``LOAD_TIMEOUT``, with the pod's state). API
errors that retrying cannot fix (401/403/400/422) raise ``RuntimeError`` and fail the
execution with the permission or field at fault.

RBAC needed by the executor's service account, in its own namespace (the manifests belong to
the deployment, not to this module): ``pods``: create, get, delete; ``pods/log``: get. The
executor must reach the pod IP on ports 8500/8501 (NetworkPolicy); on Istio-enabled Kubeflow
either allow that traffic or set the annotation ``sidecar.istio.io/inject: "false"`` through
``serving_pod_overrides`` (kubeflow/pipelines#5164).

No cluster exists in this project's CI: the tests drive the real ``kubernetes`` client against
a fake API server on loopback (``tests/components/fake_kube_api.py``) whose fake kubelet runs
the pod's command as a local process.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping

import urllib3
from absl import logging
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader
from tfx.proto import infra_validator_pb2

from components.infra_validator.runners.base import (
    Endpoint,
    FailureCode,
    ModelServerRunner,
    ValidationFailed,
    read_log,
)
from components.infra_validator.runners.kubernetes_pod import (
    FETCH_CONTAINER,
    GRPC_PORT,
    REST_PORT,
    SERVER_CONTAINER,
    build_pod,
)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_START_FAILURE_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
_NOT_RETRYABLE_STATUSES = {400, 401, 403, 422}
_API_ERRORS = (ApiException, urllib3.exceptions.HTTPError)
_RBAC_HINT = (
    "the executor's service account needs, in its namespace: pods create/get/delete and "
    "pods/log get"
)


@dataclasses.dataclass(frozen=True)
class ClusterContext:
    """The API client, namespace and (if known) name of the pod this executor runs in."""

    api: client.CoreV1Api
    namespace: str
    pod_name: str | None

    @classmethod
    def in_cluster(
        cls, service_account_dir: str | None = None, environ: Mapping[str, str] | None = None
    ) -> ClusterContext:
        sa_dir = service_account_dir or SERVICE_ACCOUNT_DIR
        environ = os.environ if environ is None else environ
        namespace_file = os.path.join(sa_dir, "namespace")
        try:
            with open(namespace_file) as f:
                namespace = f.read().strip()
        except FileNotFoundError:
            raise RuntimeError(
                f"serving_platform kubernetes must run inside a Kubernetes pod, but "
                f"{namespace_file} does not exist (is automountServiceAccountToken false?). "
                "Outside a cluster, leave serving_platform unset to use the local server."
            ) from None
        configuration = client.Configuration()
        try:
            InClusterConfigLoader(
                token_filename=os.path.join(sa_dir, "token"),
                cert_filename=os.path.join(sa_dir, "ca.crt"),
                environ=environ,
            ).load_and_set(configuration)
        except ConfigException as e:
            raise RuntimeError(f"Cannot configure the in-cluster Kubernetes client: {e}") from e
        pod_name = environ.get("POD_NAME") or environ.get("HOSTNAME") or None
        return cls(client.CoreV1Api(client.ApiClient(configuration)), namespace, pod_name)


def describe_pod(pod: client.V1Pod) -> str:
    """One line with what ``kubectl describe`` would show first: phase, conditions, states."""
    status = pod.status or client.V1PodStatus()
    parts = [f"phase {status.phase or 'unknown'}"]
    if status.reason or status.message:
        parts.append(f"{status.reason}: {status.message}")
    for condition in status.conditions or []:
        if condition.status != "True" and (condition.reason or condition.message):
            parts.append(f"{condition.type} {condition.reason}: {condition.message}")
    for cs in (status.init_container_statuses or []) + (status.container_statuses or []):
        state = cs.state or client.V1ContainerState()
        if state.waiting:
            parts.append(f"{cs.name} waiting {state.waiting.reason}: {state.waiting.message}")
        elif state.terminated:
            t = state.terminated
            parts.append(f"{cs.name} exited {t.exit_code} {t.reason or ''}: {t.message or ''}")
    return "; ".join(parts)


def _failure(pod: client.V1Pod, image: str) -> ValidationFailed | None:
    """The reason a pod can no longer serve, or None while it may still come up."""
    status = pod.status or client.V1PodStatus()
    for cs in (status.init_container_statuses or []) + (status.container_statuses or []):
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason in _IMAGE_PULL_REASONS:
            return ValidationFailed(
                FailureCode.IMAGE_PULL_FAILED,
                f"cannot pull image {cs.image or image} ({waiting.reason}): {waiting.message}",
            )
        if waiting and waiting.reason in _START_FAILURE_REASONS:
            return ValidationFailed(
                FailureCode.SERVER_START_FAILED,
                f"container {cs.name} cannot start ({waiting.reason}): {waiting.message}",
            )
    for cs in status.init_container_statuses or []:
        terminated = cs.state.terminated if cs.state else None
        if terminated and terminated.exit_code != 0:
            return ValidationFailed(
                FailureCode.SERVER_START_FAILED,
                f"copying the model into the pod failed ({describe_pod(pod)}); see the "
                f"{FETCH_CONTAINER} log in the server log.",
            )
    if status.phase in ("Failed", "Succeeded"):
        return ValidationFailed(
            FailureCode.SERVER_EXITED,
            f"model server pod {pod.metadata.name} ended: {describe_pod(pod)}",
        )
    return None


def _is_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _is_unschedulable(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in conditions
    )


class KubernetesRunner(ModelServerRunner):
    """One server pod per attempt; see the module docstring for discovery, RBAC and errors."""

    def __init__(
        self,
        model_name: str,
        model_path: str,
        image: str,
        config: infra_validator_pb2.KubernetesConfig,
        log_path: str,
        cluster: ClusterContext | None = None,
        poll_seconds: float = 1.0,
        delete_retries: int = 4,
        retry_delay_seconds: float = 1.0,
        delete_wait_seconds: float = 60.0,
    ) -> None:
        self._model_name = model_name
        self._model_path = model_path
        self._image = image
        self._config = config
        self._log_path = log_path
        self._cluster = cluster
        self._poll_seconds = poll_seconds
        self._delete_retries = delete_retries
        self._retry_delay_seconds = retry_delay_seconds
        self._delete_wait_seconds = delete_wait_seconds
        self._pod_name: str | None = None
        self._last_checked = 0.0

    def _context(self) -> ClusterContext:
        if self._cluster is None:
            self._cluster = ClusterContext.in_cluster()
        return self._cluster

    def _executor_pod(self, cluster: ClusterContext) -> client.V1Pod | None:
        why = "neither POD_NAME nor HOSTNAME is set"
        if cluster.pod_name:
            try:
                return cluster.api.read_namespaced_pod(cluster.pod_name, cluster.namespace)
            except ApiException as e:
                why = f"reading pod {cluster.namespace}/{cluster.pod_name} failed: HTTP {e.status}"
        logging.warning(
            "Cannot find this executor's own pod (%s); creating the model server pod WITHOUT "
            "an owner reference: if this executor dies before cleanup, the pod stays until its "
            "activeDeadlineSeconds.",
            why,
        )
        return None

    def start(self) -> None:
        cluster = self._context()
        executor_pod = self._executor_pod(cluster)
        body = build_pod(
            self._model_name, self._model_path, self._image, self._config, executor_pod
        )
        try:
            pod = cluster.api.create_namespaced_pod(cluster.namespace, body)
        except ApiException as e:
            message = (
                f"creating the model server pod in {cluster.namespace} failed: HTTP {e.status}"
            )
            if e.status in _NOT_RETRYABLE_STATUSES:
                raise RuntimeError(f"{message} {e.reason}: {e.body}; {_RBAC_HINT}.") from e
            raise ValidationFailed(FailureCode.SERVER_START_FAILED, f"{message}: {e.body}") from e
        self._pod_name = pod.metadata.name
        logging.info(
            "Created model server pod %s/%s (image %s)",
            cluster.namespace,
            self._pod_name,
            self._image,
        )

    def _read_pod(self) -> client.V1Pod | None:
        """The server pod; None once it is gone. Transient API errors propagate as-is."""
        cluster = self._context()
        try:
            return cluster.api.read_namespaced_pod(self._pod_name, cluster.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status in _NOT_RETRYABLE_STATUSES:
                raise RuntimeError(
                    f"reading pod {self._pod_name} failed: HTTP {e.status}; {_RBAC_HINT}."
                ) from e
            raise

    def _current_pod(self) -> client.V1Pod:
        pod = self._read_pod()
        if pod is None:
            raise ValidationFailed(
                FailureCode.SERVER_EXITED,
                f"model server pod {self._pod_name} disappeared (deleted or evicted).",
            )
        failure = _failure(pod, self._image)
        if failure is not None:
            raise failure
        return pod

    def wait_until_running(self, deadline: float) -> Endpoint:
        if self._pod_name is None:
            raise RuntimeError("wait_until_running() called before start()")
        pod = None
        while time.time() < deadline:
            try:
                pod = self._current_pod()
            except _API_ERRORS as e:
                logging.info("Polling pod %s: transient API error %s", self._pod_name, e)
            else:
                status = pod.status
                if status and status.phase == "Running" and status.pod_ip and _is_ready(pod):
                    return Endpoint(status.pod_ip, REST_PORT, GRPC_PORT)
            time.sleep(self._poll_seconds)
        state = describe_pod(pod) if pod is not None else "never read"
        if pod is not None and _is_unschedulable(pod):
            raise ValidationFailed(
                FailureCode.UNSCHEDULABLE,
                f"pod {self._pod_name} could not be scheduled before the deadline: {state}. "
                "Lower serving_pod_overrides.resources or add capacity.",
            )
        raise ValidationFailed(
            FailureCode.LOAD_TIMEOUT,
            f"pod {self._pod_name} was not running and ready before the deadline ({state}); "
            "raise validation_spec.max_loading_time_seconds if the image is just slow to pull.",
        )

    def check_alive(self) -> None:
        """Raises if the pod ended; reads it at most once per poll interval."""
        if self._pod_name is None:
            raise ValidationFailed(FailureCode.SERVER_START_FAILED, "pod was never created")
        if time.time() - self._last_checked < self._poll_seconds:
            return
        self._last_checked = time.time()
        try:
            self._current_pod()
        except _API_ERRORS as e:
            logging.info("Checking pod %s: transient API error %s", self._pod_name, e)

    def logs(self) -> str:
        return read_log(self._log_path)

    def _save_logs(self, cluster: ClusterContext, pod: client.V1Pod | None) -> None:
        """Appends the pod's state and its containers' logs to the server log file."""
        if pod is None:
            return
        sections = [f"=== pod {cluster.namespace}/{self._pod_name}: {describe_pod(pod)}"]
        containers = [c.name for c in pod.spec.init_containers or []] + [SERVER_CONTAINER]
        for container in containers:
            try:
                text = cluster.api.read_namespaced_pod_log(
                    self._pod_name, cluster.namespace, container=container
                )
            except _API_ERRORS as e:
                text = f"(no log: {getattr(e, 'body', None) or e})"
            sections.append(f"=== container {container}\n{text}")
        with open(self._log_path, "a") as f:
            f.write("\n".join(sections) + "\n")

    def _delete(self, cluster: ClusterContext) -> bool:
        """Requests deletion with exponential backoff; True once requested (or already gone)."""
        for attempt in range(self._delete_retries + 1):
            try:
                cluster.api.delete_namespaced_pod(self._pod_name, cluster.namespace)
                return True
            except ApiException as e:
                if e.status == 404:
                    return True
                error: Exception = e
                if e.status in _NOT_RETRYABLE_STATUSES:
                    break
            except urllib3.exceptions.HTTPError as e:
                error = e
            if attempt < self._delete_retries:
                delay = self._retry_delay_seconds * 2**attempt
                logging.warning(
                    "Deleting pod %s failed (%s); retry in %.1fs", self._pod_name, error, delay
                )
                time.sleep(delay)
        logging.error(
            "Could not delete model server pod %s (%s); delete it by hand: kubectl delete pod "
            "--namespace %s %s (%s).",
            self._pod_name,
            error,
            cluster.namespace,
            self._pod_name,
            _RBAC_HINT,
        )
        return False

    def _wait_gone(self) -> None:
        deadline = time.time() + self._delete_wait_seconds
        while time.time() < deadline:
            try:
                if self._read_pod() is None:
                    return
            except (*_API_ERRORS, RuntimeError) as e:
                logging.info("Waiting for pod %s to go: %s", self._pod_name, e)
            time.sleep(self._poll_seconds)
        logging.warning(
            "Model server pod %s is still terminating after %.0fs; deletion was accepted, so "
            "Kubernetes removes it.",
            self._pod_name,
            self._delete_wait_seconds,
        )

    def stop(self) -> None:
        """Saves logs, deletes the pod (retrying), waits a bounded time for it to go. Never
        raises: a failed cleanup is logged with the command to finish it."""
        if self._pod_name is None:
            return
        cluster = self._context()
        try:
            pod = self._read_pod()
        except (*_API_ERRORS, RuntimeError) as e:
            logging.warning("Reading pod %s before deletion failed: %s", self._pod_name, e)
            pod = None
        self._save_logs(cluster, pod)
        if self._delete(cluster):
            self._wait_gone()
        self._pod_name = None
