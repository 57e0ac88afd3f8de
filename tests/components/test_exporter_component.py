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


def test_stock_output_key_model_names_the_key_to_write():
    exporter = Exporter(model=channel_utils.as_channel([standard_artifacts.Model()]))

    with pytest.raises(KeyError) as error:
        exporter.outputs["model"]  # copied from trainer.outputs["model"]

    assert str(error.value) == (
        "The Exporter has no output 'model': write exporter.outputs['exported_model'] (the "
        "Exporter's input is named 'model', so its output is 'exported_model')."
    )
    with pytest.raises(KeyError, match=r"its outputs are \['exported_model'\]"):
        exporter.outputs["exported"]
    assert list(exporter.outputs) == ["exported_model"]  # iteration and compile unaffected


def test_classification_options_are_checked_and_stored():
    exporter = Exporter(
        model=channel_utils.as_channel([standard_artifacts.Model()]),
        classification="sigmoid",
        class_labels=("negative", "positive"),
    )

    assert exporter.exec_properties["classification"] == "sigmoid"
    assert exporter.exec_properties["class_labels"] == '["negative", "positive"]'
    with pytest.raises(ValueError, match="classification must be one of"):
        Exporter(
            model=channel_utils.as_channel([standard_artifacts.Model()]), classification="binary"
        )
    with pytest.raises(ValueError, match="class_labels has duplicates"):
        Exporter(
            model=channel_utils.as_channel([standard_artifacts.Model()]), class_labels=["a", "a"]
        )
