"""Kubeflow Pipelines v2: compiled spec structure and our executors under TFX's KFP entrypoint."""

from __future__ import annotations

import json
import os

import pytest
from tfx.proto import pusher_pb2
from tfx.utils import proto_utils

from pipelines import serving_demo
from tests.support.kfp import kfp_artifact, run_kfp_v2_executor

IMAGE = "registry.local/tfx-serving-suite:test"
NODES = ["CsvExampleGen", "Trainer", "Exporter", "InfraValidator", "Pusher"]


@pytest.fixture(scope="module")
def pipeline_job(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("kfp") / "pipeline.json"
    serving_demo.compile_kubeflow(
        image=IMAGE,
        pipeline_root="gs://bucket/root",
        data_root="gs://bucket/data",
        serving_model_dir="/mnt/models/demo",
        output=str(out),
    )
    return json.loads(out.read_text())


def test_compiled_tasks_images_and_executors(pipeline_job):
    spec = pipeline_job["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "tfx-serving-demo"
    assert sorted(spec["root"]["dag"]["tasks"]) == sorted(NODES)
    executors = spec["deploymentSpec"]["executors"]
    for node, executor_class in [
        ("Exporter", "components.exporter.executor.Executor"),
        ("InfraValidator", "components.infra_validator.executor.Executor"),
        ("Pusher", "components.pusher.executor.Executor"),
    ]:
        container = executors[f"{node}_executor"]["container"]
        assert container["image"] == IMAGE
        assert container["command"][-1] == (
            "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
        )
        assert container["args"][:2] == ["--executor_class_path", executor_class]


def test_compiled_artifact_types_are_stock(pipeline_job):
    components = pipeline_job["pipelineSpec"]["components"]

    def output_title(node, key):
        artifact = components[f"{node}"]["outputDefinitions"]["artifacts"][key]
        return artifact["artifactType"]["instanceSchema"].splitlines()[0]

    assert output_title("Exporter", "exported_model") == "title: tfx.Model"
    assert output_title("InfraValidator", "blessing") == "title: tfx.InfraBlessing"
    assert output_title("Pusher", "pushed_model") == "title: tfx.PushedModel"
    pusher_params = components["Pusher"]["inputDefinitions"]["parameters"]
    assert {"push_destination", "keep_last_versions"} <= set(pusher_params)


def test_illegal_kubeflow_pipeline_name_is_rejected_with_rule(tmp_path):
    with pytest.raises(ValueError, match="lowercase letters, digits and '-'"):
        serving_demo.compile_kubeflow(
            image=IMAGE,
            pipeline_root="gs://b/r",
            data_root="gs://b/d",
            serving_model_dir="/m",
            output=str(tmp_path / "p.yaml"),
            pipeline_name="Serving_Demo",
        )


@pytest.mark.parametrize(("blessed", "pushed"), [(1.0, 1.0), (0.0, 0.0)])
def test_pusher_runs_under_kfp_v2_entrypoint(tmp_path, make_model_uri, blessed, pushed):
    model_uri = make_model_uri(str(tmp_path / "model"))
    store = str(tmp_path / "store")
    output_file = tmp_path / "task" / "output_metadata.json"
    executor_input = {
        "inputs": {
            "artifacts": {
                "model": kfp_artifact(model_uri, "tfx.Model"),
                # Custom properties arrive as JSON numbers, as KFP stores them.
                "infra_blessing": kfp_artifact(
                    str(tmp_path / "blessing"), "tfx.InfraBlessing", {"blessed": blessed}
                ),
            },
            # PipelineSpec 2.0.0 (KubeflowV2DagRunner's default) passes legacy typed parameters.
            "parameters": {
                "push_destination": {
                    "stringValue": proto_utils.proto_to_json(
                        pusher_pb2.PushDestination(
                            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=store)
                        )
                    )
                },
                "keep_last_versions": {"intValue": "2"},
            },
        },
        "outputs": {
            "artifacts": {
                "pushed_model": kfp_artifact(str(tmp_path / "pushed"), "tfx.PushedModel")
            },
            "outputFile": str(output_file),
        },
    }
    os.makedirs(tmp_path / "pushed")

    run_kfp_v2_executor("components.pusher.executor.Executor", executor_input)

    output = json.loads(output_file.read_text())
    metadata = output["artifacts"]["pushed_model"]["artifacts"][0]["metadata"]
    assert metadata["pushed"] == pushed
    if pushed:
        assert metadata["pushed_version"].isdigit()
        assert os.listdir(store) == [metadata["pushed_version"]]
        assert metadata["manifest_digest"]
    else:
        assert not os.path.exists(store)


def test_feedback_example_gen_compiles_and_refuses_to_run_without_its_driver(tmp_path):
    """KFP v2 compiles the component (its custom driver is not part of the spec), but TFX
    1.16's KFP launcher runs no custom drivers, so the executor stops with the reason instead of
    re-emitting feedback it cannot know it already emitted."""
    from tfx import v1 as tfx

    from components.feedback_example_gen.component import FeedbackExampleGen

    feedback = FeedbackExampleGen(model_name="demo", prediction_log_dirs=["/mnt/predictions"])
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=IMAGE),
        output_dir=str(tmp_path),
        output_filename="feedback.json",
    )
    job = runner.run(
        tfx.dsl.Pipeline(
            pipeline_name="feedback-only", pipeline_root="gs://b/r", components=[feedback]
        ),
        write_out=False,
    )
    spec = job["pipelineSpec"]
    container = spec["deploymentSpec"]["executors"]["FeedbackExampleGen_executor"]["container"]
    assert container["args"][:2] == [
        "--executor_class_path",
        "components.feedback_example_gen.executor.Executor",
    ]
    output = spec["components"]["FeedbackExampleGen"]["outputDefinitions"]["artifacts"]
    assert output["examples"]["artifactType"]["instanceSchema"].startswith("title: tfx.Examples")

    executor_input = {
        "inputs": {
            "parameters": {
                "model_name": {"stringValue": "demo"},
                "prediction_log_dirs": {"stringValue": json.dumps([str(tmp_path / "logs")])},
            }
        },
        "outputs": {
            "artifacts": {"examples": kfp_artifact(str(tmp_path / "out"), "tfx.Examples")},
            "outputFile": str(tmp_path / "task" / "output_metadata.json"),
        },
    }
    with pytest.raises(RuntimeError, match="runs no custom drivers"):
        run_kfp_v2_executor("components.feedback_example_gen.executor.Executor", executor_input)


def test_demo_with_feedback_merge_does_not_compile_for_kubeflow_v2(tmp_path):
    """The Trainer reads two producers' Examples (base + feedback): TFX 1.16's KFP v2 compiler
    accepts single-producer inputs only, as docs/metadata.md says."""
    from tfx import v1 as tfx

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=IMAGE),
        output_dir=str(tmp_path),
        output_filename="demo.json",
    )
    pipeline = serving_demo.create_pipeline(
        pipeline_root="gs://b/r",
        data_root="gs://b/d",
        serving_model_dir="/m",
        feedback_log_dirs=["/mnt/predictions"],
    )
    with pytest.raises(TypeError, match="Only single Channel is supported"):
        runner.run(pipeline, write_out=False)
