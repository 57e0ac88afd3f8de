"""The compute ceiling: the model called in-process through this project's own runtime (a TF
session callable, one intra/inter-op thread), no server, no serialisation.

    python -m benchmarks.ceiling MODEL_VERSION_DIR MODEL_NAME SECONDS  -> one JSON line
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.models import sample
from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.session_config import SessionSettings, build_session_config

BATCH_SIZES = (1, 8, 32, 128)


def measure(version_dir: str, name: str, seconds: float) -> dict[str, float]:
    options = LoadOptions(session_config=build_session_config(SessionSettings(1, 1)))
    servable = load_saved_model(version_dir, options)
    signature = servable.signatures["serving_default"]
    rows_per_second = {}
    for size in BATCH_SIZES:
        inputs = {"x": sample(name, size)}
        for _ in range(20):  # warm-up: kernel setup for this shape
            servable.run(signature, inputs, ["y"])
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            servable.run(signature, inputs, ["y"])
            calls += 1
        rows_per_second[str(size)] = calls * size / (time.perf_counter() - start)
    servable.close()
    return rows_per_second


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2], float(sys.argv[3]))))
