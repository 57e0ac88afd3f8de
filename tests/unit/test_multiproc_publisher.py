"""The model process publishes its snapshot when the core changes, not on a timer
(``serving.multiproc.publisher``).

First the publisher alone, with changes made from another thread while the test holds the
event loop, so which changes share a rebuild is decided by the test, not by timing. Then the
real host (``DataplaneHost``) over a real ``ServerCore`` (its loader a fake: the snapshot reads
only the versions' signatures) and a real front end's ``RemoteDataplane`` on the UNIX socket:
every kind of change reaches the front end as exactly one push, and nothing is rebuilt while
nothing changes. The server's file poller is not started: the test's own polls are the only
loads, and the host has no timer, so a push can only come from the change itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from google.protobuf import text_format

from serving import protos
from serving.core.model_manager import State
from serving.core.model_spec import ModelSpec
from serving.core.server_core import ServerCore
from serving.core.traffic_split import TrafficSplit
from serving.multiproc import host as host_module
from serving.multiproc import protocol as op
from serving.multiproc.host import DataplaneHost
from serving.multiproc.publisher import SnapshotPublisher
from serving.multiproc.remote import RemoteDataplane


async def _iteration_end() -> None:
    """Returns once the callbacks already scheduled on the loop (a rebuild) have run."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class Recorder:
    """A build function over a mutable state, and a push that records what it was given."""

    def __init__(self) -> None:
        self.state = {"version": 1}
        self.builds = 0
        self.pushes: list[dict] = []
        self.fail_next = False

    def build(self) -> dict:
        self.builds += 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the core moved under the build")
        return dict(self.state)

    def push(self, snapshot: dict) -> None:
        self.pushes.append(snapshot)


def _changes_from_another_thread(publisher: SnapshotPublisher, count: int) -> None:
    """``count`` changes on another thread while this one (the loop's) waits for them all."""
    thread = threading.Thread(target=lambda: [publisher.changed() for _ in range(count)])
    thread.start()
    thread.join()


def test_a_burst_of_changes_is_one_rebuild_and_an_unchanged_snapshot_is_not_pushed():
    recorder = Recorder()

    async def main():
        publisher = SnapshotPublisher(recorder.build, recorder.push)
        publisher.start()
        assert (recorder.builds, publisher.snapshot) == (1, {"version": 1})
        recorder.state["version"] = 2
        _changes_from_another_thread(publisher, 100)
        await _iteration_end()
        assert recorder.builds == 2  # one rebuild for the hundred changes
        assert recorder.pushes == [{"version": 2}]
        _changes_from_another_thread(publisher, 3)  # nothing the snapshot shows changed
        await _iteration_end()
        assert recorder.builds == 3
        assert recorder.pushes == [{"version": 2}]  # rebuilt, compared, not pushed again
        publisher.stop()

    asyncio.run(main())


def test_a_failed_build_is_logged_and_the_next_change_publishes(caplog):
    recorder = Recorder()

    async def main():
        publisher = SnapshotPublisher(recorder.build, recorder.push)
        publisher.start()
        recorder.state["version"] = 2
        recorder.fail_next = True
        with caplog.at_level(logging.ERROR, logger="serving.multiproc.publisher"):
            _changes_from_another_thread(publisher, 1)
            await _iteration_end()
        assert "Building the model snapshot failed" in caplog.text
        assert recorder.pushes == []
        _changes_from_another_thread(publisher, 1)
        await _iteration_end()
        assert recorder.pushes == [{"version": 2}]
        publisher.stop()

    asyncio.run(main())


def test_nothing_is_rebuilt_after_stop_and_a_change_after_the_loop_closed_is_harmless():
    stopped, left_running = Recorder(), Recorder()
    publishers: list[SnapshotPublisher] = []

    async def main():
        publisher = SnapshotPublisher(stopped.build, stopped.push)
        publisher.start()
        stopped.state["version"] = 2
        _changes_from_another_thread(publisher, 1)  # scheduled ...
        publisher.stop()  # ... and dropped
        _changes_from_another_thread(publisher, 1)
        await _iteration_end()
        other = SnapshotPublisher(left_running.build, left_running.push)
        other.start()  # never stopped: its loop closes under it
        publishers.append(other)

    asyncio.run(main())
    assert (stopped.builds, stopped.pushes) == (1, [])
    publishers[0].changed()  # e.g. versions unloaded at shutdown, after the loop closed
    assert (left_running.builds, left_running.pushes) == (1, [])


# ---------------------------------------------------------------------- host, core, front end
def _signature(dtype: int) -> protos.SignatureDef:
    signature = protos.SignatureDef()
    signature.inputs["x"].name = "x:0"
    signature.inputs["x"].dtype = dtype
    return signature


SIGNATURES = {1: _signature(protos.DT_FLOAT), 2: _signature(protos.DT_DOUBLE)}


def _load(path: str) -> SimpleNamespace:
    """A loaded version as the snapshot reads it: its signatures (float32 input for version 1,
    float64 for version 2, so the front end's guess shows which one it saw)."""
    version = int(Path(path).name)
    return SimpleNamespace(
        path=path, signatures={"serving_default": SIGNATURES[version]}, close=lambda: None
    )


def _write_version(base: Path, version: int) -> None:
    (base / str(version)).mkdir(parents=True)
    (base / str(version) / "saved_model.pb").write_bytes(b"\0")


