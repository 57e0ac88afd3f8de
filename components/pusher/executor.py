"""Pusher executor: stock blessing checks, then an atomic, manifest-verified publish.

Subclasses the stock executor so ``CheckBlessing``/``GetModelPath`` (the documented extension
points) behave exactly as in TFX 1.16, including reading ``blessed`` through
``get_int_custom_property`` (floats on Kubeflow) and pushing ``stamped_model/`` from an
InfraBlessing. What differs is the publish itself -- rename-based into a POSIX store
(:mod:`components.model_store`), claim/marker-based into a ``gs://`` or ``s3://`` bucket
(:mod:`components.bucket_store`) -- and the PushedModel artifact: instead of a second full copy
of the model it holds the model's manifest, its ``pushed_destination`` is the version's path or
bucket URI as it is, and its custom properties add ``pushed_at`` and ``manifest_digest`` to the
stock three. Models whose artifacts live in a bucket pipeline root are read from there.
"""

from __future__ import annotations

import posixpath
import time
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import executor as stock_executor
from tfx.components.util import model_utils
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as stock
from tfx.utils import path_utils, proto_utils

from components import store_io
from components.manifest import MANIFEST_FILENAME, Manifest, build_manifest, manifest_path_for
from components.model_store import DEFAULT_STALE_INCOMING_SECONDS, open_model_store
from components.pusher.keys import (
    KEEP_LAST_VERSIONS_KEY,
    MANIFEST_DIGEST_KEY,
    PUSHED_AT_KEY,
    STALE_INCOMING_SECONDS_KEY,
)
from components.summary import log_summary

_Versioning = pusher_pb2.Versioning
PUSH_DESTINATION_REQUIRED = (
    "The Pusher needs push_destination, the model store the servers poll: "
    "Pusher(model=..., push_destination=tfx.proto.PushDestination("
    "filesystem=tfx.proto.PushDestination.Filesystem(base_directory='/models/<model name>')))."
)


class Executor(stock_executor.Executor):
    """Pushes the blessed model into a :class:`ModelStore`; unblessed → ``pushed=0``."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed_model = artifact_utils.get_single_instance(output_dict[stock.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed_model)
            log_summary("Pusher", f"NOT PUSHED: {_unblessed(input_dict)}")
            return
        base_directory = _filesystem_base_directory(exec_properties)
        store = open_model_store(base_directory)
        model_path = self.GetModelPath(input_dict)
        manifest = _source_manifest(model_path)
        # Written before publishing so nothing can fail between "version visible" and
        # "execution succeeded": a live version always has a complete PushedModel record.
        manifest.write(posixpath.join(pushed_model.uri, MANIFEST_FILENAME))
        stale = exec_properties.get(STALE_INCOMING_SECONDS_KEY)
        published = store.publish(
            model_path,
            manifest,
            stale_incoming_seconds=DEFAULT_STALE_INCOMING_SECONDS if stale is None else stale,
        )
        self._MarkPushed(
            pushed_model,
            pushed_destination=published.path,
            pushed_version=str(published.version),
        )
        pushed_model.set_int_custom_property(PUSHED_AT_KEY, int(time.time()))
        pushed_model.set_string_custom_property(MANIFEST_DIGEST_KEY, published.manifest_digest)
        keep_last = exec_properties.get(KEEP_LAST_VERSIONS_KEY)
        removed = store.retain(int(keep_last)) if keep_last else []
        kept = store.versions()
        policy = f"keep_last_versions={keep_last}" if keep_last else "no keep_last_versions"
        retention = f"removed {removed}" if removed else "removed nothing"
        log_summary(
            "Pusher",
            f"pushed version {published.version} to {base_directory}; store holds "
            f"{_versions_text(kept)}, {retention} ({policy}); manifest digest "
            f"{published.manifest_digest[:12]}, {len(manifest.files)} files, "
            f"{sum(e.size for e in manifest.files.values()) / (1 << 20):.1f} MiB",
        )

    def GetModelPath(self, input_dict: dict[str, list[types.Artifact]]) -> str:
        """The stock resolution, except that bucket URIs are resolved through the store
        clients (TensorFlow 2.16 cannot read ``s3://``, nor a GCS emulator)."""
        models = input_dict.get(stock.MODEL_KEY)
        if models:
            model = artifact_utils.get_single_instance(models)
            if store_io.is_bucket_uri(model.uri):
                return store_io.serving_model_path(
                    model.uri, path_utils.is_old_model_artifact(model)
                )
        return super().GetModelPath(input_dict)


def _unblessed(input_dict: dict[str, list[types.Artifact]]) -> str:
    """Which blessing said no, in the order the stock CheckBlessing looks at them."""
    for key, check, what in (
        (stock.MODEL_BLESSING_KEY, model_utils.is_model_blessed, "Evaluator/model validation"),
        (stock.INFRA_BLESSING_KEY, model_utils.is_infra_validated, "InfraValidator"),
    ):
        if input_dict.get(key):
            blessing = artifact_utils.get_single_instance(input_dict[key])
            if not check(blessing):
                reason = blessing.get_string_custom_property("reason_message") or (
                    blessing.get_string_custom_property("reason")
                )
                return f"the model was not blessed by the {what} ({blessing.uri})" + (
                    f": {reason}" if reason else ""
                )
    return "the model was not blessed"


def _versions_text(versions: list[int]) -> str:
    if len(versions) <= 4:
        return f"versions {versions}"
    return f"{len(versions)} versions ({versions[0]} .. {versions[-1]})"


def _filesystem_base_directory(exec_properties: dict[str, Any]) -> str:
    raw = exec_properties.get(stock.PUSH_DESTINATION_KEY)
    if not raw:
        raise ValueError(PUSH_DESTINATION_REQUIRED)
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(raw, destination)
    kind = destination.WhichOneof("destination")
    if kind != "filesystem":
        raise NotImplementedError(
            f"Push destination {kind!r} is not supported; use PushDestination.filesystem with "
            "a POSIX path or a gs:// / s3:// URI as base_directory."
        )
    if destination.filesystem.versioning not in (_Versioning.AUTO, _Versioning.UNIX_TIMESTAMP):
        raise NotImplementedError(
            f"Invalid Versioning {destination.filesystem.versioning}; only AUTO and "
            "UNIX_TIMESTAMP (TF Serving's integer versions) exist."
        )
    if not destination.filesystem.base_directory:
        raise ValueError("push_destination.filesystem.base_directory is empty.")
    return destination.filesystem.base_directory


def _source_manifest(model_path: str) -> Manifest:
    """The Exporter's/InfraValidator's manifest if present, else one built from the source now
    (models from a stock Trainer), so the copy is always verified byte for byte."""
    path = manifest_path_for(model_path)
    if store_io.exists(path):
        return Manifest.read(path)
    logging.info("No manifest at %s; hashing %s before pushing.", path, model_path)
    return build_manifest(model_path)
