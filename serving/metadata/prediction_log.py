"""Sampled prediction logging: TFRecord shards of TF Serving's ``PredictionLog`` + a join index.

The request path pays for one ``random()`` and, when sampled, one ``put_nowait`` of references
to arrays/protos it already has. Everything else (tensor protos, tf.Examples, file writes,
shard rotation, spooling the shard's metadata report) happens on one writer thread. A full
queue drops the record and counts it rather than slowing the request.

``PredictionLog`` has no request-id field (TF Serving joins nothing), so the id lives in the
index next to the shards; the shards stay readable by TFX tooling (warm-up, BulkInferrer).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from serving.api import request_context
from serving.api.inference import ResolvedSpec
from serving.metadata import reports
from serving.metadata.prediction_index import PredictionIndex
from serving.metadata.sampling import SamplingRates
from serving.metadata.spool import Spool

log = logging.getLogger(__name__)

EpisodeLookup = Callable[[str, int], "str | None"]
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class _Entry:
    kind: str  # predict | classify | regress
    model: str
    version: int
    signature: str
    request_id: str
    timestamp: float
    request: object  # inputs mapping (predict) or input_pb2.Input
    response: object  # outputs mapping (predict) or a Classification/RegressionResult


@dataclass
class _Shard:
    path: str
    writer: tf.io.TFRecordWriter
    opened: float
    records: int = 0
    episode_id: str | None = None
    shard_id: str = field(default="")


class PredictionLogger:
    def __init__(
        self,
        directory: str,
        rates: SamplingRates,
        server_id: str,
        episodes: EpisodeLookup,
        spool: Spool | None = None,
        shard_max_records: int = 1000,
        shard_max_seconds: float = 60.0,
        queue_size: int = 10_000,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.index = PredictionIndex(self.directory)
        self._rates = rates
        self._server_id = server_id
        self._episodes = episodes
        self._spool = spool
        self._max_records = shard_max_records
        self._max_seconds = shard_max_seconds
        self._queue: queue.Queue[_Entry | None] = queue.Queue(queue_size)
        self._shards: dict[tuple[str, int], _Shard] = {}
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ request path
    def on_inference(self, kind: str, spec: ResolvedSpec, request, response) -> None:
        """An :class:`~serving.api.inference.InferenceObserver`: called after a successful
        inference with the spec that answered; must stay cheap (it only enqueues)."""
        rate = self._rates.rate(spec.name)
        if rate <= 0.0 or (rate < 1.0 and random.random() >= rate):
            return
        rid = request_context.current.get() or request_context.accept(None)
        entry = _Entry(
            kind, spec.name, spec.version, spec.signature_name, rid, time.time(), request, response
        )
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.warning("Prediction log queue full: %d records dropped so far", self.dropped)

    def wait_idle(self, timeout: float) -> None:
        """Lets a feedback call see predictions made just before it: waits (at most
        ``timeout``) on the queue's own condition, notified when the writer finishes its last
        pending entry (what ``Queue.join`` waits on, with a bound)."""
        done = self._queue.all_tasks_done
        with done:
            done.wait_for(lambda: not self._queue.unfinished_tasks, timeout)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            try:
                entry = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._rotate(time.time())
                continue
            try:
                if entry is None:
                    return
                self._write(entry)
            except Exception:  # one bad record must not stop logging
                log.exception("Cannot log prediction %s", entry.request_id if entry else "")
            finally:
                self._queue.task_done()
            if self._queue.empty():
                self._flush()
                self._rotate(time.time())

    def _write(self, entry: _Entry) -> None:
        shard = self._shard(entry)
        record = _prediction_log(entry)
        shard.writer.write(record.SerializeToString())
        rows = _rows(entry)
        self.index.add(
            entry.request_id,
            entry.model,
            str(entry.version),
            entry.kind,
            shard.path,
            shard.shard_id,
            shard.episode_id,
            rows,
        )
        shard.records += 1

    def _shard(self, entry: _Entry) -> _Shard:
        key = (entry.model, entry.version)
        shard = self._shards.get(key)
        if shard is not None and shard.records >= self._max_records:
            self._close(key)
            shard = None
        if shard is None:
            folder = os.path.join(self.directory, _SAFE.sub("_", entry.model), str(entry.version))
            os.makedirs(folder, exist_ok=True)
            stamp = int(entry.timestamp * 1000)
            name = f"{_SAFE.sub('_', self._server_id)}-{stamp}.tfrecord"
            path = os.path.join(folder, name)
            shard = _Shard(path, tf.io.TFRecordWriter(path), entry.timestamp)
            shard.episode_id = self._episodes(entry.model, entry.version)
            shard.shard_id = f"predlog:{path}"
            self._shards[key] = shard
        return shard

    def _flush(self) -> None:
        for shard in self._shards.values():
            shard.writer.flush()

    def _rotate(self, now: float) -> None:
        for key, shard in list(self._shards.items()):
            if now - shard.opened >= self._max_seconds:
                self._close(key)

    def _close(self, key: tuple[str, int]) -> None:
        shard = self._shards.pop(key)
        shard.writer.close()
        if self._spool is None or not shard.records:
            return
        self._spool.append(
            reports.PREDICTION_LOG,
            shard.shard_id,
            {
                "shard_id": shard.shard_id,
                "episode_id": shard.episode_id,
                "uri": shard.path,
                "num_records": shard.records,
                "window_start_ms": shard.opened * 1000,
                "window_end_ms": time.time() * 1000,
                "model_name": key[0],
                "model_version": str(key[1]),
                "server_id": self._server_id,
            },
        )

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        for key in list(self._shards):
            self._close(key)
        self.index.close()


# ---------------------------------------------------------------------- serialization
def _spec(entry: _Entry, proto) -> None:
    proto.name = entry.model
    proto.version.value = entry.version
    proto.signature_name = entry.signature


def _prediction_log(entry: _Entry) -> prediction_log_pb2.PredictionLog:
    record = prediction_log_pb2.PredictionLog()
    _spec(entry, record.log_metadata.model_spec)
    record.log_metadata.timestamp_secs = int(entry.timestamp)
    if entry.kind == "predict":
        request = predict_pb2.PredictRequest()
        _spec(entry, request.model_spec)
        for alias, value in entry.request.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        response = predict_pb2.PredictResponse()
        _spec(entry, response.model_spec)
        for alias, value in entry.response.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        record.predict_log.request.CopyFrom(request)
        record.predict_log.response.CopyFrom(response)
    elif entry.kind == "classify":
        # The request path's messages are serving.protos classes (another descriptor pool):
        # they cross into TensorFlow's PredictionLog through their bytes, here on the writer.
        request = classification_pb2.ClassificationRequest()
        request.input.MergeFromString(entry.request.SerializeToString())
        _spec(entry, request.model_spec)
        record.classify_log.request.CopyFrom(request)
        record.classify_log.response.result.MergeFromString(entry.response.SerializeToString())
        _spec(entry, record.classify_log.response.model_spec)
    else:
        request = regression_pb2.RegressionRequest()
        request.input.MergeFromString(entry.request.SerializeToString())
        _spec(entry, request.model_spec)
        record.regress_log.request.CopyFrom(request)
        record.regress_log.response.result.MergeFromString(entry.response.SerializeToString())
        _spec(entry, record.regress_log.response.model_spec)
    return record


def _rows(entry: _Entry) -> list[tuple[bytes, float | None]]:
    """(serialized tf.Example of the features, score) per row of the request."""
    if entry.kind == "predict":
        examples = _examples_from_tensors(entry.request)
        scores = _scores_from_tensors(entry.response, len(examples))
        return list(zip((e.SerializeToString() for e in examples), scores, strict=True))
    examples = _examples_from_input(entry.request)
    if entry.kind == "classify":
        scores = [_class_score(c) for c in entry.response.classifications]
    else:
        scores = [float(r.value) for r in entry.response.regressions]
    return list(zip(examples, scores, strict=False))


def _examples_from_tensors(inputs: Mapping[str, np.ndarray]) -> list[tf.train.Example]:
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    batch = max((a.shape[0] if a.ndim else 1) for a in arrays.values()) if arrays else 0
    examples = [tf.train.Example() for _ in range(batch)]
    for alias, array in arrays.items():
        rows = array if array.ndim else array.reshape(1)
        for i, example in enumerate(examples[: len(rows)]):
            values = np.asarray(rows[i]).reshape(-1)
            feature = example.features.feature[alias]
            if values.dtype.kind == "f":
                feature.float_list.value.extend(values.astype(float).tolist())
            elif values.dtype.kind in "iub":
                feature.int64_list.value.extend(values.astype(np.int64).tolist())
            else:
                feature.bytes_list.value.extend(
                    v if isinstance(v, bytes) else str(v).encode() for v in values
                )
    return examples


def _scores_from_tensors(outputs: Mapping[str, np.ndarray], batch: int) -> list[float | None]:
    """One number per row when the output has one (or a two-class softmax has its positive)."""
    numeric = [k for k in sorted(outputs) if np.asarray(outputs[k]).dtype.kind in "fiu"]
    if not numeric:
        return [None] * batch
    array = np.asarray(outputs[numeric[0]])
    scores: list[float | None] = []
    for i in range(batch):
        values = array[i].reshape(-1) if array.ndim else array.reshape(-1)
        if values.size == 1:
            scores.append(float(values[0]))
        elif values.size == 2:
            scores.append(float(values[1]))
        else:
            scores.append(None)
    return scores


def _examples_from_input(inp: input_pb2.Input) -> list[bytes]:
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in inp.example_list.examples]
    if kind == "example_list_with_context":
        merged = []
        context = inp.example_list_with_context.context
        for example in inp.example_list_with_context.examples:
            combined = type(context)()  # the context's own class (either descriptor pool)
            combined.CopyFrom(context)
            combined.MergeFrom(example)
            merged.append(combined.SerializeToString())
        return merged
    return []


def _class_score(classification) -> float | None:
    classes = list(classification.classes)
    for c in classes:
        if c.label == "1":
            return float(c.score)
    return float(max(c.score for c in classes)) if classes else None
