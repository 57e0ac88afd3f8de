"""Embedding a TensorFlow Transform graph so the exported model takes raw features.

With a Transform component, the Trainer fits its model on *transformed* features (z-scores,
vocabulary ids, ...), so its ``serving_default`` cannot be called with what clients have: raw
features. Given the Transform component's ``transform_graph``, the Exporter puts TFT's serving
layer (``TFTransformOutput.transform_features_layer()``) in front of that signature, and the
SavedModel carries the transform's variables and assets (vocabularies) itself.

The new ``serving_default`` asks only for the raw features the model's inputs depend on: TFT
drops the outputs whose inputs are not fed, so tracing the layer once without each raw feature
tells whether the model needs it (labels and unused columns are therefore not required at
serving time). It takes them as typed tensors ``[batch, *shape]`` when all of them are
fixed-length, else serialized ``tf.Example``s (``examples``) parsed with the raw feature spec.
The Exporter's usual signature planning then adds the serialized-Example, classify and regress
signatures on top of it.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tensorflow.core.protobuf import meta_graph_pb2

from components.exporter.signatures import DEFAULT_SIGNATURE, plan_signatures
from components.serving_requests import is_serialized_example_signature, load_signature_defs

RawSpec = dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature | tf.io.RaggedFeature]


def _raw_feature_spec(tft_output: tft.TFTransformOutput, uri: str) -> RawSpec:
    try:
        return tft_output.raw_feature_spec()
    except OSError as e:
        raise ValueError(
            f"The transform_graph at {uri} has no raw metadata ({e}); the Exporter needs the "
            "raw feature spec that TFX's Transform component writes under metadata/."
        ) from e


def _outputs_fed_by(layer: tf.Module, spec: RawSpec) -> set[str]:
    """The transformed features TFT can compute from serialized examples holding ``spec``."""
    traced = tf.function(lambda serialized: layer(tf.io.parse_example(serialized, spec)))
    concrete = traced.get_concrete_function(tf.TensorSpec([None], tf.string))
    return set(concrete.structured_outputs)


def required_raw_features(layer: tf.Module, raw_spec: RawSpec, needed: set[str]) -> RawSpec:
    """The raw features without which some of the ``needed`` transformed features are lost."""
    missing = needed - _outputs_fed_by(layer, raw_spec)
    if missing:
        raise ValueError(f"The transform graph cannot compute {sorted(missing)} at all.")
    return {
        name: feature
        for name, feature in raw_spec.items()
        if not needed <= _outputs_fed_by(layer, {k: v for k, v in raw_spec.items() if k != name})
    }


def _model_input(name: str, value: tf.Tensor, info: meta_graph_pb2.TensorInfo) -> tf.Tensor:
    """A transformed feature in the dtype and shape the trained signature declares (TFT turns
    a scalar feature into ``[batch]``, Keras models usually declare ``[batch, 1]``)."""
    if not isinstance(value, tf.Tensor):
        raise ValueError(
            f"Transformed feature {name!r} is {type(value).__name__} but the model input is a "
            "dense tensor; densify it in the preprocessing_fn."
        )
    dtype = tf.dtypes.as_dtype(info.dtype)
    if value.dtype != dtype:
        value = tf.cast(value, dtype)
    dims = [d.size for d in info.tensor_shape.dim]
    inner = dims[1:]
    if not info.tensor_shape.unknown_rank and dims and all(d >= 0 for d in inner):
        value = tf.reshape(value, [-1, *inner])
    return value


def embed_transform(source_dir: str, transform_graph_uri: str, target_dir: str) -> bool:
    """Saves ``source_dir`` with the transform in front of its default signature into
    ``target_dir``; False (nothing written) if the model already takes serialized examples."""
    source_defs = load_signature_defs(source_dir)
    default_name = plan_signatures(source_defs).default_source
    default = source_defs[default_name]
    if is_serialized_example_signature(default):
        logging.warning(
            "Signature %r already takes serialized tf.Examples, so the Trainer embedded the "
            "transform itself; the transform_graph is not embedded again.",
            default_name,
        )
        return False
    tft_output = tft.TFTransformOutput(transform_graph_uri)
    raw_spec = _raw_feature_spec(tft_output, transform_graph_uri)
    transformed = set(tft_output.transformed_feature_spec())
    unknown = sorted(set(default.inputs) - transformed)
    if unknown:
        raise ValueError(
            f"Model inputs {unknown} of signature {default_name!r} are not outputs of the "
            f"transform graph ({sorted(transformed)}); pass the transform_graph the model was "
            "trained with."
        )
    layer = tft_output.transform_features_layer()
    needed = required_raw_features(layer, raw_spec, set(default.inputs))
    loaded = tf.saved_model.load(source_dir)
    model_fn = loaded.signatures[default_name]

    def serve_raw(raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = layer(raw)
        inputs = {k: _model_input(k, features[k], info) for k, info in default.inputs.items()}
        return model_fn(**inputs)

    names = sorted(needed)
    if all(isinstance(needed[n], tf.io.FixedLenFeature) for n in names):
        specs = [tf.TensorSpec([None, *needed[n].shape], needed[n].dtype, name=n) for n in names]
        serving = tf.function(
            lambda *tensors: serve_raw(dict(zip(names, tensors, strict=True))),
            input_signature=specs,
        )
    else:
        serving = tf.function(
            lambda examples: serve_raw(tf.io.parse_example(examples, needed)),
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
        )
    dropped = sorted(set(source_defs) - {default_name})
    if dropped:
        logging.info("Signatures %s take transformed features; not exported.", dropped)
    root = tf.Module()
    root.model = loaded
    root.tft_layer = layer  # tracks the transform's variables and vocabulary assets
    tf.saved_model.save(root, target_dir, signatures={DEFAULT_SIGNATURE: serving})
    logging.info("Embedded transform %s; serving on raw features %s", transform_graph_uri, names)
    return True
