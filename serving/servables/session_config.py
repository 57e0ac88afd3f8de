"""The TF ``ConfigProto`` every model session gets: threads, soft placement, GPU memory.

Placement is decided here once for the whole process so a model exported on a GPU host still
loads on a CPU-only one (soft placement) and a GPU host does not let one model grab all GPU
memory (memory growth, or a hard per-process fraction when the operator asks for it).
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorflow.core.protobuf import config_pb2


@dataclass(frozen=True)
class SessionSettings:
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    per_process_gpu_memory_fraction: float = 0.0


def build_session_config(settings: SessionSettings) -> config_pb2.ConfigProto:
    config = config_pb2.ConfigProto(
        intra_op_parallelism_threads=settings.intra_op_threads,
        inter_op_parallelism_threads=settings.inter_op_threads,
        allow_soft_placement=True,
    )
    if settings.per_process_gpu_memory_fraction > 0:
        config.gpu_options.per_process_gpu_memory_fraction = (
            settings.per_process_gpu_memory_fraction
        )
    else:
        config.gpu_options.allow_growth = True
    return config
