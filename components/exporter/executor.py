"""Exporter executor: transform embedding, signatures, warmup requests, manifest, summary."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from absl import logging
from tensorflow.core.protobuf import meta_graph_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as stock
from tfx.utils import io_utils, path_utils

from components import serving_requests, store_io
from components.exporter import activations, signatures, transform
from components.exporter.keys import (
    CLASS_LABELS_KEY,
    CLASSIFICATION_KEY,
    EXPORTED_MODEL_KEY,
    MANIFEST_DIGEST_KEY,
    NUM_WARMUP_EXAMPLES_KEY,
    SIGNATURE_NAMES_KEY,
    SIGNATURES_KEY,
    TRANSFORM_EMBEDDED_KEY,
    WARMUP_REQUESTS_KEY,
    WARMUP_SPLIT_KEY,
)
from components.manifest import build_manifest, manifest_path_for
from components.summary import log_summary

_DEFAULT_NUM_WARMUP_EXAMPLES = 1


class Executor(base_executor.BaseExecutor):
    """Writes the serving-ready model; every side effect stays inside the output artifact."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        # Bucket pipeline roots (gs://, s3://): the model and transform graph are staged
        # through local temp dirs and the exported model uploaded (components.store_io).
        staged_inputs = [
            *input_dict.get(stock.MODEL_KEY, []),
            *input_dict.get(stock.TRANSFORM_GRAPH_KEY, []),
        ]
        with store_io.staged_artifacts(staged_inputs, output_dict[EXPORTED_MODEL_KEY]):
            self._export(input_dict, output_dict, exec_properties)

    def _export(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[stock.MODEL_KEY])
        exported = artifact_utils.get_single_instance(output_dict[EXPORTED_MODEL_KEY])
        source = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
        target = path_utils.serving_model_dir(exported.uri)

        # Local on purpose: an intermediate SavedModel, deleted before Do returns.
        with tempfile.TemporaryDirectory(prefix="exporter-") as tmp:
            embedded = False
            if input_dict.get(stock.TRANSFORM_GRAPH_KEY):
                graph = artifact_utils.get_single_instance(input_dict[stock.TRANSFORM_GRAPH_KEY])
                with_transform = os.path.join(tmp, "with-transform")
                embedded = transform.embed_transform(source, graph.uri, with_transform)
                source = with_transform if embedded else source
            source_defs = serving_requests.load_signature_defs(source)
            mode = exec_properties.get(CLASSIFICATION_KEY) or signatures.CLASSIFY_AUTO
            labels_json = exec_properties.get(CLASS_LABELS_KEY)
            plan = signatures.plan_signatures(
                source_defs,
                classification=mode,
                class_labels=json.loads(labels_json) if labels_json else None,
                output_ops=_default_output_ops(source, source_defs),
            )
            for name, problem in sorted(plan.unusable.items()):
                logging.warning("Signature %r kept but not servable: %s", name, problem)
            if plan.changes_model:
                signatures.write_serving_model(source, target, source_defs, plan)
            else:
                io_utils.copy_dir(source, target)
        target_defs = serving_requests.load_signature_defs(target)
        servable = sorted(n for n in target_defs if n not in plan.unusable)

        num_warmup = exec_properties.get(NUM_WARMUP_EXAMPLES_KEY)
        num_warmup = _DEFAULT_NUM_WARMUP_EXAMPLES if num_warmup is None else int(num_warmup)
        warmup_count = 0
        if input_dict.get(stock.EXAMPLES_KEY) and num_warmup > 0:
            examples = serving_requests.read_examples(
                artifact_utils.get_single_instance(input_dict[stock.EXAMPLES_KEY]),
                exec_properties.get(WARMUP_SPLIT_KEY),
                num_warmup,
            )
            try:
                requests = serving_requests.build_requests("", target_defs, servable, examples)
            except ValueError as e:
                raise ValueError(
                    f"Cannot build warmup requests: {e} (or set num_warmup_examples=0 to export "
                    "without warmup)."
                ) from e
            serving_requests.write_warmup_requests(target, requests)
            warmup_count = len(requests)

        manifest = build_manifest(target)
        manifest.write(manifest_path_for(target))
        exported.set_string_custom_property(SIGNATURE_NAMES_KEY, json.dumps(servable))
        exported.set_string_custom_property(
            SIGNATURES_KEY, json.dumps(signatures.summarize(target_defs), sort_keys=True)
        )
        exported.set_int_custom_property(WARMUP_REQUESTS_KEY, warmup_count)
        exported.set_int_custom_property(TRANSFORM_EMBEDDED_KEY, int(embedded))
        exported.set_string_custom_property(MANIFEST_DIGEST_KEY, manifest.digest)
        logging.info("Exported %s -> %s", source, target)
        log_summary("Exporter", _summary(target_defs, servable, plan, warmup_count, embedded))


def _default_output_ops(
    saved_model_dir: str, defs: dict[str, meta_graph_pb2.SignatureDef]
) -> dict[str, str | None]:
    """Ops computing the outputs of the signature that will be ``serving_default``."""
    try:
        name = signatures.plan_signatures(defs, classification=signatures.CLASSIFY_NONE)
    except signatures.UnservableModelError:
        return {}  # planning for real raises it again, with the full message
    return activations.output_ops(saved_model_dir, name.default_source)


def _summary(
    defs: dict[str, meta_graph_pb2.SignatureDef],
    servable: list[str],
    plan: signatures.SignaturePlan,
    warmup_count: int,
    embedded: bool,
) -> str:
    """One line: every servable signature with its API, the classes, warmup, transform."""

    def describe(name: str) -> str:
        method = defs[name].method_name.rsplit("/", 1)[-1]
        c = plan.classification
        if name == signatures.CLASSIFICATION_SIGNATURE and c is not None:
            labels = ", ".join(repr(label) for label in c.labels)
            return f"{name} ({method}: classes {labels} from {c.activation} {c.output!r})"
        return f"{name} ({method})"

    # The default first: it is what most clients call.
    ordered = sorted(servable, key=lambda n: (n != signatures.DEFAULT_SIGNATURE, n))
    parts = [f"signatures {', '.join(describe(n) for n in ordered)}"]
    parts.append(f"{warmup_count} warmup records")
    if embedded:
        parts.append("transform embedded")
    return "; ".join(parts)
