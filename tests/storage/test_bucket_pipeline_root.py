"""Exporter -> InfraValidator -> Pusher with every artifact in an s3:// pipeline root (which
TensorFlow 2.16 cannot read at all), pushing into a gs:// model store."""

from __future__ import annotations

import json
import uuid

import pytest
import tensorflow as tf
from tfx.proto import infra_validator_pb2, pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import store_io
from components.bucket_store import BucketModelStore
from components.exporter import executor as exporter
from components.infra_validator import executor as infra_validator
from components.manifest import Manifest
from components.pusher import executor as pusher

pytestmark = pytest.mark.integration


def _artifact(kind, uri: str):
    artifact = kind()
    artifact.uri = uri
    return artifact


def test_components_read_and_write_a_bucket_pipeline_root(
    emulators, trained_model_uri, examples_uri, tmp_path
):
    root = emulators["s3"].uri(f"root-{uuid.uuid4().hex[:8]}")
    store = emulators["gs"].uri(f"store-{uuid.uuid4().hex[:8]}", "m")
    store_io.upload_tree(trained_model_uri, f"{root}/Trainer/model/1")
    store_io.upload_tree(examples_uri, f"{root}/CsvExampleGen/examples/2")
    trained = _artifact(standard_artifacts.Model, f"{root}/Trainer/model/1")
    examples = _artifact(standard_artifacts.Examples, f"{root}/CsvExampleGen/examples/2")
    examples.split_names = '["train", "eval"]'

    exported = _artifact(standard_artifacts.Model, f"{root}/Exporter/exported_model/3")
    exporter.Executor().Do(
        {"model": [trained], "examples": [examples]}, {"exported_model": [exported]}, {}
    )
    assert exported.uri == f"{root}/Exporter/exported_model/3"  # MLMD sees the bucket URI
    manifest = Manifest.read(f"{exported.uri}/manifest.json")
    manifest.verify(f"{exported.uri}/Format-Serving")
    # The warmup records were built from the bucket's examples and uploaded with the model.
    warmup = tmp_path / "warmup"
    store_io.download_file(
        f"{exported.uri}/Format-Serving/assets.extra/tf_serving_warmup_requests", str(warmup)
    )
    records = sum(1 for _ in tf.data.TFRecordDataset(str(warmup)))
    assert records >= 1
    assert exported.get_int_custom_property("warmup_requests") == records

    blessing = _artifact(standard_artifacts.InfraBlessing, f"{root}/InfraValidator/blessing/4")
    request_spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
            signature_names=["serving_default"]
        ),
        split_name="eval",
        make_warmup=True,
    )
    infra_validator.Executor().Do(
        {"model": [exported], "examples": [examples]},
        {"blessing": [blessing]},
        {
            "serving_spec": proto_utils.proto_to_json(
                infra_validator_pb2.ServingSpec(model_name="canary")
            ),
            "validation_spec": proto_utils.proto_to_json(
                infra_validator_pb2.ValidationSpec(max_loading_time_seconds=120, num_tries=1)
            ),
            "request_spec": proto_utils.proto_to_json(request_spec),
        },
    )
    assert blessing.uri == f"{root}/InfraValidator/blessing/4"
    assert blessing.get_int_custom_property("blessed") == 1
    written = {o.key for o in store_io.list_objects(blessing.uri)}
    assert {"INFRA_BLESSED", "validation_report.json", "model_server.log"} <= written
    report = json.loads(store_io.read_bytes(f"{blessing.uri}/validation_report.json"))
    assert report["mode"] == "LOAD_AND_QUERY" and report["blessed"] is True
    Manifest.read(f"{blessing.uri}/manifest.json").verify(f"{blessing.uri}/stamped_model")

    pushed = _artifact(standard_artifacts.PushedModel, f"{root}/Pusher/pushed_model/5")
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=store)
    )
    pusher.Executor().Do(
        {"infra_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )
    (version,) = BucketModelStore(store).versions()
    assert pushed.get_string_custom_property("pushed_destination") == f"{store}/{version}"
    assert pushed.get_int_custom_property("pushed") == 1
    stamped = Manifest.read(f"{blessing.uri}/manifest.json")
    stamped.verify(f"{store}/{version}")
    assert Manifest.read(f"{pushed.uri}/manifest.json").digest == stamped.digest
