"""The supervisor's spare front-end process (``--frontend_spare``): how it is kept, handed a
slot and replaced, without a model process. The spares here are real front-end processes
(``python -m serving.multiproc.frontend``: it imports, reports, waits for its slot); once given
one it looks for a model socket that never appears, binding nothing, until it is stopped.
Where only the bookkeeping matters, a sleeping stand-in process fills the slot."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.multiproc.supervisor import RESTART_DELAYS, Supervisor
from serving.options import ServerOptions
from tests.support.server_process import free_port

WAIT_SECONDS = 60.0


@pytest.fixture
def supervisor(tmp_path):
    (tmp_path / "m").mkdir()
    # Ports nothing binds: a front end binds only once connected to the model process.
    argv = [
        f"--port={free_port()}",
        f"--rest_api_port={free_port()}",
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
    ]
    supervisor = Supervisor(ServerOptions(), argv, frontends=2)
    yield supervisor
    for child in (supervisor.model, *supervisor.frontends, *supervisor.spares):
        if child.process is not None and child.process.poll() is None:
            child.process.kill()
            child.process.wait()
        supervisor._close_pipes(child)
    shutil.rmtree(supervisor.runtime_dir, ignore_errors=True)


def _until(predicate, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {WAIT_SECONDS} s: {what}")


def _report(supervisor: Supervisor, child) -> bool:
    """Reads what the child wrote on its ready pipe, as the watch does; True once warm."""
    assert child.ready_fd is not None, f"it exited with {child.process.wait()}"
    if select.select([child.ready_fd], [], [], 0.05)[0]:
        supervisor._read_ready(child)
    return child.warm


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _sockets(pid: int) -> list[str]:
    links = (os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    return [link for link in links if link.startswith("socket:")]


def _stand_in() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_the_spare_waits_imported_and_unbound_then_takes_a_dead_front_ends_slot(supervisor):
    (spare,) = supervisor.spares
    slot = supervisor.frontends[1]
    supervisor._spawn(spare)
    assert not supervisor._started(spare)  # importing: SIGUSR1 would still end it
    _until(lambda: _report(supervisor, spare), "the spare reports its imports done")
    pid = spare.process.pid
    assert supervisor._started(spare)  # its stack-dump handler is in place
    assert _comm(pid) == "frontend-spare"
    assert _sockets(pid) == []  # no port, no model connection
    failures = spare.failures

    supervisor._start(slot)  # the slot is empty: its process exited

    assert slot.process.pid == pid and slot.warm and slot.slot_fd is None
    assert spare.process is None and spare.ready_fd is None and spare.slot_fd is None
    assert spare.next_start <= time.monotonic() and spare.failures == failures  # no back-off
    # It read its slot: it names itself (and logs) as front end 1, a fresh one's identity.
    _until(lambda: _comm(pid) == "frontend-1", "the former spare names itself frontend-1")

    supervisor._start(spare)  # the watch's next turn: a new spare
    assert spare.process is not None and spare.process.pid != pid
    supervisor._stop_all()
    assert slot.process.returncode == 0  # stopped while looking for the model process
    assert spare.process.returncode == 0  # its slot pipe closed: it exits, imported or not


def test_an_idle_spare_ends_cleanly_on_sigterm(supervisor):
    (spare,) = supervisor.spares
    supervisor._spawn(spare)
    _until(lambda: _report(supervisor, spare), "the spare reports its imports done")
    spare.process.terminate()
    assert spare.process.wait(WAIT_SECONDS) == 0


def test_a_spare_that_dies_idle_is_replaced_with_the_back_off_of_any_child(supervisor):
    (spare,) = supervisor.spares
    for expected in RESTART_DELAYS[:4]:  # at once, then as it keeps dying young: 1, 2, 5 s
        spare.process = _stand_in()
        spare.started = now = time.monotonic()
        spare.process.kill()
        spare.process.wait()
        supervisor._on_exit(spare, now)
        assert spare.process is None
        assert spare.next_start == pytest.approx(now + expected)


def test_without_a_live_spare_a_front_end_slot_gets_a_process_of_its_own(supervisor):
    (spare,) = supervisor.spares
    slot = supervisor.frontends[0]
    spare.process = _stand_in()  # a spare that died, not yet noticed by the watch
    spare.process.kill()
    spare.process.wait()
    dead = spare.process
    supervisor._start(slot)
    assert slot.process is not None and slot.process is not dead
    assert spare.process is dead  # left for the watch to count as a failure
    _until(lambda: _report(supervisor, slot), "the new process reports its imports done")
    _until(lambda: _comm(slot.process.pid) == "frontend-0", "it names itself frontend-0")
    supervisor._stop_all()
    assert slot.process.returncode == 0


def test_spares_are_kept_only_when_asked_and_only_around_front_ends():
    for spares, frontends, kept in ((1, 2, 1), (0, 2, 0), (2, 1, 2), (1, 0, 0)):
        supervisor = Supervisor(ServerOptions(frontend_spare=spares), [], frontends)
        try:
            assert len(supervisor.spares) == kept
        finally:
            shutil.rmtree(supervisor.runtime_dir, ignore_errors=True)
