"""A fake Kubernetes API server (HTTPS on loopback) with a fake kubelet, for runner tests.

No cluster exists in this project's CI, so this is the one stand-in the tests use: the real
``kubernetes`` client (in-cluster config: service-account token, CA, namespace files) talks
HTTP to it and its own serialisation is exercised. It implements only what the Kubernetes
runner calls: create/read/delete a pod and read a container's log, with Kubernetes-style
``Status`` errors.

Each created pod either follows a scripted list of ``status`` objects (image pull errors,
unschedulable, ...), or is *run* by the fake kubelet: its containers' commands execute as
local processes, init containers first. The kubelet emulates what a node provides and nothing
more: volumes (``persistentVolumeClaim`` = a host directory per claim name, ``emptyDir``) are
symlinked at their ``mountPath`` (plus ``subPath``) under a per-container root directory, and
absolute paths in ``env``/``args`` that fall under a mount are resolved into that root; the
image's ``tfx-model-server`` command is this repo's ``python -m serving``; the pod IP is a
distinct loopback address (127.0.0.x) and the server binds it, as a pod binds its own IP; pod
readiness is the container's TCP readiness probe, checked on every read.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import random
import re
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.support.certs import make_pki
from tests.support.server_process import REPO_ROOT

_POD_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")
# The serving image's commands, as this repo provides them.
_IMAGE_COMMANDS = {
    "tfx-model-server": [sys.executable, "-m", "serving"],
    "python": [sys.executable],
}
TOKEN = "fake-service-account-token"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting_status(reason: str, message: str = "", container: str = "model-server") -> dict:
    """A Pending pod whose container waits (ContainerCreating, ImagePullBackOff, ...)."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [
            {
                "name": container,
                "image": "",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }


def unschedulable_status(message: str) -> dict:
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ],
    }


def exited_status(exit_code: int, reason: str = "Error") -> dict:
    return {
        "phase": "Failed",
        "podIP": "127.0.0.1",
        "containerStatuses": [
            {
                "name": "model-server",
                "image": "",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "reason": reason}},
            }
        ],
    }


class _Container:
    """A container the kubelet runs as a local process."""

    def __init__(self, spec: dict, process: subprocess.Popen, log_path: Path) -> None:
        self.spec = spec
        self.process = process
        self.log_path = log_path

    def state(self) -> dict:
        code = self.process.poll()
        if code is None:
            return {"running": {"startedAt": _now()}}
        return {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}


class _Pod:
    """``script``: statuses to show on reads; ``run``: the kubelet runs it; neither: static."""

    def __init__(
        self, obj: dict, script: list[dict] | None = None, logs: dict[str, str] | None = None
    ) -> None:
        self.obj = obj
        self.script = script
        self.scripted_logs = logs or {}
        self.run = False
        self.init_containers: list[_Container] = []
        self.containers: list[_Container] = []
        self.init_failed = False
        self.deleted_reads_left: int | None = None


