"""Hot swap, half-written versions, failed loads, rollback, and shutdown on the real server."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time

import pytest

from tests.support.models import write_half_plus_two, write_slow_loop
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration


def _publish(source: str, base: str, version: int) -> None:
    """Copy then rename: the way a correct pusher publishes."""
    staging = os.path.join(base, f".incoming-{version}")
    shutil.copytree(source, staging)
    os.replace(staging, os.path.join(base, str(version)))


def _predict_x2(server: ServerProcess) -> tuple[int, float | str]:
    status, payload = server.json("POST", "/v1/models/m:predict", {"instances": [2.0]})
    return status, payload["predictions"][0] if status == 200 else payload["error"]


def _states(server: ServerProcess) -> dict[int, str]:
    status, payload = server.json("GET", "/v1/models/m")
    if status != 200:
        return {}
    return {int(v["version"]): v["state"] for v in payload["model_version_status"]}


@pytest.fixture
def models(tmp_path):
    """Versions of half_plus_two with different offsets, built outside the store."""
    built = {}
    for offset in (2.0, 10.0, 20.0):
        built[offset] = write_half_plus_two(str(tmp_path / "built" / str(offset)), b=offset)
    base = tmp_path / "store" / "m"
    base.mkdir(parents=True)
    return base, built


def test_swap_under_concurrent_load_drops_nothing(models):
    """Four clients on keep-alive connections while version 2 replaces version 1: no request
    fails, each connection moves from the old answer to the new one once and never back, and
    every request sent after version 1 reached END gets version 2 (TF Serving unloads a version
    only once the requests holding it are done, and new ones resolve to the new latest).

    Outcomes are tagged when their request is sent, not ordered by when a client thread records
    them: a thread that gets its last version-1 answer just before the END may be scheduled
    after other threads have finished requests that followed it."""
    base, built = models
    _publish(built[2.0], str(base), 1)
    with ServerProcess(["--model_name=m", f"--model_base_path={base}"]) as server:
        assert _predict_x2(server) == (200, 3.0)
        stop = threading.Event()
        ended = threading.Event()  # set once the status shows version 1 END
        # (client, sent after the END was seen, HTTP status, predictions or error), in the
        # order the clients recorded them.
        results: list[tuple[int, bool, int, object]] = []
        lock = threading.Lock()

        def client(index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
            body = json.dumps({"instances": [2.0]})
            while not stop.is_set():
                after_end = ended.is_set()
                try:
                    conn.request("POST", "/v1/models/m:predict", body)
                    response = conn.getresponse()
                    payload = json.loads(response.read())
                    outcome = (response.status, payload.get("predictions", payload))
                except OSError as exc:  # a dropped connection is a failed request too
                    outcome = (-1, repr(exc))
                    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
                with lock:
                    results.append((index, after_end, *outcome))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()

        def answered(after_end: bool) -> bool:
            """25 requests answered that were sent before (after) the END was seen."""
            with lock:
                return sum(1 for result in results if result[1] == after_end) >= 25

        server.wait_for(lambda: answered(False), interval=0.02)  # traffic before the swap
        with lock:
            before_swap = len(results)  # answered before version 2 existed
        _publish(built[10.0], str(base), 2)
        server.wait_for(lambda: _states(server) == {1: "END", 2: "AVAILABLE"}, timeout=60)
        ended.set()
        server.wait_for(lambda: answered(True), interval=0.02)  # and after it
        stop.set()
        for thread in threads:
            thread.join()

    failures = [r for r in results if r[2] != 200]
    assert not failures, failures[:5]
    answers = [r[3][0] for r in results]
    assert set(answers) == {3.0, 11.0}
    assert before_swap >= 25 and answers[:before_swap] == [3.0] * before_swap
    after_end = [r[3][0] for r in results if r[1]]
    assert len(after_end) >= 25 and after_end == [11.0] * len(after_end)
    for index in range(4):
        seen = [r[3][0] for r in results if r[0] == index]
        assert seen == sorted(seen), f"client {index} went back to version 1: {seen}"


def test_half_written_failed_and_rolled_back_versions(models, tmp_path):
    base, built = models
    _publish(built[2.0], str(base), 1)
    with ServerProcess(["--model_name=m", f"--model_base_path={base}"]) as server:
        assert _predict_x2(server) == (200, 3.0)

        # Version 2 arrives without its variable data: it must never be loaded.
        partial = base / "2"
        shutil.copytree(built[10.0], partial, ignore=shutil.ignore_patterns("variables.data-*"))
        refused = "version 2 is not loadable yet: variables/ has an index but no data shard"
        server.wait_for(lambda: refused in server.log())  # a poll has seen version 2
        assert _states(server) == {1: "AVAILABLE"}
        assert _predict_x2(server) == (200, 3.0)
        for name in os.listdir(os.path.join(built[10.0], "variables")):
            if name.startswith("variables.data"):
                shutil.copy(os.path.join(built[10.0], "variables", name), partial / "variables")
        server.wait_for(lambda: _states(server) == {1: "END", 2: "AVAILABLE"})
        assert _predict_x2(server) == (200, 11.0)

        # Version 3 is complete but corrupt: it fails, version 2 keeps serving.
        corrupt = tmp_path / "corrupt"
        shutil.copytree(built[20.0], corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"this is not a protobuf")
        _publish(str(corrupt), str(base), 3)
        server.wait_for(lambda: _states(server).get(3) == "END")
        _, payload = server.json("GET", "/v1/models/m/versions/3")
        error = payload["model_version_status"][0]["status"]
        assert error["error_code"] != "OK" and error["error_message"]
        assert _predict_x2(server) == (200, 11.0)
        assert "version 3 failed to load" in server.log()

        # Fixing the directory in place makes the server retry it.
        shutil.rmtree(base / "3")
        _publish(built[20.0], str(base), 3)
        server.wait_for(lambda: _states(server).get(3) == "AVAILABLE")
        server.wait_for(lambda: _predict_x2(server) == (200, 21.0))

        # Rollback: delete the newest version; the previous one comes back.
        shutil.rmtree(base / "3")
        server.wait_for(lambda: _predict_x2(server) == (200, 11.0))
        server.wait_for(lambda: _states(server).get(3) == "END")

        # Empty base path: everything is unloaded (TF Serving semantics).
        shutil.rmtree(base / "2")
        shutil.rmtree(base / "1")
        server.wait_for(lambda: _predict_x2(server)[0] == 404)


def test_missing_base_path_then_created(models):
    base, built = models
    missing = base.parent / "later"
    with ServerProcess(["--model_name=m", f"--model_base_path={missing}"]) as server:
        status, payload = server.json("POST", "/v1/models/m:predict", {"instances": [2.0]})
        assert status == 404
        assert payload["error"] == "Servable not found for request: Latest(m)"
        assert "Could not find base path" in server.log()
        missing.mkdir()
        _publish(built[2.0], str(missing), 5)
        server.wait_for(lambda: _predict_x2(server) == (200, 3.0))


def test_sigterm_finishes_in_flight_requests(tmp_path):
    write_slow_loop(str(tmp_path / "slow" / "1"))
    server = ServerProcess(["--model_name=slow", f"--model_base_path={tmp_path / 'slow'}"])
    server.start()
    try:
        started = time.monotonic()
        assert server.json("POST", "/v1/models/slow:predict", {"inputs": {"n": 200_000}})[0] == 200
        per_call = time.monotonic() - started
        n = int(200_000 * max(1.0, 1.5 / max(per_call, 1e-3)))  # about 1.5 s of work
        outcome: list = []
        thread = threading.Thread(
            target=lambda: outcome.append(
                server.json("POST", "/v1/models/slow:predict", {"inputs": {"n": n}})
            )
        )
        thread.start()
        time.sleep(0.3)
        code = server.stop(signal.SIGTERM)
        thread.join()
    finally:
        server.stop(signal.SIGKILL)
    assert code == 0
    assert outcome and outcome[0] == (200, {"outputs": n * (n - 1) // 2})
    assert "Server stopped" in server.log()
