"""End-to-end demo: CsvExampleGen -> Trainer (Keras) -> Exporter -> InfraValidator -> Pusher.

Run locally (LocalDagRunner, embedded SQLite MLMD)::

    python -m pipelines.serving_demo run --workdir /tmp/tfx-serving-demo

then serve the store it pushed to::

    python -m serving --model_name=demo --rest_api_port=8501 \
        --model_base_path=/tmp/tfx-serving-demo/models/demo

Running it again pushes a new version that an already running server picks up. Compile for
Kubeflow Pipelines v2 (the image must contain this package and ``tfx[kfp]==1.16.0``)::

    python -m pipelines.serving_demo compile-kubeflow --image registry/tfx-serving-suite:0.1 \
        --pipeline_root gs://bucket/root --data_root gs://bucket/data \
        --serving_model_dir gs://bucket/models/demo --output pipeline.yaml \
        --beam_pipeline_args="--runner=DataflowRunner --project=P --region=R \
            --temp_location=gs://bucket/tmp"

``--serving_model_dir`` is a POSIX path or a ``gs://`` / ``s3://`` URI (docs/object-stores.md);
``--beam_pipeline_args`` go to every Beam-based component (CsvExampleGen here) unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import time

from absl import logging as absl_logging
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.exporter.component import Exporter
from components.infra_validator.component import InfraValidator
from components.pusher.component import Pusher

PIPELINE_NAME = "tfx-serving-demo"
MODEL_NAME = "demo"
DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo")
CANARY_SIGNATURES = ("serving_default", "predict_examples", "regression")
_KFP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
FEEDBACK_SPLIT_NAMES = '["train", "eval"]'  # as serving.metadata.export registers them
# Deterministic, single-process Beam for ExampleGen (see reference notes on Prism); replaced
# whole by --beam_pipeline_args (e.g. Dataflow, Flink, or multi_processing direct mode).
DEFAULT_BEAM_PIPELINE_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")


def create_pipeline(
    *,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    metadata_path: str | None = None,
    pipeline_name: str = PIPELINE_NAME,
    train_steps: int = 20,
    eval_steps: int = 5,
    keep_last_versions: int = 5,
    feedback_examples: str | None = None,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> tfx.dsl.Pipeline:
    """The pipeline; ``metadata_path`` (SQLite file) is for LocalDagRunner, None on Kubeflow.

    ``feedback_examples``: a directory written by ``python -m serving.metadata.export`` (labelled
    live traffic). The Trainer then trains on it; the Importer reuses the Examples artifact the
    export registered, so lineage shows serving -> feedback -> this run.
    ``metadata_connection_config`` replaces the SQLite file (e.g. MySQL/MariaDB).
    """
    example_gen = tfx.components.CsvExampleGen(input_base=data_root)
    training_data = example_gen.outputs["examples"]
    extra_nodes = []
    if feedback_examples:
        feedback = tfx.dsl.Importer(
            source_uri=os.path.abspath(feedback_examples),
            artifact_type=tfx.types.standard_artifacts.Examples,
            reimport=False,
            properties={"split_names": FEEDBACK_SPLIT_NAMES},
        ).with_id("feedback_importer")
        training_data = feedback.outputs["result"]
        extra_nodes.append(feedback)
    trainer = tfx.components.Trainer(
        run_fn="pipelines.trainer_module.run_fn",
        examples=training_data,
        train_args=tfx.proto.TrainArgs(num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
    )
    exporter = Exporter(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        num_warmup_examples=2,
        warmup_split="eval",
    )
    infra_validator = InfraValidator(
        model=exporter.outputs["exported_model"],
        examples=example_gen.outputs["examples"],
        serving_spec=tfx.proto.ServingSpec(model_name=MODEL_NAME),
        request_spec=tfx.proto.RequestSpec(
            tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(
                signature_names=list(CANARY_SIGNATURES)
            ),
            split_name="eval",
            num_examples=2,
        ),
        validation_spec=tfx.proto.ValidationSpec(max_loading_time_seconds=180, num_tries=2),
    )
    pusher = Pusher(
        model=exporter.outputs["exported_model"],
        infra_blessing=infra_validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
        keep_last_versions=keep_last_versions,
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, *extra_nodes, trainer, exporter, infra_validator, pusher],
        enable_cache=False,
        metadata_connection_config=metadata_connection_config
        or (
            tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
            if metadata_path
            else None
        ),
        beam_pipeline_args=list(
            DEFAULT_BEAM_PIPELINE_ARGS if beam_pipeline_args is None else beam_pipeline_args
        ),
    )


def run_summary(metadata_path: str) -> list[tuple[str, str, float]]:
    """(node, state, seconds) of every execution in the latest run, from MLMD."""
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
    )
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return []
    latest = max(runs, key=lambda c: c.create_time_since_epoch)
    executions = sorted(store.get_executions_by_context(latest.id), key=lambda e: e.id)
    types_by_id = {t.id: t.name for t in store.get_execution_types()}
    return [
        (
            types_by_id[e.type_id].rsplit(".", 1)[-1],
            metadata_store_pb2.Execution.State.Name(e.last_known_state),
            (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000,
        )
        for e in executions
    ]


def run_local(
    workdir: str,
    train_steps: int,
    feedback_examples: str | None = None,
    serving_model_dir: str | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> str:
    """Runs the pipeline on LocalDagRunner; returns the model store's base directory (a path,
    or the gs:// / s3:// URI given as ``serving_model_dir``)."""
    workdir = os.path.abspath(workdir)
    metadata_path = os.path.join(workdir, "metadata.sqlite")
    serving_model_dir = serving_model_dir or os.path.join(workdir, "models", MODEL_NAME)
    pipeline = create_pipeline(
        pipeline_root=os.path.join(workdir, "pipeline_root"),
        data_root=DATA_ROOT,
        serving_model_dir=serving_model_dir,
        metadata_path=metadata_path,
        train_steps=train_steps,
        feedback_examples=feedback_examples,
        beam_pipeline_args=beam_pipeline_args,
    )
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    for node, state, seconds in run_summary(metadata_path):
        print(f"  {node:<16} {state:<9} {seconds:7.1f} s")
    print(f"Pipeline finished in {time.time() - started:.0f} s; model store: {serving_model_dir}")
    return serving_model_dir


