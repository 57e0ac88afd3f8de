"""What a request asks the core for, in plain Python: TF Serving's ``ModelSpec`` after parsing.

A module of its own (no servables, no protos) so front ends that never load TensorFlow can
build one and the core can resolve it (``ServerCore::ServableRequestFromModelSpec``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """What a request asks for; at most one of ``version`` and ``label`` is set."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""
    routing_key: str | None = None  # picks a label when the model has a traffic split
