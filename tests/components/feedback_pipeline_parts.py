"""Stand-in TFX components for the FeedbackExampleGen pipeline test.

A module of its own because TFX's ``@component`` parses real annotations, which
``from __future__ import annotations`` (used by the test modules) turns into strings.
"""

import json
import os
from typing import List  # noqa: UP035 (TFX @component needs typing.List)

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts


@component
def BaseExamples(examples: OutputArtifact[standard_artifacts.Examples]):
    """Stands in for ExampleGen: span 0, no rows (only the merge is under test here)."""
    examples.span = 0
    examples.split_names = '["train", "eval"]'
    for split in ("train", "eval"):
        os.makedirs(os.path.join(examples.uri, f"Split-{split}"))


@component
def RecordTrainingInput(
    examples: InputArtifact[List[standard_artifacts.Examples]],  # noqa: UP006 (TFX needs typing.List)
    record: Parameter[str],
):
    """Stands in for the Trainer: appends the spans it was given to ``record``."""
    with open(record, "a") as handle:
        handle.write(json.dumps(sorted(a.span for a in examples)) + "\n")
