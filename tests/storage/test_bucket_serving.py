"""The real server polling gs:// and s3:// stores served by emulators on loopback ports."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from components import store_io
from components.bucket_store import BucketModelStore
from components.manifest import build_manifest
from tests.support.server_process import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.integration

_METRIC = re.compile(
    r'^(:tfx_serving:storage:\w+)\{model_name="(\w+)"(?:,operation="(\w+)")?\} (\S+)$'
)


@pytest.fixture
def monitoring(tmp_path) -> str:
    path = tmp_path / "monitoring.config"
    path.write_text("prometheus_config { enable: true }\n")
    return str(path)


def _server(base_uri: str, tmp_path, monitoring: str, *extra: str) -> ServerProcess:
    return ServerProcess(
        [
            "--model_name=m",
            f"--model_base_path={base_uri}",
            f"--model_cache_dir={tmp_path / 'cache'}",
            "--file_system_poll_wait_seconds=1",
            f"--monitoring_config_file={monitoring}",
            *extra,
        ]
    )


def _storage_metrics(server: ServerProcess) -> dict[tuple[str, str], float]:
    status, body = server.request("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    found = {}
    for line in body.decode().splitlines():
        match = _METRIC.match(line)
        if match:
            name, _model, operation, value = match.groups()
            found[(name.rsplit(":", 1)[1], operation or "")] = float(value)
    return found


def _states(server: ServerProcess) -> dict[int, str]:
    status, payload = server.json("GET", "/v1/models/m")
    if status != 200:
        return {}
    return {int(v["version"]): v["state"] for v in payload["model_version_status"]}


def _predict(server: ServerProcess, x: float = 1.0) -> float:
    status, payload = server.json("POST", "/v1/models/m:predict", {"instances": [x]})
    assert status == 200, payload
    return payload["predictions"][0]


def _publish(base_uri: str, source: str) -> int:
    return BucketModelStore(base_uri).publish(source, build_manifest(source)).version


class Hammer:
    """Clients sending predictions in a loop until stopped; every outcome is kept."""

    def __init__(self, server: ServerProcess, clients: int = 3) -> None:
        self._server = server
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.results: list[tuple[int, object]] = []
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        port = self._server.rest_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"instances": [1.0]})
        deadline = time.monotonic() + 240  # bounded even if stop() is never called
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("POST", "/v1/models/m:predict", body)
                response = conn.getresponse()
                payload = json.loads(response.read())
                outcome = (response.status, payload.get("predictions", payload))
            except OSError as exc:  # a dropped connection is a failed request too
                outcome = (-1, repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with self._lock:
                self.results.append(outcome)

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def failures(self) -> list[tuple[int, object]]:
        with self._lock:
            return [r for r in self.results if r[0] != 200]

    def answers(self) -> set[float]:
        with self._lock:
            return {r[1][0] for r in self.results if r[0] == 200}


def test_pushed_version_loads_from_the_bucket_and_hot_swaps_under_load(
    emulator, base_uri, half_plus_two_dirs, tmp_path, monitoring
):
    first = _publish(base_uri, half_plus_two_dirs[2.0])
    with _server(base_uri, tmp_path, monitoring) as server:
        server.wait_for(lambda: _states(server) == {first: "AVAILABLE"}, timeout=60)
        assert _predict(server) == 2.5
        # The version was copied into the cache dir and is served from there.
        (entry,) = (tmp_path / "cache" / "m").iterdir()
        assert entry.name.startswith(f"{first}-")

        # Idle polls: exactly one listing each, nothing else (no per-file stats or reads).
        before_log = len(emulator.request_lines())
        before = _storage_metrics(server)
        server.wait_for(
            lambda: _storage_metrics(server)[("polls", "")] >= before[("polls", "")] + 3
        )
        after = _storage_metrics(server)
        window = emulator.request_lines()[before_log:]
        polls = after[("polls", "")] - before[("polls", "")]
        assert after[("last_poll_requests", "")] == 1
        assert after[("requests", "list")] - before[("requests", "list")] == polls
        assert polls <= len(window) <= polls + 1  # + a listing in flight at the second read
        assert all(_is_listing(line, emulator.scheme) for line in window), window

        with Hammer(server) as hammer:
            server.wait_for(lambda: len(hammer.results) >= 20)
            second = _publish(base_uri, half_plus_two_dirs[3.0])
            server.wait_for(lambda: _states(server) == {first: "END", second: "AVAILABLE"})
            server.wait_for(lambda: 3.5 in hammer.answers())
        assert hammer.failures() == []
        assert hammer.answers() == {2.5, 3.5}
        assert _predict(server) == 3.5
        # The replaced version's cached copy stays (a rollback target); nothing else piles up.
        cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "m").iterdir())
        assert cached == [str(first), str(second)]


def _is_listing(line: str, scheme: str) -> bool:
    if scheme == "gs":
        return '"GET /storage/v1/b/models/o?' in line
    return '"GET /models?list-type=2' in line


_KILLED_PUSHER = """
import os, signal, sys
from components.bucket_store import BucketModelStore
from components.manifest import build_manifest
from serving.storage.bucket_layout import MARKER_FILENAME
base, source, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = BucketModelStore(base)
real_upload, real_put, uploaded = store._store.upload, store._store.put, []
def upload(local, key):  # the gate: SIGKILL once kill_after model files are up
    if len(uploaded) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    real_upload(local, key)
    uploaded.append(key)
