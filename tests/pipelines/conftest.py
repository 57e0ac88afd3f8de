"""Fixtures for pipeline tests."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import tensorflow as tf


@pytest.fixture
def make_model_uri() -> Callable[[str], str]:
    """Writes a Model artifact dir (``<uri>/Format-Serving``) holding a tiny real SavedModel."""

    def make(uri: str) -> str:
        module = tf.Module()
        module.w = tf.Variable(2.0)
        module.serve = tf.function(
            lambda x: {"y": x * module.w},
            input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")],
        )
        tf.saved_model.save(
            module,
            os.path.join(uri, "Format-Serving"),
            signatures={"serving_default": module.serve},
        )
        return uri

    return make
