"""TFX 1.16 drop-in Exporter, InfraValidator and Pusher for TF-Serving-compatible model stores,
and FeedbackExampleGen, which turns served traffic and its labels into the next training data.

The component classes are imported lazily: ``components.model_store`` (a small CLI used on
serving hosts for rollback/retention) must not pay TFX's ~25 s import.
"""

import importlib
from typing import Any

_LAZY = {
    "Exporter": "components.exporter.component",
    "FeedbackExampleGen": "components.feedback_example_gen.component",
    "InfraValidator": "components.infra_validator.component",
    "Pusher": "components.pusher.component",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
