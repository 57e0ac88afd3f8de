"""Offline checks of the Kubernetes manifests in ``deploy/k8s``.

Every kustomization is rendered with ``kubectl kustomize`` (client-side only: no cluster is
contacted, none exists in CI) and every rendered object is validated strictly against the
Kubernetes OpenAPI schemas bundled with ``kubernetes-validate``: unknown fields, wrong types and
missing required fields all fail. Then the serving-specific wiring is checked: probes, ports,
selectors, the server's flags (parsed with the server's own option parser) and its config files
(parsed with the server's own text-proto readers).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from serving.batching.params import parse_batching_parameters
from serving.metadata.config import PASSWORD_ENV, parse_connection
from serving.monitoring.config import parse_monitoring_config
from serving.options import IGNORED_FLAGS, build_parser, parse_options

K8S_ROOT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
SERVING_IMAGE = "tfx-serving-suite/serving"
COMPONENTS_IMAGE = "tfx-serving-suite/components"
NAMESPACE = "tfx-serving"
# The oldest Kubernetes the manifests are meant for (the preStop `sleep` action is on by
# default from 1.30); they are also checked against the newest schema kubernetes-validate has.
MIN_KUBERNETES = "1.30.0"
VOLUME_OVERLAYS = ("overlays/cpu", "overlays/gpu", "overlays/metadata")
# Models in a bucket instead of the ReadWriteMany volume (components/bucket-store).
BUCKET_OVERLAYS = ("overlays/gcs", "overlays/s3", "overlays/minio")
SERVING_OVERLAYS = VOLUME_OVERLAYS + BUCKET_OVERLAYS
GRPC_PORT, REST_PORT = 8500, 8501
METRICS_PATH = "/monitoring/prometheus/metrics"
# Stand-ins for the Secret the metadata overlay reads; a key missing here is a typo there.
SECRETS = {
    "tfx-serving-mlmd": {
        "host": "mlmd-mysql.example.svc",
        "port": "3306",
        "database": "mlmd",
        "user": "serving",
        "password": "s3cret",
    },
    "tfx-serving-s3": {
        "endpoint": "minio.minio.svc:9000",
        "use_https": "0",
        "access_key_id": "serving",
        "secret_access_key": "s3cret",
    },
}
# Kubernetes resource quantities (k8s.io/apimachinery/pkg/api/resource); the JSON schema only
# says "string or number".
_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_DURATION = r"^(\d+(ms|s|m|h))+$"

# The ServiceMonitor kind is a CRD of the Prometheus Operator, so it is not in the core schema:
# this is the subset of its monitoring.coreos.com/v1 schema that the manifests may use, closed
# (additionalProperties false) so that a misspelt or new field fails here and gets reviewed.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "matchExpressions": {"type": "array"},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


# --- rendering -------------------------------------------------------------------------------


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl:
        return kubectl
    advice = (
        "kubectl (with its built-in kustomize) is needed to render deploy/k8s: install it, e.g. "
        "'apt-get install kubectl' from Kubernetes' or Google Cloud's apt repository, or put "
        "the binary from https://kubernetes.io/docs/tasks/tools/ on PATH. No cluster is needed."
    )
    if os.environ.get("CI"):
        pytest.fail(f"kubectl not found on PATH in CI. {advice}")
    pytest.skip(f"kubectl not found on PATH. {advice}")


@cache
def _render_cached(directory: str) -> tuple[str, str]:
    # KUBECONFIG points nowhere: `kubectl kustomize` is client-side, and this makes sure of it.
    env = {**os.environ, "KUBECONFIG": os.devnull}
    result = subprocess.run(
        [_kubectl(), "kustomize", directory],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return result.stdout if result.returncode == 0 else "", result.stderr


def render(directory: Path | str) -> list[dict]:
    stdout, stderr = _render_cached(str(directory))
    if not stdout:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{stderr}")
    return [doc for doc in yaml.safe_load_all(stdout) if doc]


def render_extra(tmp_path: Path, kustomization: dict) -> list[dict]:
    """Renders a throwaway kustomization built on top of the repository's directories."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(tmp_path)


def relative(tmp_path: Path, name: str) -> str:
    # kustomize refuses absolute paths to other kustomizations.
    return os.path.relpath(K8S_ROOT / name, tmp_path)


