"""A SavedModel version loaded into its own TF session: the runtime's servable.

Every SavedModel — TF1 graphs (Estimator exports) and TF2 ones (tf.function, Keras 3
``model.export``) — is loaded the way TF Serving's C++ loader does it: as a MetaGraph into a
``Session``. Signatures are then run through session callables built from ``CallableOptions``,
which, unlike ``Session.run(feed_dict=...)``, feed tensors without a Python-side check against
the placeholder's static shape. That matches TF Serving, where a request of shape ``[3]`` into
an input declared ``[-1, 1]`` reaches the graph and only real incompatibilities fail.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.util import deprecation

from serving.errors import Code, ServingError
from serving.servables.op_libraries import missing_op_error
from serving.servables.servable import BlockingServable
from serving.servables.signatures import signature_info
from serving.servables.tflite import TfLiteOptions

log = logging.getLogger(__name__)

# RunOptions.inter_op_thread_pool's value for "run the ops in the thread that calls Run()".
CALLER_THREAD = -1
# Signature keys TF writes for its own bookkeeping; they are not callable model endpoints.
_INTERNAL_SIGNATURES = frozenset({"__saved_model_init_op"})
# Ops whose run time a request's values can stretch without bound: loops run until their
# condition says stop (TF2's functional ones, TF1's LoopCond frames), and the others wait for
# another party (queues, barriers, staging areas, receives, collectives) or for a dataset or a
# Python function. See ``bounded_run_time``.
_LOOP_OPS = frozenset({"While", "StatelessWhile", "_While", "For", "LoopCond", "NextIteration"})
_WAITING_OP_PARTS = ("queue", "barrier", "stage", "recv", "collective", "dataset", "iterator")
_WAITING_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


@dataclass(frozen=True)
class LoadOptions:
    """``tflite``: set by ``--prefer_tflite_model``; a version with a ``model.tflite`` is then
    served by TF Lite (``serving.servables.tflite``) instead of from its SavedModel."""

    tags: tuple[str, ...] = ("serve",)
    session_config: config_pb2.ConfigProto | None = None
    tflite: TfLiteOptions | None = None


def translate_tf_error(exc: tf.errors.OpError) -> ServingError:
    """Keep TF's status code and text, as TF Serving returns them to clients."""
    try:
        code = Code(exc.error_code)
    except ValueError:
        code = Code.UNKNOWN
    return ServingError(code, exc.message)


