"""TF Serving's ``BatchingParameters`` text proto, parsed with protobuf's own text format.

``BatchingParameters`` lives in ``session_bundle_config.proto``, which tensorflow-serving-api does
not ship; :mod:`serving.config_protos` declares it with TF Serving's field names and numbers.
Parsing then accepts exactly what ``--batching_parameters_file`` accepts upstream,
wrapper syntax included (``max_batch_size { value: 128 }``), and unset wrappers stay
distinguishable from zero, which is what the defaults below depend on.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from google.protobuf.message import Message

from serving.config_protos import BatchingParameters, parse_text_proto, read_text_proto
from serving.errors import ConfigError

# TF Serving's defaults for unset fields (BasicBatchScheduler::Options, batching_session.h).
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_THREAD_POOL_NAME = "batch_threads"
PER_MODEL_FILE = "batching_params.pbtxt"


class BatchingConfigError(ConfigError):
    """A batching parameters file that TF Serving would refuse; the message names the fix."""


@dataclass(frozen=True)
class BatchingConfig:
    """``BatchingParameters`` with TF Serving's defaults applied and its checks passed."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = 0  # 0: one per CPU, TF Serving's port::MaxParallelism()
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: same as max_batch_size
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @property
    def execution_batch_size(self) -> int:
        """The most rows one model call gets (differs from max_batch_size only when splitting)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    @property
    def threads(self) -> int:
        return self.num_batch_threads or os.cpu_count() or 1

    def padded_size(self, rows: int) -> int:
        """The smallest allowed batch size holding ``rows`` (``rows`` when none are set)."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


def parse_batching_parameters(text: str, source: str = "<string>") -> BatchingConfig:
    message = parse_text_proto(text, BatchingParameters(), BatchingConfigError, source)
    return _resolve(message, source)


def read_batching_parameters(path: str) -> BatchingConfig:
    return _resolve(read_text_proto(path, BatchingParameters(), BatchingConfigError), path)


def _value(message: Message, field: str, default):
    return getattr(message, field).value if message.HasField(field) else default


def _resolve(message: Message, source: str) -> BatchingConfig:
    config = BatchingConfig(
        max_batch_size=_value(message, "max_batch_size", DEFAULT_MAX_BATCH_SIZE),
        batch_timeout_micros=_value(message, "batch_timeout_micros", 0),
        max_enqueued_batches=_value(message, "max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
        num_batch_threads=_value(message, "num_batch_threads", 0),
        thread_pool_name=_value(message, "thread_pool_name", DEFAULT_THREAD_POOL_NAME),
        enable_large_batch_splitting=_value(message, "enable_large_batch_splitting", False),
        max_execution_batch_size=_value(message, "max_execution_batch_size", 0),
        allowed_batch_sizes=tuple(message.allowed_batch_sizes),
        pad_variable_length_inputs=message.pad_variable_length_inputs,
    )
    _validate(config, source)
    return config


def _validate(config: BatchingConfig, source: str) -> None:
    for name in ("max_batch_size", "max_enqueued_batches"):
        if getattr(config, name) < 1:
            raise BatchingConfigError(f"{source}: {name} must be >= 1")
    if config.num_batch_threads < 0 or config.batch_timeout_micros < 0:
        raise BatchingConfigError(f"{source}: num_batch_threads and batch_timeout_micros >= 0")
    if config.enable_large_batch_splitting and config.max_execution_batch_size > (
        config.max_batch_size
    ):
        raise BatchingConfigError(
            f"{source}: max_execution_batch_size ({config.max_execution_batch_size}) must be "
            f"<= max_batch_size ({config.max_batch_size})"
        )
    sizes = config.allowed_batch_sizes
    if not sizes:
        return
    if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
        raise BatchingConfigError(
            f"{source}: allowed_batch_sizes must be positive and strictly increasing; got "
            f"{list(sizes)}"
        )
    expected = config.execution_batch_size
    if sizes[-1] != expected:
        # bundle_factory_util.cc's message.
        raise BatchingConfigError(
            f"{source}: Last entry in allowed_batch_sizes must match max_batch_size; last "
            f"entry was {sizes[-1]}; expected {expected}"
        )
