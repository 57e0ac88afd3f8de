"""TensorFlow's caller-thread mode (``--tensorflow_inter_op_parallelism=-1``, docs/serving.md,
"TensorFlow's threads"): the flag's value reaches the sessions, and such sessions answer several
batch threads at once as sessions with an inter-op pool do. With one inter-op thread, calls without
a deadline run in the caller's thread too (``saved_model.runs_in_caller_thread``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

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


LOOP_STEPS = 20_000  # tens of milliseconds of TensorFlow's executor work per call


def _callers_share(servable, timeout_ms: int = 0) -> float:
    """The share of the process's CPU over a few calls that the calling thread used itself:
    about all of it when the ops run in the caller's thread, about none when an inter-op
    thread runs them while the caller waits (whatever else the machine is doing)."""
    signature = servable.signatures["serving_default"]
    n = np.array(LOOP_STEPS)
    expected = LOOP_STEPS * (LOOP_STEPS - 1) // 2
    servable.run(signature, {"n": n}, ["total"], timeout_ms)  # builds the callable
    thread, process = time.thread_time(), time.process_time()
    for _ in range(5):
        assert servable.run(signature, {"n": n}, ["total"], timeout_ms)["total"] == expected
    return (time.thread_time() - thread) / (time.process_time() - process)


def test_one_inter_op_thread_runs_calls_without_deadline_in_the_callers_thread(tmp_path):
    """With one inter-op thread, a call runs its ops in the caller's thread
    (``saved_model.runs_in_caller_thread``); with a deadline, or with a pool of two, the
    caller hands them over and waits, as before."""
    path = write_slow_loop(str(tmp_path / "1"))
    shares = {}
    for inter_op in (1, 2):
        config = build_session_config(SessionSettings(1, inter_op))
        servable = load_saved_model(path, LoadOptions(session_config=config))
        try:
            shares[inter_op, "no deadline"] = _callers_share(servable)
            shares[inter_op, "deadline"] = _callers_share(servable, timeout_ms=600_000)
        finally:
            servable.close()
    assert shares[1, "no deadline"] > 0.8, shares
    for share in (shares[1, "deadline"], shares[2, "no deadline"], shares[2, "deadline"]):
        assert share < 0.2, shares


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