class SavedModelServable(BlockingServable):
    """One loaded model version. Thread-safe: concurrent ``run`` calls share the session."""

    def __init__(
        self,
        path: str,
        session: tf.compat.v1.Session,
        meta_graph: meta_graph_pb2.MetaGraphDef,
        run_in_caller_thread: bool = False,
    ) -> None:
        """``run_in_caller_thread``: calls without a deadline run their ops in the calling
        thread (see :func:`runs_in_caller_thread`)."""
        self.path = path
        self._session = session
        self._run_in_caller_thread = run_in_caller_thread
        self.meta_graph = meta_graph
        self.signatures: Mapping[str, meta_graph_pb2.SignatureDef] = {
            key: sig
            for key, sig in meta_graph.signature_def.items()
            if key not in _INTERNAL_SIGNATURES
        }
        # Calls with a deadline into a graph no request can make run on go to the caller's
        # thread too; their deadline is checked when they return (``run``).
        self._deadline_after_run = run_in_caller_thread and bounded_run_time(meta_graph)
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...], int], object] = {}
        self._callables_lock = threading.Lock()

    def run(
        self,
        signature: meta_graph_pb2.SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        """Feeds ``inputs`` (by alias) and fetches ``output_aliases`` of ``signature``."""
        info = signature_info(signature)
        feed_aliases = tuple(sorted(inputs))
        feeds = tuple(info.input_names[a] for a in feed_aliases)
        fetches = tuple(info.output_names[a] for a in output_aliases)
        checked_after = timeout_ms > 0 and self._deadline_after_run
        fn = self._callable(feeds, fetches, 0 if checked_after else _timeout_step(timeout_ms))
        started = time.monotonic() if checked_after else 0.0
        try:
            values = fn(*(inputs[a] for a in feed_aliases))
        except tf.errors.OpError as exc:
            raise translate_tf_error(exc) from None
        except (TypeError, ValueError) as exc:  # a value the session cannot convert to a tensor
            raise ServingError(Code.INVALID_ARGUMENT, str(exc)) from None
        if checked_after:
            took_ms = (time.monotonic() - started) * 1000
            if took_ms > timeout_ms:
                raise ServingError(
                    Code.DEADLINE_EXCEEDED,
                    f"The model call took {took_ms:.0f} ms, past its deadline of {timeout_ms} ms",
                )
        return dict(zip(output_aliases, values, strict=True))

    def _callable(self, feeds: tuple[str, ...], fetches: tuple[str, ...], timeout_ms: int):
        key = (feeds, fetches, timeout_ms)
        fn = self._callables.get(key)
        if fn is not None:
            return fn
        with self._callables_lock:
            fn = self._callables.get(key)
            if fn is None:
                options = config_pb2.CallableOptions(feed=feeds, fetch=fetches)
                if timeout_ms > 0:
                    options.run_options.timeout_in_ms = timeout_ms
                elif self._run_in_caller_thread:
                    options.run_options.inter_op_thread_pool = CALLER_THREAD
                try:
                    # Private but stable since TF 1.8: the only Python path without feed shape
                    # checks, and 5x cheaper per call than Session.run.
                    fn = self._session._make_callable_from_options(options)
                except tf.errors.OpError as exc:
                    raise translate_tf_error(exc) from None
                self._callables[key] = fn
        return fn

    def close(self) -> None:
        self._callables.clear()
        self._session.close()


def _timeout_step(timeout_ms: int) -> int:
    """The deadline rounded *up* to a step of 2^(1/4) (at most 19% later than asked; the
    client enforces its own deadline anyway): one session callable is built and cached per
    distinct ``RunOptions.timeout_in_ms``, and a raw remaining time differs on every call."""
    if timeout_ms <= 0:
        return 0
    return math.ceil(2 ** (math.ceil(math.log2(timeout_ms) * 4) / 4))


def runs_in_caller_thread(config: config_pb2.ConfigProto | None) -> bool:
    """Whether a session's calls without a deadline should run in the thread that makes them.

    With ``inter_op_parallelism_threads=1`` the session's one inter-op thread runs a call's ops
    one after another while the caller (a batch thread) waits for it: the caller could run them
    itself, in the same order, and skip two thread switches per call. ``RunOptions
    .inter_op_thread_pool = -1`` asks TF for exactly that (its "use the caller thread" value; a
    graph split over several devices still uses the pool). Calls with a deadline keep the
    pool unless the graph's run time is bounded (:func:`bounded_run_time`): only a caller that
    waits can stop waiting at ``timeout_in_ms`` and answer DEADLINE_EXCEEDED, as TF Serving
    does. With more inter-op threads, independent ops of one call run in parallel there, which
    a caller thread alone would give up; with fewer than zero, TF already runs every call in
    its caller's thread.
    """
    return config is not None and config.inter_op_parallelism_threads == 1


def bounded_run_time(meta_graph: meta_graph_pb2.MetaGraphDef) -> bool:
    """Whether no op of the graph, or of any function it may call, can run on for as long as a
    request's values or another party decide: no loop, nothing that waits.

    TF cancels a call with a deadline between two of its ops, which is what stops a loop a
    client can make endless (``tests/support/models.write_slow_loop`` with a huge ``n``) or an
    op that blocks. Without such ops a call's work grows only with its inputs, which the
    request limits bound: it can run in its caller's thread, saving the pool's two thread
    switches, and be answered DEADLINE_EXCEEDED if it returns past its deadline
    (docs/serving.md, "TensorFlow's threads"). Ops of custom op libraries count as bounded
    unless their names say they loop or wait.
    """
    graph = meta_graph.graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return not any(
        op in _LOOP_OPS
        or op in _WAITING_OPS
        or any(part in op.lower() for part in _WAITING_OP_PARTS)
        for op in ops
    )


def load_saved_model(path: str, options: LoadOptions) -> SavedModelServable:
    """Loads the MetaGraph tagged ``options.tags`` from ``path`` into a fresh session."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=options.session_config)
    try:
        with graph.as_default(), deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.load(session, list(options.tags), path)
    except tf.errors.NotFoundError as exc:
        session.close()
        error = missing_op_error(exc.message)
        if error is None:
            raise
        raise error from None
    except BaseException:
        session.close()
        raise
    graph.finalize()
    return SavedModelServable(
        path, session, meta_graph, runs_in_caller_thread(options.session_config)
    )
