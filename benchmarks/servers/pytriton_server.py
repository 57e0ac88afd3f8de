"""PyTriton 0.7.0 serving the same SavedModel: Triton's C++ HTTP/gRPC front end and dynamic
batcher in front of a Python callable (OIP v2 protocol, not TF Serving's).

    python -m benchmarks.servers.pytriton_server MODEL_VERSION_DIR NAME WIDTH... HTTP GRPC METRICS
Needs LD_LIBRARY_PATH to hold libpython (the runner sets it).
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MAX_BATCH_SIZE = 32  # peers.md's template: batching 32 / 1 ms where the knob exists
QUEUE_DELAY_US = 1000


def main(version_dir: str, name: str, shape: tuple[int, ...], ports: list[int]) -> None:
    predict = tf.saved_model.load(version_dir).signatures["serving_default"]

    @batch
    def infer(x):
        return {"y": predict(x=tf.constant(x))["y"].numpy()}

    http, grpc, metrics = ports
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http,
        grpc_address="127.0.0.1",
        grpc_port=grpc,
        metrics_port=metrics,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=name,
            infer_func=infer,
            inputs=[Tensor(name="x", dtype=np.float32, shape=shape)],
            outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(
                max_batch_size=MAX_BATCH_SIZE,
                batcher=DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US),
            ),
        )
        triton.serve()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], tuple(int(d) for d in args[2].split("x")), [int(p) for p in args[3:6]])
