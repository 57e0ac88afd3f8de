"""End-to-end demo: CsvExampleGen -> Trainer (Keras) -> Exporter -> InfraValidator -> Pusher.

Run locally (LocalDagRunner, embedded SQLite MLMD)::

    python -m pipelines.serving_demo run --workdir /tmp/tfx-serving-demo

Close the loop (the server's ``--prediction_log_dir``; each run then also trains on the labels
posted since the previous run, see :class:`FeedbackMerge`)::

    python -m pipelines.serving_demo run --workdir /tmp/tfx-serving-demo \
        --feedback_log_dir /tmp/tfx-serving-demo/predictions

then serve the store it pushed to::

    python -m serving --model_name=demo --rest_api_port=8501 \
        --model_base_path=/tmp/tfx-serving-demo/models/demo

Running it again pushes a new version that an already running server picks up. Compile for
Kubeflow Pipelines v2 (the image must contain this package and ``tfx[kfp]==1.16.0``)::

    python -m pipelines.serving_demo compile-kubeflow --image registry/tfx-serving-suite:0.1 \
        --pipeline_root gs://bucket/root --data_root gs://bucket/data \
        --serving_model_dir /mnt/models/demo --output pipeline.yaml
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from absl import logging as absl_logging
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.exporter.component import Exporter
from components.feedback_example_gen.component import FeedbackExampleGen
from components.infra_validator.component import InfraValidator
from components.pusher.component import Pusher

PIPELINE_NAME = "tfx-serving-demo"
MODEL_NAME = "demo"
DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo")
CANARY_SIGNATURES = ("serving_default", "predict_examples", "regression")
_KFP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
FEEDBACK_SPLIT_NAMES = '["train", "eval"]'  # as serving.metadata.export registers them
FEEDBACK_NODE_ID = "FeedbackExampleGen"


@dataclass(frozen=True)
class FeedbackMerge:
    """How the Trainer combines base data with feedback (``docs/metadata.md``, merge policy).

    The Trainer reads this run's base ``Examples`` (ExampleGen, span 0) *and* the newest
    ``window_spans`` spans of FeedbackExampleGen. Each run emits one span (possibly empty), so
    the window is "labels posted during the last N runs": 1 (default) trains each label once,
    in the run right after it arrived; larger windows keep recent corrections in several runs.
    Rows are weighted, not duplicated, so a span holds exactly the labelled rows:
    ``corrected_weight`` for predictions the served model got wrong, ``feedback_weight`` for
    the other feedback rows, 1.0 for base rows (they carry no weight feature).
    """

    window_spans: int = 1
    feedback_weight: float = 1.0
    corrected_weight: float = 2.0

    def __post_init__(self) -> None:
        if self.window_spans < 1:
            raise ValueError(f"window_spans must be >= 1, got {self.window_spans}")


def _training_examples(
    example_gen, feedback_log_dirs: Sequence[str], merge: FeedbackMerge
) -> tuple[object, list]:
    """Base examples + the feedback window as one Trainer input, and the nodes that adds."""
    from tfx.dsl.input_resolution.canned_resolver_functions import rolling_range
    from tfx.types.channel_utils import union

    feedback = FeedbackExampleGen(
        model_name=MODEL_NAME,
        prediction_log_dirs=[os.path.abspath(d) for d in feedback_log_dirs],
        label_type="int",
        feedback_weight=merge.feedback_weight,
        corrected_weight=merge.corrected_weight,
    ).with_id(FEEDBACK_NODE_ID)
    # All spans this node ever published (not only this run's), newest window_spans of them;
    # the Trainer's explicit upstream edge makes this run's span one of them.
    window = rolling_range(
        tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.Examples,
            producer_component_id=FEEDBACK_NODE_ID,
            output_key="examples",
        ),
        num_spans=merge.window_spans,
        min_spans=1,
    )
    return union([example_gen.outputs["examples"], window]), [feedback]


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
    feedback_log_dirs: Sequence[str] = (),
    feedback_merge: FeedbackMerge | None = None,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
) -> tfx.dsl.Pipeline:
    """The pipeline; ``metadata_path`` (SQLite file) is for LocalDagRunner, None on Kubeflow.

    ``feedback_log_dirs``: the servers' ``--prediction_log_dir``s. A FeedbackExampleGen then
    emits the labels posted since its previous run and the Trainer reads base data plus the
    feedback window (``feedback_merge``). LocalDagRunner only: TFX 1.16's Kubeflow V2 compiler
    rejects the two-producer Trainer input ("Only single Channel is supported") and runs no
    custom drivers.

    ``feedback_examples``: a directory written by ``python -m serving.metadata.export`` (labelled
    live traffic). The Trainer then trains on it alone; the Importer reuses the Examples artifact
    the export registered, so lineage shows serving -> feedback -> this run.
    ``metadata_connection_config`` replaces the SQLite file (e.g. MySQL/MariaDB, PostgreSQL).
    """
    if feedback_examples and feedback_log_dirs:
        raise ValueError("Use feedback_log_dirs (in-pipeline) or feedback_examples, not both")
    example_gen = tfx.components.CsvExampleGen(input_base=data_root)
    training_data = example_gen.outputs["examples"]
    extra_nodes = []
    if feedback_log_dirs:
        training_data, extra_nodes = _training_examples(
            example_gen, feedback_log_dirs, feedback_merge or FeedbackMerge()
        )
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
    for node in extra_nodes:
        trainer.add_upstream_node(node)
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
        # Deterministic, single-process Beam for ExampleGen (see reference notes on Prism).
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
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
    feedback_log_dirs: Sequence[str] = (),
    feedback_merge: FeedbackMerge | None = None,
) -> str:
    """Runs the pipeline on LocalDagRunner; returns the model store's base directory."""
    workdir = os.path.abspath(workdir)
    metadata_path = os.path.join(workdir, "metadata.sqlite")
    serving_model_dir = os.path.join(workdir, "models", MODEL_NAME)
    pipeline = create_pipeline(
        pipeline_root=os.path.join(workdir, "pipeline_root"),
        data_root=DATA_ROOT,
        serving_model_dir=serving_model_dir,
        metadata_path=metadata_path,
        train_steps=train_steps,
        feedback_examples=feedback_examples,
        feedback_log_dirs=feedback_log_dirs,
        feedback_merge=feedback_merge,
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
        "--feedback_log_dir",
        action="append",
        default=[],
        help="a server's --prediction_log_dir (repeat per server): also train on the labels "
        "posted since the previous run (FeedbackExampleGen)",
    )
    run.add_argument(
        "--feedback_window_spans",
        type=int,
        default=FeedbackMerge.window_spans,
        help="train on the feedback spans of the last N runs (default 1: this run's)",
    )
    run.add_argument(
        "--feedback_weight",
        type=float,
        default=FeedbackMerge.feedback_weight,
        help="weight of a feedback row (base rows weigh 1.0)",
    )
    run.add_argument(
        "--corrected_weight",
        type=float,
        default=FeedbackMerge.corrected_weight,
        help="weight of a feedback row the served model got wrong",
    )
    kfp = commands.add_parser("compile-kubeflow", help="compile for Kubeflow Pipelines v2")
    kfp.add_argument("--image", required=True, help="components image (this package + tfx)")
    kfp.add_argument("--pipeline_root", required=True)
    kfp.add_argument("--data_root", required=True)
    kfp.add_argument("--serving_model_dir", required=True, help="POSIX path (PVC/NFS) in pods")
    kfp.add_argument("--pipeline_name", default=PIPELINE_NAME)
    kfp.add_argument("--output", default="pipeline.yaml")
    args = parser.parse_args(argv)

    # Progress: TFX logs "Component <id> is running/finished" through absl at INFO.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    absl_logging.set_verbosity(absl_logging.INFO)
    if args.command == "run":
        run_local(
            args.workdir,
            args.train_steps,
            args.feedback_examples,
            args.feedback_log_dir,
            FeedbackMerge(args.feedback_window_spans, args.feedback_weight, args.corrected_weight),
        )
    else:
        compile_kubeflow(
            image=args.image,
            pipeline_root=args.pipeline_root,
            data_root=args.data_root,
            serving_model_dir=args.serving_model_dir,
            output=args.output,
            pipeline_name=args.pipeline_name,
        )
        print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