def put(key, data, **kwargs):  # ... or just before the completion marker
    if key.endswith(MARKER_FILENAME):
        os.kill(os.getpid(), signal.SIGKILL)
    real_put(key, data, **kwargs)
store._store.upload, store._store.put = upload, put
store.publish(source, build_manifest(source))
"""


def _killed_push(base_uri: str, source: str, kill_after: int) -> int:
    """Runs a real pusher process that is SIGKILLed mid-push; returns its version number."""
    before = _version_names(base_uri)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_PUSHER, base_uri, source, str(kill_after)],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (killed,) = _version_names(base_uri) - before
    return killed


def _version_names(base_uri: str) -> set[int]:
    names = {o.key.split("/")[0] for o in store_io.list_objects(base_uri)}
    return {int(n) for n in names if n.isdigit()}


def test_a_killed_push_is_never_served(
    emulator, base_uri, half_plus_two_dirs, tmp_path, monitoring
):
    """Two pushers SIGKILLed: one after two model files, one after every model file was
    uploaded and verified, just before the completion marker (that one looks complete to a
    stock TF Serving). Neither is ever served; the next push is."""
    first = _publish(base_uri, half_plus_two_dirs[2.0])
    with _server(base_uri, tmp_path, monitoring) as server:
        server.wait_for(lambda: _states(server) == {first: "AVAILABLE"}, timeout=60)
        source = half_plus_two_dirs[4.0]
        midway = _killed_push(base_uri, source, kill_after=2)
        unmarked = _killed_push(base_uri, source, kill_after=10_000)
        objects = {o.key for o in store_io.list_objects(base_uri)}
        assert f"{midway}/saved_model.pb" not in objects
        assert f"{unmarked}/saved_model.pb" in objects
        assert first < midway < unmarked

        polls = _storage_metrics(server)[("polls", "")]
        with Hammer(server, clients=2) as hammer:
            server.wait_for(lambda: _storage_metrics(server)[("polls", "")] >= polls + 4)
        assert _states(server) == {first: "AVAILABLE"}
        assert hammer.failures() == [] and hammer.answers() == {2.5}
        for killed in (midway, unmarked):
            assert f"version {killed} is not loadable yet: push in progress" in server.log()

        # The next push abandons the stale claims and is served; no killed version is cached.
        third = (
            BucketModelStore(base_uri)
            .publish(
                half_plus_two_dirs[3.0],
                build_manifest(half_plus_two_dirs[3.0]),
                stale_incoming_seconds=0,
            )
            .version
        )
        assert third > unmarked
        assert _version_names(base_uri) == {first, third}
        server.wait_for(lambda: _states(server) == {first: "END", third: "AVAILABLE"})
        assert _predict(server) == 3.5
        cached = sorted(int(p.name.split("-")[0]) for p in (tmp_path / "cache" / "m").iterdir())
        assert cached == [first, third]


def test_store_outage_keeps_serving_and_recovers(
    emulator, base_uri, half_plus_two_dirs, tmp_path, monitoring
):
    first = _publish(base_uri, half_plus_two_dirs[2.0])
    with _server(base_uri, tmp_path, monitoring) as server:
        server.wait_for(lambda: _states(server) == {first: "AVAILABLE"}, timeout=60)
        emulator.stop()
        try:
            with Hammer(server, clients=2) as hammer:
                server.wait_for(
                    lambda: _storage_metrics(server).get(("poll_failures", ""), 0) >= 2, timeout=90
                )
            assert hammer.failures() == [] and hammer.answers() == {2.5}
            assert _states(server) == {first: "AVAILABLE"}
            assert "cannot list" in server.log()
        finally:
            emulator.start()
            emulator.create_bucket()  # moto comes back empty; fake-gcs-server keeps its data
        second = _publish(base_uri, half_plus_two_dirs[3.0])
        server.wait_for(lambda: _states(server).get(second) == "AVAILABLE", timeout=60)
        assert _predict(server) == 3.5
        assert "reachable again" in server.log()
        assert server.process.poll() is None


def test_config_file_with_both_stores_and_a_foreign_layout(emulators, half_plus_two_dirs, tmp_path):
    """A models config naming a gs:// and an s3:// base; the gs:// one written by a plain copy
    (no claim, no marker), as ``gsutil cp -r`` or the stock TFX Pusher would."""
    gcs_base = emulators["gs"].uri(f"foreign-{time.time_ns()}", "g")
    s3_base = emulators["s3"].uri(f"pushed-{time.time_ns()}", "s")
    store_io.upload_tree(half_plus_two_dirs[4.0], f"{gcs_base}/3")
    pushed = _publish(s3_base, half_plus_two_dirs[2.0])
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "g" base_path: "{gcs_base}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "s" base_path: "{s3_base}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    args = [
        f"--model_config_file={config}",
        f"--model_cache_dir={tmp_path / 'cache'}",
        "--file_system_poll_wait_seconds=1",
    ]
    with ServerProcess(args) as server:
        for model, version, expected in (("g", 3, 4.5), ("s", pushed, 2.5)):
            status, payload = server.json("GET", f"/v1/models/{model}")
            assert status == 200, payload
            assert [(int(v["version"]), v["state"]) for v in payload["model_version_status"]] == [
                (version, "AVAILABLE")
            ]
            status, payload = server.json(
                "POST", f"/v1/models/{model}:predict", {"instances": [1.0]}
            )
            assert (status, payload.get("predictions")) == (200, [expected])
