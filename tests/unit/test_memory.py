"""serving.memory: TF's allocator setting, and malloc_trim only after large requests."""

from __future__ import annotations

import time

import pytest

from serving import memory


def test_tensorflow_is_told_to_use_malloc_unless_the_environment_says_otherwise():
    environ: dict[str, str] = {}
    memory.configure_allocators(environ)
    assert environ == {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}
    kept = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}
    memory.configure_allocators(kept)
    assert kept == {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}


@pytest.fixture
def returner(monkeypatch):
    monkeypatch.setattr(memory, "_QUIET_SECONDS", 0.05)
    monkeypatch.setattr(memory, "_SECOND_TRIM_SECONDS", 0.1)
    returner = memory.MemoryReturner(threshold=1000)
    if returner._trim is None:
        pytest.skip("this C library has no malloc_trim")
    yield returner
    returner.stop()


def _wait_for_trims(returner: memory.MemoryReturner, count: int) -> None:
    deadline = time.monotonic() + 10
    while returner.trims < count:
        assert time.monotonic() < deadline, f"{returner.trims} trims, expected {count}"
        time.sleep(0.01)


def test_small_requests_never_trim(returner):
    for _ in range(100):
        returner.note(999)
    returner.stop()  # joins the thread: nothing was pending
    assert returner.trims == 0


def test_a_large_request_trims_soon_and_once_more_later(returner):
    returner.note(1000)
    _wait_for_trims(returner, 2)


def test_stop_ends_the_thread_even_while_a_trim_is_pending(monkeypatch):
    monkeypatch.setattr(memory, "_QUIET_SECONDS", 60.0)
    returner = memory.MemoryReturner(threshold=1)
    returner.note(10)
    started = time.monotonic()
    returner.stop()
    assert time.monotonic() - started < 5
    assert returner.trims == 0
