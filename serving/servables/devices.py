"""Where models run: the GPUs TF sees, or the CPU when there are none.

Model sessions take their GPU memory policy from the session ConfigProto
(``session_config.build_session_config``: ``allow_growth``, or the hard
``--per_process_gpu_memory_fraction``). TF's eager runtime, which warmup and ``tf.io`` may
start in the same process, has its own policy and would otherwise map nearly all GPU memory
on first use — so the same choice is applied to it here, once, before anything touches the
device. TF places ops on ``GPU:0`` by default when one is visible and soft placement (also in
the ConfigProto) falls back to the CPU for ops without GPU kernels; a host without GPUs simply
runs everything on the CPU.

To run on a GPU host: install a CUDA-enabled TensorFlow build matching ``tensorflow==2.16.2``
(``pip install tensorflow[and-cuda]==2.16.2``) with the NVIDIA driver present; nothing else
changes. ``CUDA_VISIBLE_DEVICES`` selects which GPUs the server may use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tensorflow as tf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevicePlan:
    gpus: tuple[str, ...]
    memory_growth: bool

    @property
    def device(self) -> str:
        return "/device:GPU:0" if self.gpus else "/device:CPU:0"


def configure_devices(per_process_gpu_memory_fraction: float = 0.0) -> DevicePlan:
    """Applies the GPU memory policy to TF's eager runtime; returns where models will run."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        log.info("No GPU visible to TensorFlow: models run on the CPU")
        return DevicePlan((), False)
    # A fraction is a hard per-process cap applied by each session's ConfigProto; growth is
    # the default otherwise (TF Serving's behaviour), both for sessions and the eager runtime.
    growth = per_process_gpu_memory_fraction <= 0
    if growth:
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # the runtime already started; sessions still get allow_growth
                log.warning(
                    "GPU memory growth could not be set for %s: runtime already started", gpu.name
                )
    names = tuple(gpu.name for gpu in gpus)
    log.info(
        "Models run on %s (memory %s)",
        ", ".join(names),
        "growth" if growth else f"capped at {per_process_gpu_memory_fraction:.0%} per process",
    )
    return DevicePlan(names, growth)
