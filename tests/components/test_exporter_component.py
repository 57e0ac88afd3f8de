"""Exporter component: channels and constructor checks."""

from __future__ import annotations

import pytest
from tfx.types import channel_utils, standard_artifacts

from components.exporter.component import Exporter


def test_output_is_a_stock_model_channel():
    exporter = Exporter(
        model=channel_utils.as_channel([standard_artifacts.Model()]),
        examples=channel_utils.as_channel([standard_artifacts.Examples()]),
        num_warmup_examples=3,
    )

    assert exporter.outputs["exported_model"].type_name == "Model"
    assert set(exporter.inputs) == {"model", "examples"}
    assert exporter.exec_properties["num_warmup_examples"] == 3


def test_warmup_without_examples_is_rejected():
    with pytest.raises(ValueError, match="needs examples="):
        Exporter(
            model=channel_utils.as_channel([standard_artifacts.Model()]), num_warmup_examples=2
        )
