"""A model call that blocks until the test lets it finish: for overload and shutdown tests.

``write_gated_double`` writes a TF1 graph SavedModel computing ``y = 2 x`` only once the file
named by its ``gate`` input exists (every row names one; the first row's is used). The wait is
a TF while-loop polling ``MatchingFiles``, so it holds no GIL and needs nothing from the
test's process; it keeps one core busy while the gate is closed, which a test keeps to
seconds. The gate path is a signature input rather than a constant so that graph optimizers
cannot fold the file check away. A request names an existing file (``OPEN``) to pass straight
through.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tests.support.models import save_predict_graph

OPEN = os.path.abspath(__file__)  # a file that always exists: the gate is open


def write_gated_double(path: str) -> str:
    """TF1 graph SavedModel at ``path``: inputs ``x`` (float [None, 1]) and ``gate`` (string
    [None]), output ``y = 2 x`` once ``gate[0]`` exists."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, shape=[None, 1], name="x")
        gate = tf.compat.v1.placeholder(tf.string, shape=[None], name="gate")
        (polls,) = tf.while_loop(
            lambda polls: tf.equal(tf.size(tf.io.matching_files(gate[0])), 0),
            lambda polls: polls + 1,
            [tf.constant(0, tf.int64)],
            parallel_iterations=1,
        )
        with tf.control_dependencies([polls]):
            y = tf.identity(x * 2.0, name="y")
    return save_predict_graph(path, graph, {"x": x, "gate": gate}, {"y": y})


class Gate:
    """A gate file that does not exist yet; ``open()`` creates it."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "gate-open")

    def open(self) -> None:
        with open(self.path, "w"):
            pass

    def rows(self, values: list[float]) -> list[dict]:
        """REST ``instances`` that wait for this gate."""
        return [{"x": [value], "gate": self.path} for value in values]
