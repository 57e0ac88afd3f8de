"""The example pipeline pushing into both buckets, Beam options passed through, lineage intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid

import psutil
import pytest
from ml_metadata import metadata_store
from tfx.orchestration import metadata

from components.bucket_store import BucketModelStore
from pipelines import serving_demo
from tests.support.server_process import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.integration

MULTI_PROCESSING = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"


class BeamWorkerWatcher:
    """Samples this process's descendants for Beam SDK worker processes while a run lasts:
    multi_processing direct mode runs each worker as ``python -m
    apache_beam.runners.worker.sdk_worker_main`` (under a ``/bin/sh -c``, not counted),
    in_memory mode runs none."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.most_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.1):
            seen = set()
            for child in me.children(recursive=True):
                try:
                    if _WORKER_MODULE in child.cmdline():
                        seen.add(child.pid)
                except psutil.Error:
                    continue
            self.pids |= seen
            self.most_at_once = max(self.most_at_once, len(seen))

    def __enter__(self) -> BeamWorkerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def _last_pushed_model(metadata_path: str):
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    return max(store.get_artifacts_by_type("PushedModel"), key=lambda a: a.id)


def test_example_pipeline_pushes_to_each_bucket_and_lineage_shows_the_uris(emulators, tmp_path):
    workdir = str(tmp_path / "demo")
    metadata_path = os.path.join(workdir, "metadata.sqlite")
    run = uuid.uuid4().hex[:8]
    stores = {scheme: emulators[scheme].uri(f"pipeline-{run}", "demo") for scheme in ("gs", "s3")}

    with BeamWorkerWatcher() as beam:
        serving_demo.run_local(
            workdir,
            train_steps=5,
            serving_model_dir=stores["gs"],
            beam_pipeline_args=MULTI_PROCESSING,
        )
    # --beam_pipeline_args reached CsvExampleGen: two SDK worker processes ran it.
    assert beam.most_at_once == 2, beam.pids
    pushed = {"gs": _last_pushed_model(metadata_path)}

    with BeamWorkerWatcher() as beam:
        serving_demo.run_local(workdir, train_steps=5, serving_model_dir=stores["s3"])
    assert beam.pids == set()  # the default stays in_memory, single process
    pushed["s3"] = _last_pushed_model(metadata_path)

    for scheme, artifact in pushed.items():
        version = artifact.custom_properties["pushed_version"].string_value
        destination = artifact.custom_properties["pushed_destination"].string_value
        assert destination == f"{stores[scheme]}/{version}"
        assert BucketModelStore(stores[scheme]).versions() == [int(version)]

    # A server with MLMD reporting loads the s3 version; lineage shows the bucket URIs as is.
    version = pushed["s3"].custom_properties["pushed_version"].string_value
    with ServerProcess(
        [
            f"--model_name={serving_demo.MODEL_NAME}",
            f"--model_base_path={stores['s3']}",
            f"--model_cache_dir={tmp_path / 'cache'}",
            f"--metadata_connection=sqlite://{metadata_path}",
            f"--metadata_spool_dir={tmp_path / 'spool'}",
        ]
    ) as server:
        assert server.available_versions(serving_demo.MODEL_NAME) == [int(version)]

        def lineage():
            result = subprocess.run(
                [
                    sys.executable, "-m", "serving.metadata.lineage",
                    f"--metadata_connection=sqlite://{metadata_path}", "--json",
                    "version", serving_demo.MODEL_NAME, version,
                ],
                cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if result.returncode != 0:
                return None
            view = json.loads(result.stdout)
            return view if view.get("servers") else None

        view = server.wait_for(lineage, timeout=120, interval=1.0)
    properties = view["pushed_model"]["properties"]
    assert properties["pushed_destination"] == f"{stores['s3']}/{version}"
    assert view["pushed_model"]["external"] is False  # matched to the pipeline's PushedModel
    assert view["pipeline"] == serving_demo.PIPELINE_NAME


def test_kubeflow_compile_passes_beam_args_and_bucket_store_through(tmp_path):
    output = tmp_path / "pipeline.json"
    dataflow = "--runner=DataflowRunner --project=p --region=r --temp_location=gs://b/tmp"

    assert serving_demo.main(
        [
            "compile-kubeflow", "--image=registry.local/components:test",
            "--pipeline_root=gs://b/root", "--data_root=gs://b/data",
            "--serving_model_dir=gs://b/models/demo", f"--output={output}",
            f"--beam_pipeline_args={dataflow}",
        ]
    ) == 0  # fmt: skip

    job = json.loads(output.read_text())
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    assert executors["CsvExampleGen_executor"]["container"]["args"][-4:] == dataflow.split()
    assert "gs://b/models/demo" in json.dumps(job["pipelineSpec"]["root"])
