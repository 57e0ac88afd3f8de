"""Weighted traffic split between a model's version labels, for A/B tests and canaries.

Beyond TF Serving (which declined it, PR #788): requests that name no version and no label
are spread over labels by weight, e.g. ``stable: 90, canary: 10``. A request carrying a
routing key (a header / gRPC metadata value) always lands on the same label while the
weights stay the same, so one user sees one model; requests without a key are spread at
random. The split is read from a small JSON file:

    {"routing_header": "x-routing-key",
     "models": {"taxi": {"stable": 90, "canary": 10}}}

An optional ``"seed"`` (an integer) makes the keyless picks reproducible run to run (for
experiments and tests); without it they are seeded from the OS.
"""

from __future__ import annotations

import bisect
import json
import random
import zlib
from dataclasses import dataclass, field

from serving.errors import ConfigError

DEFAULT_ROUTING_HEADER = "x-routing-key"


class TrafficSplitError(ConfigError):
    """The split file is unusable; the message says what to fix."""


@dataclass(frozen=True)
class TrafficSplit:
    labels: tuple[str, ...]
    cumulative: tuple[int, ...]
    # Keyless picks: one generator per split, so a seed reproduces one model's sequence.
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_weights(
        cls, model: str, weights: dict[str, int], seed: int | None = None
    ) -> TrafficSplit:
        if not weights:
            raise TrafficSplitError(f"Traffic split for model {model} lists no labels")
        labels, cumulative, total = [], [], 0
        for label, weight in sorted(weights.items()):
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                raise TrafficSplitError(
                    f"Traffic split for model {model}: weight of label {label!r} must be a "
                    f"non-negative integer, got {weight!r}"
                )
            if weight:
                total += weight
                labels.append(label)
                cumulative.append(total)
        if not total:
            raise TrafficSplitError(f"Traffic split for model {model}: all weights are zero")
        return cls(tuple(labels), tuple(cumulative), random.Random(seed))

    def weights(self) -> dict[str, int]:
        """The split as configured (zero-weight labels dropped), e.g. for the status page."""
        previous = (0, *self.cumulative[:-1])
        return {
            label: total - before
            for label, total, before in zip(self.labels, self.cumulative, previous, strict=True)
        }

    def choose(self, routing_key: str | None) -> str:
        total = self.cumulative[-1]
        sticky = zlib.crc32(routing_key.encode()) if routing_key else self.rng.randrange(total)
        point = sticky % total
        return self.labels[bisect.bisect_right(self.cumulative, point)]


@dataclass(frozen=True)
class TrafficSplitConfig:
    routing_header: str
    splits: dict[str, TrafficSplit]


def read_traffic_split(path: str) -> TrafficSplitConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as exc:
        raise TrafficSplitError(f"Cannot read traffic split file {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
        raise TrafficSplitError(
            f'{path}: expected {{"models": {{"<model>": {{"<label>": <weight>, ...}}}}}}'
        )
    header = document.get("routing_header", DEFAULT_ROUTING_HEADER)
    if not isinstance(header, str) or not header:
        raise TrafficSplitError(f"{path}: routing_header must be a non-empty string")
    seed = document.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TrafficSplitError(f"{path}: seed must be an integer, got {seed!r}")
    splits = {}
    for model, weights in document["models"].items():
        if not isinstance(weights, dict):
            raise TrafficSplitError(f"{path}: weights of model {model} must be an object")
        splits[model] = TrafficSplit.from_weights(model, weights, seed)
    return TrafficSplitConfig(header.lower(), splits)
