"""The model server pod manifest for the Kubernetes runner (pure: no API calls).

Kept apart from the runner so the manifest, which is where most configuration mistakes show,
can be read and unit-tested on its own. See the runner's docstring for why each field is set.
"""

from __future__ import annotations

import os

from kubernetes import client
from tfx.proto import infra_validator_pb2

POD_NAME_PREFIX = "tfx-infraval-modelserver-"
APP_LABEL = "tfx-infraval-modelserver"
SERVER_CONTAINER = "model-server"
FETCH_CONTAINER = "fetch-model"
SERVER_COMMAND = "tfx-model-server"
GRPC_PORT = 8500
REST_PORT = 8501
MODEL_ROOT = "/model"
_MODEL_VOLUME = "model"
_DEFAULT_ACTIVE_DEADLINE_SECONDS = 24 * 3600  # stock default
# Runs in the init container: copies the model from a URI with TensorFlow's file systems.
_FETCH_SCRIPT = """\
import sys
import tensorflow as tf
src, dst = sys.argv[1].rstrip("/"), sys.argv[2]
for root, _, files in tf.io.gfile.walk(src):
    target = dst + root[len(src):]
    tf.io.gfile.makedirs(target)
    for name in files:
        tf.io.gfile.copy(root + "/" + name, target + "/" + name, overwrite=True)
"""


def _env(env: infra_validator_pb2.EnvVar) -> client.V1EnvVar:
    if not env.name:
        raise ValueError("serving_pod_overrides.env entries need a name.")
    if env.HasField("value_from"):
        ref = env.value_from.secret_key_ref
        if not (ref.name and ref.key):
            raise ValueError(f"EnvVar {env.name!r}: value_from needs secret_key_ref name and key.")
        return client.V1EnvVar(
            name=env.name,
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=ref.name, key=ref.key)
            ),
        )
    return client.V1EnvVar(name=env.name, value=env.value)


def _resources(resources: infra_validator_pb2.Resources) -> client.V1ResourceRequirements | None:
    if resources.claims:
        raise ValueError(
            "serving_pod_overrides.resources.claims is not supported (dynamic resource claims "
            "also need pod-level resourceClaims); use requests/limits."
        )
    if not (resources.requests or resources.limits):
        return None
    return client.V1ResourceRequirements(
        requests=dict(resources.requests) or None, limits=dict(resources.limits) or None
    )


def _is_within(parent: str, child: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def model_volume(
    model_name: str, model_path: str, image: str, executor_pod: client.V1Pod | None
) -> tuple[client.V1Volume, client.V1VolumeMount, client.V1Container | None]:
    """The volume that brings the model to ``/model/<name>/1``, its mount in the server
    container, and the init container that fills it (URIs only)."""
    version_dir = f"{MODEL_ROOT}/{model_name}/1"
    if "://" in model_path:
        fetch = client.V1Container(
            name=FETCH_CONTAINER,
            image=image,
            command=["python", "-c", _FETCH_SCRIPT, model_path, version_dir],
            volume_mounts=[client.V1VolumeMount(name=_MODEL_VOLUME, mount_path=MODEL_ROOT)],
        )
        return (
            client.V1Volume(name=_MODEL_VOLUME, empty_dir=client.V1EmptyDirVolumeSource()),
            client.V1VolumeMount(name=_MODEL_VOLUME, mount_path=MODEL_ROOT, read_only=True),
            fetch,
        )
    path = os.path.realpath(model_path)
    if executor_pod is None:
        raise ValueError(
            f"The model at {path} is a local path, and this executor's pod could not be read to "
            "find the PersistentVolumeClaim holding it; set POD_NAME through the downward API "
            "and grant pods get, or use an object-store pipeline root (gs://...)."
        )
    volumes = {v.name: v for v in executor_pod.spec.volumes or []}
    mounts = [m for c in executor_pod.spec.containers for m in c.volume_mounts or []]
    covering = [m for m in mounts if _is_within(os.path.normpath(m.mount_path), path)]
    mount = max(covering, key=lambda m: len(m.mount_path), default=None)
    volume = volumes.get(mount.name) if mount else None
    if volume is None or volume.persistent_volume_claim is None:
        raise ValueError(
            f"The model at {path} is not on a PersistentVolumeClaim mounted in this pod "
            f"({executor_pod.metadata.name}), so the model server pod cannot mount it. Put the "
            "pipeline root on a ReadWriteMany PVC mounted in the component pods, or use an "
            "object-store pipeline root (gs://...)."
        )
    relative = os.path.relpath(path, os.path.normpath(mount.mount_path))
    sub_path = os.path.normpath(os.path.join(mount.sub_path or "", relative))
    claim = volume.persistent_volume_claim.claim_name
    return (
        client.V1Volume(
            name=_MODEL_VOLUME,
            persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                claim_name=claim, read_only=True
            ),
        ),
        client.V1VolumeMount(
            name=_MODEL_VOLUME,
            mount_path=version_dir,
            sub_path="" if sub_path == "." else sub_path,
            read_only=True,
        ),
        None,
    )


def build_pod(
    model_name: str,
    model_path: str,
    image: str,
    config: infra_validator_pb2.KubernetesConfig,
    executor_pod: client.V1Pod | None,
) -> client.V1Pod:
    """The server pod manifest; owner reference and service account come from the executor
    pod when it is known."""
    overrides = config.serving_pod_overrides
    volume, mount, fetch = model_volume(model_name, model_path, image, executor_pod)
    extra_env = [_env(e) for e in overrides.env]
    resources = _resources(overrides.resources)
    if fetch is not None:
        # Credentials for the object store usually arrive as env overrides.
        fetch.env = extra_env or None
        fetch.resources = resources
    deadline = config.active_deadline_seconds or _DEFAULT_ACTIVE_DEADLINE_SECONDS
    if deadline < 0:
        raise ValueError(f"kubernetes.active_deadline_seconds must be > 0, got {deadline}.")
    owner_references = None
    service_account = config.service_account_name or None
    if executor_pod is not None:
        owner_references = [
            client.V1OwnerReference(
                api_version="v1",
                kind="Pod",
                name=executor_pod.metadata.name,
                uid=executor_pod.metadata.uid,
            )
        ]
        service_account = service_account or executor_pod.spec.service_account_name
    server = client.V1Container(
        name=SERVER_CONTAINER,
        image=image,
        command=[SERVER_COMMAND],
        args=[f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}"],
        env=[
            client.V1EnvVar(name="MODEL_NAME", value=model_name),
            client.V1EnvVar(name="MODEL_BASE_PATH", value=MODEL_ROOT),
            *extra_env,
        ],
        ports=[
            client.V1ContainerPort(name="grpc", container_port=GRPC_PORT),
            client.V1ContainerPort(name="http", container_port=REST_PORT),
        ],
        readiness_probe=client.V1Probe(
            tcp_socket=client.V1TCPSocketAction(port=REST_PORT), period_seconds=2
        ),
        resources=resources,
        volume_mounts=[mount],
    )
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            generate_name=POD_NAME_PREFIX,
            labels={"app": APP_LABEL},
            annotations=dict(overrides.annotations) or None,
            owner_references=owner_references,
        ),
        spec=client.V1PodSpec(
            containers=[server],
            init_containers=[fetch] if fetch is not None else None,
            volumes=[volume],
            restart_policy="Never",
            service_account_name=service_account,
            active_deadline_seconds=deadline,
        ),
    )