class FakeKubeApi:
    """``with FakeKubeApi(tmp_path) as api: api.environ(...)``; see the module docstring."""

    def __init__(self, workdir: Path, namespace: str = "kubeflow") -> None:
        self.workdir = workdir
        self.namespace = namespace
        self.claims: dict[str, str] = {}
        self.created: list[dict] = []  # request bodies exactly as the client sent them
        self.requests: list[tuple[str, str]] = []
        self.delete_failures = 0  # next N DELETEs answer 500
        self.forbid: set[str] = set()  # verbs answered 403 ("create", "get", "delete")
        self.linger_reads = 1  # GETs that still see a deleted pod (deletionTimestamp set)
        self._scripts: list[tuple[list[dict], dict[str, str]]] = []
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.RLock()
        self._pki = make_pki()
        self._server: ThreadingHTTPServer | None = None

    # --- test-facing API -------------------------------------------------------------
    def add_pod(self, obj: dict) -> None:
        """A pre-existing pod, e.g. the executor's own."""
        with self._lock:
            self._pods[obj["metadata"]["name"]] = _Pod(obj)

    def script_next_pod(self, statuses: list[dict], logs: dict[str, str] | None = None) -> None:
        """The next created pod shows these statuses on successive reads (last one sticks)
        and these container logs, instead of being run by the kubelet."""
        self._scripts.append(([*statuses], logs or {}))

    def pod_names(self) -> list[str]:
        with self._lock:
            return sorted(self._pods)

    def service_account_dir(self) -> str:
        """What Kubernetes mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
        sa_dir = self.workdir / "serviceaccount"
        sa_dir.mkdir(exist_ok=True)
        (sa_dir / "token").write_text(TOKEN)
        (sa_dir / "ca.crt").write_bytes(self._pki.ca.cert)
        (sa_dir / "namespace").write_text(self.namespace)
        return str(sa_dir)

    def environ(self, pod_name: str | None) -> dict[str, str]:
        """The env Kubernetes gives a pod's containers."""
        assert self._server is not None
        env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self._server.server_address[1]),
        }
        if pod_name:
            env["HOSTNAME"] = pod_name
        return env

    def __enter__(self) -> FakeKubeApi:
        cert_dir = Path(tempfile.mkdtemp(dir=self.workdir))
        (cert_dir / "server.crt").write_bytes(self._pki.server.cert)
        (cert_dir / "server.key").write_bytes(self._pki.server.key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_dir / "server.crt", cert_dir / "server.key")
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._handle(self, "GET")

            def do_POST(self) -> None:
                api._handle(self, "POST")

            def do_DELETE(self) -> None:
                api._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for pod in self._pods.values():
                self._kill(pod)

    # --- HTTP --------------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        self.requests.append((method, url.path))
        if request.headers.get("Authorization", "").lower() != f"bearer {TOKEN}":
            return self._reply(request, 401, _status(401, "Unauthorized", "bad token"))
        match = _POD_PATH.match(url.path)
        if not match or match.group(1) != self.namespace:
            return self._reply(request, 404, _status(404, "NotFound", f"no route {url.path}"))
        _, name, log = match.groups()
        verb = {"GET": "get", "POST": "create", "DELETE": "delete"}[method]
        if verb in self.forbid:
            message = f'pods is forbidden: cannot {verb} resource "pods" in "{self.namespace}"'
            return self._reply(request, 403, _status(403, "Forbidden", message))
        if method == "POST" and name is None:
            length = int(request.headers.get("Content-Length", 0))
            return self._reply(request, 201, self._create(json.loads(request.rfile.read(length))))
        with self._lock:
            pod = self._pods.get(name or "")
            if pod is None:
                return self._reply(
                    request, 404, _status(404, "NotFound", f'pods "{name}" not found')
                )
            if method == "GET" and log:
                container = parse_qs(url.query).get("container", ["model-server"])[0]
                return self._log(request, pod, container)
            if method == "GET":
                obj = self._read(pod)
                if obj is None:
                    return self._reply(
                        request, 404, _status(404, "NotFound", f'pods "{name}" not found')
                    )
                return self._reply(request, 200, obj)
            if self.delete_failures > 0:
                self.delete_failures -= 1
                return self._reply(request, 500, _status(500, "InternalError", "etcd timeout"))
            return self._reply(request, 200, self._delete(pod))

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, code: int, body: dict | str) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request.send_response(code)
        request.send_header(
            "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
        )
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    # --- pods --------------------------------------------------------------------------
    def _create(self, body: dict) -> dict:
        self.created.append(copy.deepcopy(body))
        meta = body.setdefault("metadata", {})
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        meta["name"] = meta.get("name") or meta["generateName"] + suffix
        meta.update(namespace=self.namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
        body["status"] = {"phase": "Pending"}
        pod = _Pod(body, *self._scripts.pop(0)) if self._scripts else _Pod(body)
        pod.run = pod.script is None
        with self._lock:
            self._pods[meta["name"]] = pod
        if pod.run:
            threading.Thread(target=self._run, args=(pod,), daemon=True).start()
        return copy.deepcopy(body)

    def _read(self, pod: _Pod) -> dict | None:
        """The pod as the API shows it now; None once a deleted pod is finally gone."""
        if pod.deleted_reads_left is not None:
            if pod.deleted_reads_left <= 0:
                del self._pods[pod.obj["metadata"]["name"]]
                return None
            pod.deleted_reads_left -= 1
        obj = copy.deepcopy(pod.obj)
        if pod.script is not None:
            obj["status"] = pod.script.pop(0) if len(pod.script) > 1 else pod.script[0]
        elif pod.run:
            obj["status"] = self._kubelet_status(pod)
        return obj

    def _delete(self, pod: _Pod) -> dict:
        pod.obj["metadata"]["deletionTimestamp"] = _now()
        pod.deleted_reads_left = self.linger_reads
        self._kill(pod)
        if self.linger_reads == 0:
            del self._pods[pod.obj["metadata"]["name"]]
        return copy.deepcopy(pod.obj)

    def _log(self, request: BaseHTTPRequestHandler, pod: _Pod, container: str) -> None:
        if container in pod.scripted_logs:
            return self._reply(request, 200, pod.scripted_logs[container])
        ran = {c.spec["name"]: c for c in pod.init_containers + pod.containers}
        if container not in ran:
            message = f'container "{container}" in pod is waiting to start: ContainerCreating'
            return self._reply(request, 400, _status(400, "BadRequest", message))
        return self._reply(request, 200, ran[container].log_path.read_text(errors="replace"))

    # --- kubelet -----------------------------------------------------------------------
    def _kubelet_status(self, pod: _Pod) -> dict:
        status = copy.deepcopy(pod.obj["status"])
        if "podIP" not in status:
            return status
        init = [{"name": c.spec["name"], "state": c.state()} for c in pod.init_containers]
        main = [
            {"name": c.spec["name"], "state": c.state(), "ready": False, "restartCount": 0}
            for c in pod.containers
        ]
        for entry in init + main:
            entry.update(image="", imageID="", ready=entry.get("ready", False), restartCount=0)
        status["initContainerStatuses"] = init or None
        status["containerStatuses"] = main or None
        exits = [c.process.poll() for c in pod.containers]
        if pod.init_failed or (exits and all(code not in (None, 0) for code in exits)):
            status["phase"] = "Failed"
        elif exits and all(code == 0 for code in exits):
            status["phase"] = "Succeeded"
        elif exits:
            status["phase"] = "Running"
        ready = bool(exits) and status["phase"] == "Running" and self._probe(pod)
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ]
        return status

    def _probe(self, pod: _Pod) -> bool:
        for container in pod.containers:
            probe = container.spec.get("readinessProbe", {}).get("tcpSocket")
            if probe:
                try:
                    socket.create_connection((pod.obj["status"]["podIP"], probe["port"]), 1).close()
                except OSError:
                    return False
        return True

    def _run(self, pod: _Pod) -> None:
        """Starts the pod's containers like a kubelet: init containers to completion first."""
        name = pod.obj["metadata"]["name"]
        pod_ip = self._free_pod_ip(pod.obj["spec"]["containers"])
        with self._lock:
            pod.obj["status"] = {"phase": "Pending", "podIP": pod_ip}
        for spec in pod.obj["spec"].get("initContainers") or []:
            container = self._start(pod, name, spec, pod_ip)
            with self._lock:
                pod.init_containers.append(container)
            if container.process.wait() != 0:
                with self._lock:
                    pod.init_failed = True
                return
        for spec in pod.obj["spec"]["containers"]:
            if pod.deleted_reads_left is not None:
                return
            container = self._start(pod, name, spec, pod_ip)
            with self._lock:
                pod.containers.append(container)

    def _start(self, pod: _Pod, pod_name: str, spec: dict, pod_ip: str) -> _Container:
        root = self.workdir / "pods" / pod_name / spec["name"]
        mounts = self._mount(pod, pod_name, spec, root)

        def resolve(value: str) -> str:
            """Container paths at, below or above a mount point live under ``root``."""
            if value.startswith("/") and any(
                _within(value, mount_path) or _within(mount_path, value) for mount_path in mounts
            ):
                return str(root) + value
            return value

        command = list(spec.get("command") or [])
        argv = [*_IMAGE_COMMANDS.get(command[0], command[:1])]
        if command[0] == "tfx-model-server":
            argv.append(f"--host={pod_ip}")  # binding the pod's own IP, as in its netns
        argv += [resolve(a) for a in command[1:] + (spec.get("args") or [])]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.update({e["name"]: resolve(e.get("value", "")) for e in spec.get("env") or []})
        log_path = root.parent / f"{spec['name']}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return _Container(spec, process, log_path)

    def _mount(self, pod: _Pod, pod_name: str, spec: dict, root: Path) -> list[str]:
        root.mkdir(parents=True, exist_ok=True)
        volumes = {v["name"]: v for v in pod.obj["spec"].get("volumes") or []}
        mount_paths = []
        for mount in spec.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                source = Path(self.claims[volume["persistentVolumeClaim"]["claimName"]])
            else:  # emptyDir: one directory per pod, shared by its containers
                source = self.workdir / "pods" / pod_name / "_volumes" / mount["name"]
                source.mkdir(parents=True, exist_ok=True)
            source = source / mount.get("subPath", "")
            target = root / mount["mountPath"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source, target_is_directory=True)
            mount_paths.append(mount["mountPath"])
        return mount_paths

    @staticmethod
    def _free_pod_ip(containers: list[dict]) -> str:
        ports = [p["containerPort"] for c in containers for p in c.get("ports") or []]
        for _ in range(50):
            ip = f"127.0.0.{random.randint(2, 254)}"
            with contextlib.ExitStack() as stack:
                try:
                    for port in ports:
                        sock = stack.enter_context(socket.socket())
                        sock.bind((ip, port))
                except OSError:
                    continue
                return ip
        raise RuntimeError(f"no loopback address has ports {ports} free for a fake pod")

    @staticmethod
    def _kill(pod: _Pod) -> None:
        for container in pod.init_containers + pod.containers:
            if container.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGTERM)
                try:
                    container.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(container.process.pid, signal.SIGKILL)
                    container.process.wait()


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
