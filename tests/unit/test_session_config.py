"""TensorFlow's caller-thread mode (``--tensorflow_inter_op_parallelism=-1``, docs/serving.md,
"TensorFlow's threads"): the flag's value reaches the sessions, and such sessions answer several
batch threads at once as sessions with an inter-op pool do. With one inter-op thread, calls without
a deadline run in the caller's thread too (``saved_model.runs_in_caller_thread``)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serving.errors import Code, ServingError
from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.session_config import SessionSettings, build_session_config
from tests.support.models import write_half_plus_two, write_slow_loop

CALLERS = 4
CALLS = 50


def test_caller_thread_sessions_answer_concurrent_callers_like_pooled_ones(tmp_path):
    path = write_half_plus_two(str(tmp_path / "1"))
    answers = {}
    for inter_op in (1, -1):
        config = build_session_config(SessionSettings(1, inter_op))
        assert config.inter_op_parallelism_threads == inter_op
        servable = load_saved_model(path, LoadOptions(session_config=config))
        try:
            signature = servable.signatures["serving_default"]

            def calls(caller: int, signature=signature, servable=servable) -> list[np.ndarray]:
                xs = np.arange(caller, caller + CALLS, dtype=np.float32).reshape(-1, 1)
                return [servable.run(signature, {"x": x[None]}, ["y"])["y"] for x in xs]

            with ThreadPoolExecutor(CALLERS) as pool:  # as several batch threads would call
                answers[inter_op] = list(pool.map(calls, range(CALLERS)))
        finally:
            servable.close()
    for caller in range(CALLERS):
        expected = np.arange(caller, caller + CALLS, dtype=np.float32) * 0.5 + 2.0
        got = np.concatenate(answers[-1][caller]).ravel()
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got, np.concatenate(answers[1][caller]).ravel())


def _voluntary_switches() -> int:
    """This thread's voluntary context switches: a caller that waits for an inter-op thread
    sleeps (one switch per call); one that runs the ops itself does not."""
    status = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def _waits_per_call(servable, timeout_ms: int = 0) -> float:
    signature = servable.signatures["serving_default"]
    x = np.ones((8, 1), np.float32)
    for _ in range(20):  # the callable is built and the graph warmed outside the count
        servable.run(signature, {"x": x}, ["y"], timeout_ms)
    before = _voluntary_switches()
    for _ in range(CALLS):
        np.testing.assert_array_equal(
            servable.run(signature, {"x": x}, ["y"], timeout_ms)["y"], x * 0.5 + 2.0
        )
    return (_voluntary_switches() - before) / CALLS


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_one_inter_op_thread_runs_calls_without_deadline_in_the_callers_thread(tmp_path):
    """With one inter-op thread, a call runs its ops in the caller's thread
    (``saved_model.runs_in_caller_thread``); with a deadline, or with a pool of two, the
    caller hands them over and waits, as before."""
    path = write_half_plus_two(str(tmp_path / "1"))
    waits = {}
    for inter_op in (1, 2):
        config = build_session_config(SessionSettings(1, inter_op))
        servable = load_saved_model(path, LoadOptions(session_config=config))
        try:
            waits[inter_op, "no deadline"] = _waits_per_call(servable)
            waits[inter_op, "deadline"] = _waits_per_call(servable, timeout_ms=60_000)
        finally:
            servable.close()
    assert waits[1, "no deadline"] < 0.2, waits
    for waited in (waits[1, "deadline"], waits[2, "no deadline"], waits[2, "deadline"]):
        assert waited > 0.8, waits


def test_a_deadline_still_stops_a_call_on_a_one_inter_op_thread_session(tmp_path):
    """The caller-thread path is only for calls without a deadline: one with a deadline waits
    on the pool and is cancelled there (an endless loop answers DEADLINE_EXCEEDED)."""
    path = write_slow_loop(str(tmp_path / "1"))
    config = build_session_config(SessionSettings(1, 1))
    servable = load_saved_model(path, LoadOptions(session_config=config))
    signature = servable.signatures["serving_default"]
    outcome: dict[str, Code] = {}

    def call() -> None:
        try:
            servable.run(signature, {"n": np.array(10**12)}, ["total"], timeout_ms=200)
        except ServingError as error:
            outcome["code"] = error.code

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        caller.join(60)
        assert not caller.is_alive(), "the call ran on past its deadline"
        assert outcome == {"code": Code.DEADLINE_EXCEEDED}
    finally:
        servable.close()  # cancels a call still running
