"""The Exporter's keys, declared once: the component spec's parameters and output, and the
custom properties the executor writes on the exported ``Model`` (as TFX keeps its components'
keys in ``standard_component_specs``). Inputs use the stock keys."""

# Output channel: cannot also be called ``model`` (ComponentSpec keys are unique).
EXPORTED_MODEL_KEY = "exported_model"

# Execution parameters.
NUM_WARMUP_EXAMPLES_KEY = "num_warmup_examples"
WARMUP_SPLIT_KEY = "warmup_split"
CLASSIFICATION_KEY = "classification"
CLASS_LABELS_KEY = "class_labels"  # a JSON list

# Custom properties of the exported Model.
SIGNATURE_NAMES_KEY = "signature_names"
SIGNATURES_KEY = "signatures"
WARMUP_REQUESTS_KEY = "warmup_requests"
MANIFEST_DIGEST_KEY = "manifest_digest"
TRANSFORM_EMBEDDED_KEY = "transform_embedded"
