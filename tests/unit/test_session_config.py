"""TensorFlow's caller-thread mode (``--tensorflow_inter_op_parallelism=-1``, docs/serving.md,
"TensorFlow's threads"): the flag's value reaches the sessions, and such sessions answer several
batch threads at once as sessions with an inter-op pool do."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.session_config import SessionSettings, build_session_config
from tests.support.models import write_half_plus_two

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