def kustomization_dirs() -> list[str]:
    """Every renderable kustomization (Components render only as part of one)."""
    found = []
    for path in sorted(K8S_ROOT.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind") != "Component":
            found.append(path.parent.relative_to(K8S_ROOT).as_posix())
    return found


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment", "tfx-serving")["spec"]["template"]["spec"]


def server_container(objects: list[dict]) -> dict:
    containers = pod_spec(objects)["containers"]
    return next(c for c in containers if c["name"] == "model-server")


def containers_of(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    spec = spec.get("template", {}).get("spec", spec)
    return spec.get("containers", []) + spec.get("initContainers", [])


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are used: {selector}"
    return selector["matchLabels"].items() <= labels.items()


# --- schema validation -----------------------------------------------------------------------


def _quantity_errors(value: object, where: str = "") -> list[str]:
    errors = []
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{where}.{key}" if where else key
            if key in ("requests", "limits") and where.endswith("resources"):
                for name, quantity in (child or {}).items():
                    if isinstance(quantity, bool) or not (
                        isinstance(quantity, int | float) or _QUANTITY.match(str(quantity))
                    ):
                        errors.append(f"{path}.{name}: {quantity!r} is not a quantity")
            else:
                errors.extend(_quantity_errors(child, path))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            errors.extend(_quantity_errors(child, f"{where}[{index}]"))
    return errors


def schema_errors(obj: dict) -> list[str]:
    """Why ``obj`` is not a valid object of its kind; empty when it is."""
    from kubernetes_validate import utils

    kind = obj.get("kind", "?")
    if kind == "ServiceMonitor":
        validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
        return [
            f"{kind}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)
        ]
    errors = []
    for version in (MIN_KUBERNETES, utils.latest_version()):
        try:
            utils.validate(obj, version, strict=True)
        except utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{kind} (Kubernetes {e.version}): {path}: {e.message}")
        except utils.SchemaNotFoundError as e:
            errors.append(f"{e.message}: add a schema check for it to this test")
    return errors + _quantity_errors(obj)


@pytest.fixture(scope="module", autouse=True)
def _validator_installed():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        advice = "install the dev extra: .venv/bin/pip install -e '.[dev]' (kubernetes-validate)"
        if os.environ.get("CI"):
            pytest.fail(f"kubernetes-validate is missing in CI; {advice}")
        pytest.skip(f"kubernetes-validate is missing; {advice}")


def test_every_kustomization_is_checked():
    assert set(kustomization_dirs()) == {
        "base",
        *SERVING_OVERLAYS,
        "infra-validator-rbac",
        "model-store-admin",
    }


@pytest.mark.parametrize("directory", kustomization_dirs())
def test_renders_and_validates_strictly(directory):
    objects = render(K8S_ROOT / directory)
    assert objects
    errors = [error for obj in objects for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def _mutations():
    def container(d):
        return d["spec"]["template"]["spec"]["containers"][0]

    return {
        "misspelt field": lambda d: container(d)["readinessProbe"]["httpGet"].update(paht="/x"),
        "misspelt top-level field": lambda d: d["spec"].update(replica=2),
        "wrong type": lambda d: d["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds="60s"
        ),
        "missing required field": lambda d: container(d).pop("name"),
        "bad quantity": lambda d: container(d)["resources"]["limits"].update(memory="4 GB"),
    }


@pytest.mark.parametrize("mutation", sorted(_mutations()))
def test_validator_rejects_broken_deployment(mutation):
    deployment = one(render(K8S_ROOT / "overlays/cpu"), "Deployment")
    assert not schema_errors(deployment)
    broken = copy.deepcopy(deployment)
    _mutations()[mutation](broken)
    assert schema_errors(broken)


def test_validator_rejects_broken_service_monitor():
    monitor = one(render(K8S_ROOT / "overlays/cpu"), "ServiceMonitor")
    assert not schema_errors(monitor)
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["pathh"] = broken["spec"]["endpoints"][0].pop("path")
    assert schema_errors(broken)
    broken = copy.deepcopy(monitor)
    del broken["spec"]["selector"]
    assert schema_errors(broken)


# --- the server's command line and config files ---------------------------------------------


def _env(container: dict) -> dict[str, str]:
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] in SECRETS, f"{var['name']} reads unknown Secret {ref['name']}"
        assert ref["key"] in SECRETS[ref["name"]], f"{var['name']}: no key {ref['key']}"
        env[var["name"]] = SECRETS[ref["name"]][ref["key"]]
    return env


def _expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of command and args; $$ escapes a dollar."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", substitute, text)


def server_command_line(objects: list[dict]) -> tuple[list[str], dict[str, str]]:
    container = server_container(objects)
    assert "command" not in container, "the image's entrypoint starts tfx-model-server"
    env = _env(container)
    args = [_expand(arg, env) for arg in container["args"]]
    unresolved = [arg for arg in args if "$(" in arg]
    assert not unresolved, f"$(VAR) with no such env var: {unresolved}"
    return args, env


def server_options(objects: list[dict]):
    args, env = server_command_line(objects)
    return parse_options(args, environ=env)[0]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_server_flags_are_real_options(overlay):
    args, env = server_command_line(render(K8S_ROOT / overlay))
    assert all(re.match(r"^--[a-z_]+=", arg) for arg in args), f"use --flag=value: {args}"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            _, unknown = build_parser().parse_known_args(args)
        except SystemExit:
            pytest.fail(f"tfx-model-server rejects {args}: {stderr.getvalue()}")
    assert not unknown, f"not tfx-model-server options: {unknown}"
    given = {arg[2:].split("=", 1)[0] for arg in args}
    assert not given & set(IGNORED_FLAGS), "flags that tfx-model-server ignores do nothing"
    # The whole command line as the server will see it, env included.
    options, ignored = parse_options(args, environ=env)
    assert not ignored
    assert (options.port, options.rest_api_port) == (GRPC_PORT, REST_PORT)
    assert options.model_base_path == f"{env['MODEL_BASE_PATH']}/{options.model_name}"
    assert options.enable_batching
    assert options.model_name == env["MODEL_NAME"]


def test_a_misspelt_flag_is_caught():
    objects = copy.deepcopy(render(K8S_ROOT / "overlays/cpu"))
    server_container(objects)["args"].append("--enable_batchng=true")
    args, _ = server_command_line(objects)
    _, unknown = build_parser().parse_known_args(args)
    assert unknown == ["--enable_batchng=true"]


def _mounted_file(objects: list[dict], path: str) -> str:
    """The content of ``path`` in the server container, if it comes from a rendered ConfigMap."""
    spec = pod_spec(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in server_container(objects)["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix) and "configMap" in volumes[mount["name"]]:
            config_map = one(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
            key = path[len(prefix) :]
            assert key in config_map["data"], f"{path}: ConfigMap has no key {key}"
            return config_map["data"][key]
    raise AssertionError(f"{path} is not in a mounted ConfigMap")


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_config_files_are_mounted_and_parse(overlay):
    objects = render(K8S_ROOT / overlay)
    options = server_options(objects)
    monitoring = parse_monitoring_config(
        _mounted_file(objects, options.monitoring_config_file), "monitoring.config"
    )
    assert monitoring.enable
    assert monitoring.path == METRICS_PATH
    batching = parse_batching_parameters(
        _mounted_file(objects, options.batching_parameters_file), "batching_parameters.pbtxt"
    )
    assert (batching.max_batch_size, batching.batch_timeout_micros) == (64, 1000)
    assert (batching.num_batch_threads, batching.max_enqueued_batches) == (2, 100)


# --- the Deployment and what points at it ---------------------------------------------------


def _port_number(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_probes_lifecycle_and_resources(overlay):
    objects = render(K8S_ROOT / overlay)
    spec, container = pod_spec(objects), server_container(objects)
    probes = {name: container[name] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in probes.values():
        assert _port_number(container, probe["httpGet"]["port"]) == REST_PORT
    # The startup probe must outlast a slow first model load before liveness can kill it.
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300

    # preStop sleep, then up to 30 s for in-flight requests, then unloading.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + 30 + 10

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_runs_non_root_with_read_only_root(overlay):
    objects = render(K8S_ROOT / overlay)
    spec, container = pod_spec(objects), server_container(objects)
    assert spec["automountServiceAccountToken"] is False
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (10001, 10001)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # With a read-only root, anything the server writes must be on a writable volume.
    options = server_options(objects)
    for path in (options.metadata_spool_dir, options.prediction_log_dir, options.model_cache_dir):
        if path:
            mount = mounts.get(path)
            assert mount and not mount.get("readOnly"), f"{path} is not a writable volume"


@pytest.mark.parametrize("overlay", VOLUME_OVERLAYS)
def test_model_store_is_a_shared_read_only_volume(overlay):
    objects = render(K8S_ROOT / overlay)
    spec, container = pod_spec(objects), server_container(objects)
    env = _env(container)
    assert env["MODEL_BASE_PATH"] == "/models"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    pvc = one(objects, "PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"]


# The identity each bucket overlay gives its pods: a ServiceAccount annotation, or keys.
_BUCKET_IDENTITY = {
    "overlays/gcs": ("gs://", "iam.gke.io/gcp-service-account", set()),
    "overlays/s3": ("s3://", "eks.amazonaws.com/role-arn", {"AWS_REGION"}),
    "overlays/minio": (
        "s3://",
        None,
        {"S3_ENDPOINT", "S3_USE_HTTPS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    ),
}


@pytest.mark.parametrize("overlay", BUCKET_OVERLAYS)
def test_bucket_overlays_serve_from_a_bucket_with_credentials_and_a_cache(overlay):
    objects = render(K8S_ROOT / overlay)
    spec, container = pod_spec(objects), server_container(objects)
    scheme, annotation, env_names = _BUCKET_IDENTITY[overlay]
    options = server_options(objects)
    assert options.model_base_path.startswith(scheme), options.model_base_path
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/models" not in mounts
    cache = mounts[options.model_cache_dir]
    volume = next(v for v in spec["volumes"] if v["name"] == cache["name"])
    assert volume["emptyDir"]["sizeLimit"]
    assert {v["name"] for v in spec["volumes"]} == {m["name"] for m in mounts.values()}
    account = one(objects, "ServiceAccount", spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    if annotation:
        assert account["metadata"]["annotations"][annotation]
    assert env_names <= set(_env(container))


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_service_hpa_pdb_and_monitor_match_the_pods(overlay):
    objects = render(K8S_ROOT / overlay)
    deployment = one(objects, "Deployment", "tfx-serving")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"], pod_labels)
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    container = server_container(objects)

    service = one(objects, "Service", "tfx-serving")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {name: p["port"] for name, p in ports.items()} == {
        "grpc": GRPC_PORT,
        "http": REST_PORT,
    }
    for name, port in ports.items():
        assert _port_number(container, port["targetPort"]) == port["port"], name

    hpa = one(objects, "HorizontalPodAutoscaler", "tfx-serving")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] >= 2
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"

    pdb = one(objects, "PodDisruptionBudget", "tfx-serving")
    assert pdb["apiVersion"] == "policy/v1"
    assert selects(pdb["spec"]["selector"], pod_labels)
    # The budget must leave pods to evict: fewer than the HPA's minimum must stay up.
    assert pdb["spec"]["maxUnavailable"] >= 1

    monitor = one(objects, "ServiceMonitor", "tfx-serving")
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == METRICS_PATH

    for obj in objects:
        assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_gpu_overlay():
    objects = render(K8S_ROOT / "overlays/gpu")
    spec, container = pod_spec(objects), server_container(objects)
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert container["image"] == f"{SERVING_IMAGE}:latest-gpu"
    assert spec["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    cpu = server_container(render(K8S_ROOT / "overlays/cpu"))
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert cpu["image"] == f"{SERVING_IMAGE}:latest"


def test_metadata_overlay_reads_the_connection_from_the_secret():
    objects = render(K8S_ROOT / "overlays/metadata")
    container = server_container(objects)
    assert container["image"] == f"{SERVING_IMAGE}:latest-full"  # the image with the worker
    password = next(v for v in container["env"] if v["name"] == PASSWORD_ENV)
    assert password["valueFrom"]["secretKeyRef"] == {"name": "tfx-serving-mlmd", "key": "password"}
    args, env = server_command_line(objects)
    assert not any(SECRETS["tfx-serving-mlmd"]["password"] in arg for arg in args)
    options, _ = parse_options(args, environ=env)
    assert options.metadata_spool_dir
    spec = parse_connection(options.metadata_connection, environ=env)
    secret = SECRETS["tfx-serving-mlmd"]
    assert (spec.kind, spec.host, spec.port, spec.database, spec.user) == (
        "mysql",
        secret["host"],
        int(secret["port"]),
        secret["database"],
        secret["user"],
    )
    assert spec.password == secret["password"]
    # Only the metadata overlay reports to MLMD.
    cpu_args, _ = server_command_line(render(K8S_ROOT / "overlays/cpu"))
    assert not any(arg.startswith("--metadata_connection") for arg in cpu_args)


def test_metadata_component_composes_with_the_gpu_overlay(tmp_path):
    objects = render_extra(
        tmp_path,
        {
            "resources": [relative(tmp_path, "overlays/gpu")],
            "components": [relative(tmp_path, "components/metadata")],
        },
    )
    container = server_container(objects)
    assert "nvidia.com/gpu" in container["resources"]["limits"]
    args, env = server_command_line(objects)
    options, _ = parse_options(args, environ=env)
    assert options.metadata_connection and options.enable_batching


@pytest.mark.parametrize(
    ("directory", "image"),
    [
        ("overlays/cpu", SERVING_IMAGE),
        ("overlays/gpu", SERVING_IMAGE),
        ("overlays/metadata", SERVING_IMAGE),
        ("model-store-admin", COMPONENTS_IMAGE),
    ],
)
def test_images_can_be_retargeted(tmp_path, directory, image):
    original = render(K8S_ROOT / directory)
    tags = {c["image"].rsplit(":", 1)[1] for o in original for c in containers_of(o)}
    assert tags, "no containers"
    objects = render_extra(
        tmp_path,
        {
            "resources": [relative(tmp_path, directory)],
            "images": [{"name": image, "newName": "registry.example.com/ml/app"}],
        },
    )
    images = {c["image"] for o in objects for c in containers_of(o)}
    # Retargeting keeps each overlay's tag (latest, latest-gpu).
    assert images == {f"registry.example.com/ml/app:{tag}" for tag in tags}


@pytest.mark.parametrize("directory", kustomization_dirs())
def test_only_project_images(directory):
    for obj in render(K8S_ROOT / directory):
        for container in containers_of(obj):
            name = container["image"].rsplit(":", 1)[0]
            assert name in (SERVING_IMAGE, COMPONENTS_IMAGE), container["image"]


def test_model_store_admin_writes_the_shared_claim():
    admin = render(K8S_ROOT / "model-store-admin")
    pod = one(admin, "Pod")
    [volume] = pod["spec"]["volumes"]
    serving = render(K8S_ROOT / "overlays/cpu")
    pvc = one(serving, "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert not volume["persistentVolumeClaim"].get("readOnly")
    [mount] = pod["spec"]["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/models" and not mount.get("readOnly")
    # Files it writes must be readable by the servers' user.
    assert (
        pod["spec"]["securityContext"]["runAsUser"]
        == pod_spec(serving)["securityContext"]["runAsUser"]
    )


def test_infra_validator_rbac():
    objects = render(K8S_ROOT / "infra-validator-rbac")
    role = one(objects, "Role", "tfx-infra-validator")
    rules = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    # What KubernetesRunner calls (create/read/delete the pod, read its log), list/watch for
    # tooling; nothing beyond.
    assert rules == {
        ("", "pods"): {"create", "get", "list", "watch", "delete"},
        ("", "pods/log"): {"get"},
    }
    binding = one(objects, "RoleBinding", "tfx-infra-validator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    for subject in binding["subjects"]:
        assert subject["kind"] == "ServiceAccount"
        assert subject["name"] in accounts
    # The model server pods' own account gets no token and no role.
    assert accounts["tfx-infraval-modelserver"]["automountServiceAccountToken"] is False
    bound = {s["name"] for s in binding["subjects"]}
    assert "tfx-infraval-modelserver" not in bound
    # Namespaced, and the namespace is chosen at apply time (-n).
    assert all("namespace" not in o["metadata"] for o in objects)
