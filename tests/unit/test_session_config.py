"""TensorFlow's caller-thread mode (``--tensorflow_inter_op_parallelism=-1``, docs/serving.md,
"TensorFlow's threads"): the flag's value reaches the sessions, and such sessions answer several
batch threads at once as sessions with an inter-op pool do. With one inter-op thread, calls without
a deadline run in the caller's thread too (``saved_model.runs_in_caller_thread``), and so do calls
with one into a graph whose run time is bounded (``saved_model.bounded_run_time``)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import Code, ServingError
from serving.servables.saved_model import LoadOptions, bounded_run_time, load_saved_model
from serving.servables.session_config import SessionSettings, build_session_config
from tests.support.models import (
    write_half_plus_two,
    write_keras_dense,
    write_op_chain,
    write_slow_loop,
    write_tf2_scale,
)
from tests.support.server_process import REPO_ROOT

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
CHAIN = 1000  # sines over 16k values in the op chain: ~15 ms of work per call, and no loop
# (feeds, fetched output, its expected value) of one call to each model.
LOOP_CALL = ({"n": np.array(LOOP_STEPS)}, "total", LOOP_STEPS * (LOOP_STEPS - 1) // 2)
CHAIN_CALL = (
    {"x": np.array(0.5, np.float32)},
    "y",
    functools.reduce(lambda y, _: np.sin(y), range(CHAIN), 0.5),
)


def _callers_share(servable, call: tuple, timeout_ms: int = 0) -> float:
    """The share of the process's CPU over a few calls that the calling thread used itself:
    about all of it when the ops run in the caller's thread, about none when an inter-op
    thread runs them while the caller waits (whatever else the machine is doing)."""
    signature = servable.signatures["serving_default"]
    feeds, fetch, expected = call
    servable.run(signature, feeds, [fetch], timeout_ms)  # builds the callable
    thread, process = time.thread_time(), time.process_time()
    for _ in range(5):
        np.testing.assert_allclose(
            servable.run(signature, feeds, [fetch], timeout_ms)[fetch], expected, rtol=1e-3
        )
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
            shares[inter_op, "no deadline"] = _callers_share(servable, LOOP_CALL)
            shares[inter_op, "deadline"] = _callers_share(servable, LOOP_CALL, 600_000)
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


# Run in a fresh process on one CPU: TensorFlow then computes an op like the op chain's sines in
# the thread that runs the op, where with more CPUs (as in this process, whose pools other tests
# started) it hands it to its intra-op pool; so the caller's share shows where the chain ran, as
# the loop's does above (its scalar ops never leave the thread that runs them).
_SHARES_ON_ONE_CPU = """
import json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.session_config import SessionSettings, build_session_config
from tests.unit.test_session_config import CHAIN_CALL, _callers_share
config = build_session_config(SessionSettings(1, 1))
servable = load_saved_model(sys.argv[1], LoadOptions(session_config=config))
print(json.dumps({t: _callers_share(servable, CHAIN_CALL, t) for t in (0, 600_000)}))
"""


def test_one_inter_op_thread_runs_calls_with_a_deadline_in_the_callers_thread_if_bounded(tmp_path):
    """A graph without loops or waiting ops runs its calls with a deadline in the caller's
    thread too; the endless-loop model above keeps the pool for them."""
    path = write_op_chain(str(tmp_path / "1"), CHAIN)
    child = subprocess.run(
        [sys.executable, "-c", _SHARES_ON_ONE_CPU, path],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    shares = json.loads(child.stdout.strip().splitlines()[-1])
    assert shares["0"] > 0.8 and shares["600000"] > 0.8, shares


def test_a_bounded_call_that_returns_past_its_deadline_is_deadline_exceeded(tmp_path):
    """Run in the caller's thread, such a call is not cut short: its deadline is checked when
    it returns, and the answer is then DEADLINE_EXCEEDED, as TF's own timeout would give."""
    path = write_op_chain(str(tmp_path / "1"), CHAIN)
    config = build_session_config(SessionSettings(1, 1))
    servable = load_saved_model(path, LoadOptions(session_config=config))
    signature = servable.signatures["serving_default"]
    feeds, fetch, expected = CHAIN_CALL
    try:
        servable.run(signature, feeds, [fetch])  # builds the callable
        started = time.monotonic()
        answer = servable.run(signature, feeds, [fetch], timeout_ms=600_000)[fetch]
        np.testing.assert_allclose(answer, expected, rtol=1e-3)
        took_ms = (time.monotonic() - started) * 1000
        assert took_ms > 2, f"the chain ran in {took_ms:.2f} ms: too fast to miss 1 ms"
        with pytest.raises(ServingError) as raised:
            servable.run(signature, feeds, [fetch], timeout_ms=1)
        assert raised.value.code == Code.DEADLINE_EXCEEDED
        assert "past its deadline of 1 ms" in raised.value.message
    finally:
        servable.close()


def _meta_graph(ops: Sequence[str], function_ops: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """A graph of these op types, calling one function made of ``function_ops``."""
    meta_graph = meta_graph_pb2.MetaGraphDef()
    for op in ops:
        meta_graph.graph_def.node.add(name=op.lower(), op=op)
    function = meta_graph.graph_def.library.function.add()
    for op in function_ops:
        function.node_def.add(name=op.lower(), op=op)
    return meta_graph


@pytest.mark.parametrize(
    "ops, function_ops",
    [
        (["Placeholder", "While"], []),
        (["Placeholder", "StatefulPartitionedCall"], ["StatelessWhile"]),
        (["Placeholder", "Enter", "LoopCond", "Exit"], []),
        (["FIFOQueueV2", "QueueDequeueV2"], []),
        (["Placeholder", "StatefulPartitionedCall"], ["Barrier", "BarrierTakeMany"]),
        (["Unstage"], []),
        (["_Recv"], []),
        (["CollectiveReduceV2"], []),
        (["ReduceDataset"], []),
        (["IteratorGetNext"], []),
        (["EagerPyFunc"], []),
    ],
)
def test_loops_and_ops_that_wait_are_unbounded_in_the_graph_or_its_functions(ops, function_ops):
    assert not bounded_run_time(_meta_graph(ops, function_ops))


def test_plain_graphs_and_functions_are_bounded():
    ops = ["Placeholder", "MatMul", "BiasAdd", "Relu", "If", "StatefulPartitionedCall"]
    assert bounded_run_time(_meta_graph(ops, ["MatMul", "LookupTableFindV2", "Softmax"]))


@pytest.mark.parametrize(
    "write, bounded",
    [
        (write_slow_loop, False),
        (write_half_plus_two, True),
        (write_tf2_scale, True),
        (write_keras_dense, True),
    ],
)
def test_bounded_run_time_of_saved_models_as_tf_writes_them(tmp_path, write, bounded):
    """The real graphs: TF2's ``tf.while_loop`` in a TF1 graph, a ``tf.function`` module and a
    Keras export."""
    path = write(str(tmp_path / "1"))
    servable = load_saved_model(path, LoadOptions())
    try:
        assert bounded_run_time(servable.meta_graph) is bounded
    finally:
        servable.close()
