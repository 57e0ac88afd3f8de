import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.protobuf import text_format

from serving.core.model_manager import ModelManager, RetryPolicy, State
from serving.core.version_policy import VersionPolicy
from serving.errors import Code, ServingError
from serving.storage.filesystem import FileInfo
from serving.storage.source import Discovery, VersionCandidate


class FakeServable:
    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = False


class Harness:
    """A manager whose loader can be blocked or made to fail per path."""

    def __init__(self, policy: VersionPolicy | None = None, on_state_change=None) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.failing: set[str] = set()
        self.closed: list[str] = []
        self.executor = ThreadPoolExecutor(4)
        self.manager = ModelManager(
            "m",
            policy or VersionPolicy(),
            self._load,
            self._close,
            self.executor,
            RetryPolicy(max_retries=5, interval_seconds=3600),
            on_state_change,
        )

    def _load(self, path: str) -> FakeServable:
        gate = self.gates.get(path)
        if gate is not None:
            assert gate.wait(10)
        if path in self.failing:
            raise ServingError(Code.INVALID_ARGUMENT, f"cannot load {path}")
        return FakeServable(path)

    def _close(self, servable: FakeServable) -> None:
        servable.closed = True
        self.closed.append(servable.path)

    def discover(self, *versions: int, tag: str = "", pending=(), changing=()) -> None:
        ready = {
            v: VersionCandidate(v, f"/m/{v}", (FileInfo(f"saved_model.pb{tag}", 1, 1),))
            for v in versions
        }
        self.manager.reconcile(
            Discovery(True, ready, set(changing), {v: "incomplete" for v in pending})
        )

    def wait(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, self.manager.statuses()
            time.sleep(0.01)

    def state(self, version: int) -> State | None:
        return {v: s for v, s, _ in self.manager.statuses()}.get(version)


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.executor.shutdown(wait=False, cancel_futures=True)


def test_loads_latest_and_serves_it(harness):
    harness.discover(1, 2)
    harness.wait(lambda: harness.manager.latest_version() == 2)
    assert harness.manager.wait_settled(0)
    assert harness.state(1) is None  # latest{1}: version 1 never loaded
    with harness.manager.handle(None) as record:
        assert record.version == 2 and record.servable.path == "/m/2"


def test_not_found_messages(harness):
    with pytest.raises(ServingError) as err, harness.manager.handle(None):
        pass
    assert err.value.code == Code.NOT_FOUND
    assert err.value.message == "Servable not found for request: Latest(m)"
    with pytest.raises(ServingError, match=r"Specific\(m, 7\)"), harness.manager.handle(7):
        pass


def test_old_version_serves_until_new_one_is_available(harness):
    harness.discover(1)
    harness.wait(lambda: harness.manager.latest_version() == 1)
    harness.gates["/m/2"] = threading.Event()
    harness.discover(1, 2)
    harness.wait(lambda: harness.state(2) == State.LOADING)
    with harness.manager.handle(None) as record:
        assert record.version == 1  # still served while 2 loads
    harness.gates["/m/2"].set()
    harness.wait(lambda: harness.state(1) == State.END)
    assert harness.manager.available_versions() == [2]
    assert harness.closed == ["/m/1"]


def test_state_observers_see_the_serving_map_after_the_change():
    """An observer that reads the serving map when told of a change (the model process's
    snapshot publisher, on its own thread) must never read the map of before: it would
    publish the old versions and hear of no further change."""
    seen: list[tuple[int, State, list[int]]] = []
    harness = Harness(
        on_state_change=lambda model, record: seen.append(
            (record.version, record.state, harness.manager.available_versions())
        )
    )
    try:
        harness.discover(1)
        harness.wait(lambda: harness.manager.latest_version() == 1)
        harness.discover(1, 2)
        harness.wait(lambda: harness.state(1) == State.END)
    finally:
        harness.executor.shutdown(wait=False, cancel_futures=True)
    assert seen == [
        (1, State.LOADING, []),
        (1, State.AVAILABLE, [1]),
        (2, State.LOADING, [1]),
        (2, State.AVAILABLE, [1, 2]),
        (1, State.UNLOADING, [2]),  # out of the map before anyone hears it is unloading
        (1, State.END, [2]),
    ]


def test_unload_waits_for_in_flight_requests(harness):
    harness.discover(1)
    harness.wait(lambda: harness.manager.latest_version() == 1)
    with harness.manager.handle(None) as pinned:
        harness.discover(2)
        harness.wait(lambda: harness.manager.latest_version() == 2)
        harness.wait(lambda: harness.state(1) == State.UNLOADING)
        harness.wait(lambda: pinned.closing)  # the unload thread has started ...
        with pinned.cond:  # ... and, holding no lock now, waits for our pin to go
            assert pinned.inflight == 1
        assert not pinned.servable.closed  # our request still holds it
    harness.wait(lambda: harness.state(1) == State.END)
    assert harness.closed == ["/m/1"]


def test_failed_load_keeps_previous_and_retries_when_directory_changes(harness):
    harness.discover(1)
    harness.wait(lambda: harness.manager.latest_version() == 1)
    harness.failing.add("/m/2")
    harness.discover(1, 2)
    harness.wait(lambda: harness.state(2) == State.END)
    _, _, error = next(s for s in harness.manager.statuses() if s[0] == 2)
    assert error.code == Code.INVALID_ARGUMENT and "cannot load /m/2" in error.message
    harness.discover(1, 2)  # same contents: not retried before the retry interval
    assert harness.manager.available_versions() == [1]
    assert harness.state(2) == State.END
    harness.failing.clear()
    harness.discover(1, 2, tag="-fixed")  # the directory changed: retried
    harness.wait(lambda: harness.manager.latest_version() == 2)
    harness.wait(lambda: harness.state(1) == State.END)


def test_rollback_by_deleting_newest_version(harness):
    harness.discover(1, 2)
    harness.wait(lambda: harness.manager.latest_version() == 2)
    harness.discover(1)
    harness.wait(lambda: harness.manager.available_versions() == [1])
    # Unpublished first, then closed on the unload thread: END follows UNLOADING shortly after.
    harness.wait(lambda: harness.state(2) == State.END)


def test_empty_base_path_unloads_but_missing_base_path_keeps(harness):
    harness.discover(1)
    harness.wait(lambda: harness.manager.latest_version() == 1)
    harness.manager.reconcile(Discovery(base_path_exists=False))
    assert harness.manager.available_versions() == [1]
    harness.discover(pending=[2])  # only a half-written version left: keep serving
    assert harness.manager.available_versions() == [1]
    harness.discover()
    harness.wait(lambda: harness.manager.available_versions() == [])


def test_first_discovery_of_changing_versions_is_not_settled(harness):
    harness.discover(changing=[1])
    assert not harness.manager.wait_settled(0)
    harness.discover(1)
    harness.wait(lambda: harness.manager.wait_settled(0))
    assert harness.manager.latest_version() == 1


def test_all_policy_and_specific_version_handles():
    h = Harness(policy=text_format.Parse("all {}", VersionPolicy()))
    try:
        h.discover(1, 2, 3)
        h.wait(lambda: h.manager.available_versions() == [1, 2, 3])
        with h.manager.handle(2) as record:
            assert record.version == 2
    finally:
        h.executor.shutdown(wait=False, cancel_futures=True)