def _config(base: Path, labels: dict[str, int], waiting_model: Path | None = None):
    text = (
        f"config {{ name: 'm' base_path: '{base}' model_platform: 'tensorflow' "
        "model_version_policy { all {} } "
        + "".join(f"version_labels {{ key: '{k}' value: {v} }} " for k, v in labels.items())
        + "} "
    )
    if waiting_model is not None:
        text += f"config {{ name: 'n' base_path: '{waiting_model}' model_platform: 'tensorflow' }}"
    return text_format.Parse(f"model_config_list {{ {text} }}", protos.ModelServerConfig())


def _poll_until(core: ServerCore, versions: list[int]) -> None:
    """Polls twice (a version is offered once two polls see it unchanged), then waits until
    the model's AVAILABLE versions are ``versions`` and no load or unload is left, woken by
    the core's own change events (30 s bounds a failure)."""
    manager = core.manager("m")
    # An event, not a condition: the listener runs under the manager's lock, and the check
    # below takes that lock, so the check must not hold a lock the listener needs.
    changed = threading.Event()

    def done() -> bool:
        states = {state for _, state, _ in manager.statuses()}
        return manager.available_versions() == versions and states <= {State.AVAILABLE, State.END}

    core.add_change_listener(changed.set)
    try:
        core.poll_once()
        core.poll_once()
        while True:
            changed.clear()
            if done():
                return
            assert changed.wait(30), manager.statuses()
    finally:
        core.remove_change_listener(changed.set)


@pytest.fixture
def core(tmp_path):
    _write_version(tmp_path / "m", 1)
    core = ServerCore(loader=_load, poll_wait_seconds=0)  # not started: the test polls
    core.apply_config(_config(tmp_path / "m", {}))
    _poll_until(core, [1])
    yield core
    core.stop()


@pytest.fixture
def socket_path():
    with tempfile.TemporaryDirectory(prefix="publisher-") as directory:  # short: AF_UNIX paths
        yield str(Path(directory) / "model.sock")


def test_front_ends_get_each_change_of_the_core_once_and_nothing_while_idle(
    core, socket_path, tmp_path, monkeypatch
):
    base = tmp_path / "m"
    changes: list[int] = []
    core.add_change_listener(lambda: changes.append(1))
    builds: list[int] = []
    build_snapshot = host_module.build_snapshot

    def counted_build(*args):
        builds.append(1)
        return build_snapshot(*args)

    monkeypatch.setattr(host_module, "build_snapshot", counted_build)
    server = SimpleNamespace(
        service=None, core=core, metrics=None, metadata=None, extra_routes=lambda: ()
    )

    async def main():
        host = DataplaneHost(server, socket_path, 1 << 20)
        await host.start()
        frontend = RemoteDataplane(socket_path, 1 << 20, "test")
        pushed: list[dict] = []
        arrived = asyncio.Event()
        on_push = frontend._on_push

        def record(msg: dict) -> None:
            on_push(msg)  # the front end's own handling: its view is what is checked
            if msg["op"] == op.SNAPSHOT:
                pushed.append(msg["snapshot"])
                arrived.set()

        frontend._on_push = record
        assert await frontend.connect(asyncio.Event())
        view = frontend._snapshot

        async def change(make_change, *args) -> dict:
            """Makes a change on a thread (as loads and reloads happen) and returns the one
            snapshot it pushes (30 s bounds a failure, it is not waited for)."""
            before = len(pushed)
            arrived.clear()
            await asyncio.to_thread(make_change, *args)
            await asyncio.wait_for(arrived.wait(), 30)
            await _iteration_end()
            assert len(pushed) == before + 1
            return pushed[-1]

        assert view.guess(ModelSpec("m")).version == 1

        # A version becomes AVAILABLE (its LOADING changed nothing a front end sees).
        _write_version(base, 2)
        snapshot = await change(_poll_until, core, [1, 2])
        assert sorted(snapshot["models"]["m"]["versions"]) == ["1", "2"]
        latest = view.guess(ModelSpec("m"))
        assert latest.version == 2
        assert latest.signatures["serving_default"].inputs["x"].dtype == protos.DT_DOUBLE

        # A label (config change, no version state changes).
        snapshot = await change(core.apply_config, _config(base, {"canary": 2}))
        assert snapshot["models"]["m"]["labels"] == {"canary": 2}
        assert view.guess(ModelSpec("m", label="canary")).version == 2

        # A traffic split.
        split = {"m": TrafficSplit.from_weights("m", {"canary": 1})}
        snapshot = await change(core.set_traffic_splits, split)
        assert snapshot["models"]["m"]["split"] is True

        # A version unloaded (its directory deleted).
        shutil.rmtree(base / "1")
        snapshot = await change(_poll_until, core, [2])
        assert list(snapshot["models"]["m"]["versions"]) == ["2"]
        assert view.guess(ModelSpec("m", version=1)) is None

        # A config reload adding a model that has no version yet.
        (tmp_path / "n").mkdir()
        reload = _config(base, {"canary": 2}, waiting_model=tmp_path / "n")
        snapshot = await change(core.apply_config, reload)
        assert snapshot["waiting"] == ["n"]
        assert view.models_without_available_version() == ["n"]

        # Every push was a new snapshot, and no rebuild came without a change of the core.
        assert all(a != b for a, b in itertools.pairwise(pushed))
        assert len(builds) <= 1 + len(changes)
        idle_builds = len(builds)
        await asyncio.sleep(0.5)  # bounded window: a timer would have rebuilt meanwhile
        assert len(builds) == idle_builds

        frontend.close()
        await host.stop()
        await asyncio.to_thread(core.apply_config, _config(base, {}))  # a change after stop
        await _iteration_end()
        assert len(builds) == idle_builds

    asyncio.run(main())
    # The core outlives the model process's loop: its changes now reach no publisher.
    core.apply_config(_config(base, {"canary": 2}))