def compile_kubeflow(
    *,
    image: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    output: str,
    pipeline_name: str = PIPELINE_NAME,
    beam_pipeline_args: list[str] | None = None,
) -> dict:
    """Writes a KFP v2 PipelineSpec (``.yaml``) or PipelineJob (``.json``); returns it."""
    if not _KFP_NAME_RE.match(pipeline_name):
        raise ValueError(
            f"Pipeline name {pipeline_name!r} is illegal on Kubeflow: use lowercase letters, "
            "digits and '-' (e.g. 'my-pipeline'), at most 128 characters."
        )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output)),
        output_filename=os.path.basename(output),
    )
    return runner.run(
        create_pipeline(
            pipeline_root=pipeline_root,
            data_root=data_root,
            serving_model_dir=serving_model_dir,
            pipeline_name=pipeline_name,
            beam_pipeline_args=beam_pipeline_args,
        ),
        write_out=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.serving_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run on LocalDagRunner")
    run.add_argument("--workdir", default="demo-workdir")
    run.add_argument("--train_steps", type=int, default=20)
    run.add_argument(
        "--feedback_examples",
        default=None,
        help="train on labelled live traffic exported by python -m serving.metadata.export",
    )
    run.add_argument(
        "--serving_model_dir",
        default=None,
        help="model store to push to: a path or gs:// / s3:// URI (default <workdir>/models/demo)",
    )
    kfp = commands.add_parser("compile-kubeflow", help="compile for Kubeflow Pipelines v2")
    kfp.add_argument("--image", required=True, help="components image (this package + tfx)")
    kfp.add_argument("--pipeline_root", required=True)
    kfp.add_argument("--data_root", required=True)
    kfp.add_argument(
        "--serving_model_dir", required=True, help="POSIX path (PVC/NFS) in pods, or gs:// / s3://"
    )
    kfp.add_argument("--pipeline_name", default=PIPELINE_NAME)
    kfp.add_argument("--output", default="pipeline.yaml")
    for command in (run, kfp):
        command.add_argument(
            "--beam_pipeline_args",
            default=None,
            help="Beam options for CsvExampleGen, one string (e.g. '--runner=DataflowRunner "
            f"--project=P ...'); default: {' '.join(DEFAULT_BEAM_PIPELINE_ARGS)}",
        )
    args = parser.parse_args(argv)
    beam_args = None if args.beam_pipeline_args is None else shlex.split(args.beam_pipeline_args)

    # Progress: TFX logs "Component <id> is running/finished" through absl at INFO.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    absl_logging.set_verbosity(absl_logging.INFO)
    if args.command == "run":
        run_local(
            args.workdir,
            args.train_steps,
            args.feedback_examples,
            serving_model_dir=args.serving_model_dir,
            beam_pipeline_args=beam_args,
        )
    else:
        compile_kubeflow(
            image=args.image,
            pipeline_root=args.pipeline_root,
            data_root=args.data_root,
            serving_model_dir=args.serving_model_dir,
            output=args.output,
            pipeline_name=args.pipeline_name,
            beam_pipeline_args=beam_args,
        )
        print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
