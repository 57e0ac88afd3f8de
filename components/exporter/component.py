"""Exporter component: Trainer ``Model`` (+ optional ``TransformGraph``, ``Examples``) ->
serving-ready ``Model``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as stock
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.system_executions import Process

from components.exporter import executor, signatures
from components.exporter.keys import (
    CLASS_LABELS_KEY,
    CLASSIFICATION_KEY,
    EXPORTED_MODEL_KEY,
    NUM_WARMUP_EXAMPLES_KEY,
    WARMUP_SPLIT_KEY,
)


class ExporterSpec(types.ComponentSpec):
    """Inputs use the stock consumer keys (``model``, ``examples``); the output cannot also be
    called ``model`` (ComponentSpec keys are unique), hence ``exported_model``."""

    PARAMETERS = {
        NUM_WARMUP_EXAMPLES_KEY: ExecutionParameter(type=int, optional=True),
        WARMUP_SPLIT_KEY: ExecutionParameter(type=str, optional=True),
        CLASSIFICATION_KEY: ExecutionParameter(type=str, optional=True),
        CLASS_LABELS_KEY: ExecutionParameter(type=str, optional=True),  # JSON list
    }
    INPUTS = {
        stock.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        stock.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
        stock.TRANSFORM_GRAPH_KEY: ChannelParameter(
            type=standard_artifacts.TransformGraph, optional=True
        ),
    }
    OUTPUTS = {EXPORTED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}
    TYPE_ANNOTATION = Process


class ExporterOutputs(dict):
    """``exporter.outputs``: a KeyError that says what to write for the stock key ``model``.

    The output cannot be called ``model`` (ComponentSpec keys are unique across inputs and
    outputs, and the input keeps the stock name), so ``exporter.outputs['model']``, copied from
    a Trainer, would otherwise fail with a bare ``KeyError: 'model'``.
    """

    def __missing__(self, key: str) -> types.BaseChannel:
        raise OutputKeyError(key, sorted(self))


class OutputKeyError(KeyError):
    def __init__(self, key: str, known: list[str]) -> None:
        super().__init__(key)
        self.key, self.known = key, known

    def __str__(self) -> str:
        hint = (
            f"write exporter.outputs['{EXPORTED_MODEL_KEY}'] (the Exporter's input is named "
            "'model', so its output is 'exported_model')"
            if self.key == stock.MODEL_KEY
            else f"its outputs are {self.known}"
        )
        return f"The Exporter has no output {self.key!r}: {hint}."


class Exporter(base_component.BaseComponent):
    """Writes ``<exported_model>/Format-Serving/`` plus ``manifest.json``.

    Checks the trained model's signatures, adds serialized-Example predict and classify/regress
    signatures where the model's shape allows, writes TF Serving warmup requests from
    ``examples`` (``num_warmup_examples`` per signature, default 1, from ``warmup_split`` or the
    first split) and records a signature summary as custom properties. The output is a stock
    ``Model`` under the key ``exported_model`` (``exporter.outputs['exported_model']``): stock
    Evaluator/InfraValidator/Pusher can consume it unchanged.

    ``classification``: when to add a ``classification`` signature (TF Serving's Classify API:
    ``classes`` + ``scores``) next to predict and regress. ``"auto"`` (default): when the
    single float output of ``serving_default`` is computed by a ``Sigmoid`` (binary: classes
    ``["0", "1"]``, scores ``[1 - p, p]``; several columns: one class each) or ``Softmax`` op;
    ``"sigmoid"`` / ``"softmax"``: treat that output as such probabilities whatever computes
    them; ``"none"``: never. ``class_labels`` names the classes (default ``"0"``..``"n-1"``;
    two for a binary model: negative, positive).

    With ``transform_graph`` (the Transform component's output, stock key), the model the
    Trainer fit on transformed features is first wrapped with TFT's serving layer, so that
    ``serving_default`` takes raw features (only those the model needs: no labels) and the
    transform's statistics and vocabularies travel inside the SavedModel.
    """

    SPEC_CLASS = ExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel | None = None,
        transform_graph: types.BaseChannel | None = None,
        num_warmup_examples: int | None = None,
        warmup_split: str | None = None,
        classification: str | None = None,
        class_labels: Sequence[str] | None = None,
    ) -> None:
        if num_warmup_examples is not None and num_warmup_examples < 0:
            raise ValueError(f"num_warmup_examples must be >= 0, got {num_warmup_examples}.")
        if examples is None and num_warmup_examples:
            raise ValueError("num_warmup_examples needs examples= to build warmup requests from.")
        labels = list(class_labels) if class_labels is not None else None
        signatures.validate_classification_options(classification, labels)
        spec = ExporterSpec(
            model=model,
            examples=examples,
            transform_graph=transform_graph,
            num_warmup_examples=num_warmup_examples,
            warmup_split=warmup_split,
            classification=classification,
            class_labels=json.dumps(labels) if labels is not None else None,
            exported_model=types.Channel(type=standard_artifacts.Model),
        )
        super().__init__(spec=spec)
        self.spec.outputs = ExporterOutputs(self.spec.outputs)
