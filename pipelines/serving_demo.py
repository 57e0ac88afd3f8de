"""End-to-end demo: CsvExampleGen -> Trainer (Keras) -> Exporter -> InfraValidator -> Pusher.

Run locally (LocalDagRunner, embedded SQLite MLMD)::

    python -m pipelines.serving_demo run --workdir /tmp/tfx-serving-demo [--verbose]

(one progress line per component here; TFX's logs in ``<workdir>/logs/pipeline.log``, see
:mod:`pipelines.local_run`). Close the loop (the server's ``--prediction_log_dir``; each run
then also trains on the labels posted since the previous run, see :class:`FeedbackMerge`)::

    python -m pipelines.serving_demo run --workdir /tmp/tfx-serving-demo \
        --feedback_log_dir /tmp/tfx-serving-demo/predictions

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

``--serving_model_dir`` is a POSIX path or a ``gs://`` / ``s3://`` URI (docs/object-stores.md),
for ``run`` too; ``--beam_pipeline_args`` go to every Beam-based component (CsvExampleGen here)
unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # TFX is imported where it is used, so the progress front end starts at once.
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx

PIPELINE_NAME = "tfx-serving-demo"
MODEL_NAME = "demo"
DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo")
CANARY_SIGNATURES = ("serving_default", "predict_examples", "regression", "classification")
_KFP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
# Deterministic, single-process Beam for ExampleGen (see reference notes on Prism); replaced
# whole by --beam_pipeline_args (e.g. Dataflow, Flink, or multi_processing direct mode).
DEFAULT_BEAM_PIPELINE_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
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
    from tfx import v1 as tfx
    from tfx.dsl.input_resolution.canned_resolver_functions import rolling_range
    from tfx.types.channel_utils import union

    from components.feedback_example_gen.component import FeedbackExampleGen

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
    beam_pipeline_args: list[str] | None = None,
) -> tfx.dsl.Pipeline:
    """The pipeline; ``metadata_path`` (SQLite file) is for LocalDagRunner, None on Kubeflow.

    ``feedback_examples``: a directory written by ``python -m serving.metadata.export`` (labelled
    live traffic). The Trainer then trains on it alone; the Importer reuses the Examples artifact
    the export registered, so lineage shows serving -> feedback -> this run.
    ``feedback_log_dirs``: the servers' ``--prediction_log_dir``s. A FeedbackExampleGen then
    emits the labels posted since its previous run and the Trainer reads base data plus the
    feedback window (``feedback_merge``). LocalDagRunner only: TFX 1.16's Kubeflow V2 compiler
    rejects the two-producer Trainer input ("Only single Channel is supported") and runs no
    custom drivers.
    ``metadata_connection_config`` replaces the SQLite file (e.g. MySQL/MariaDB, PostgreSQL).
    """
    if feedback_examples and feedback_log_dirs:
        raise ValueError("Use feedback_log_dirs (in-pipeline) or feedback_examples, not both")
    from tfx import v1 as tfx

    from components.exporter.component import Exporter
    from components.infra_validator.component import InfraValidator
    from components.pusher.component import Pusher

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
    if feedback_log_dirs:
        training_data, extra_nodes = _training_examples(
            example_gen, feedback_log_dirs, feedback_merge or FeedbackMerge()
        )
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
        beam_pipeline_args=list(
            DEFAULT_BEAM_PIPELINE_ARGS if beam_pipeline_args is None else beam_pipeline_args
        ),
    )


def _latest_run(store: Any) -> Any:
    runs = store.get_contexts_by_type("pipeline_run")
    return max(runs, key=lambda c: c.create_time_since_epoch) if runs else None


def _store(metadata_path: str) -> Any:
    from ml_metadata import metadata_store
    from tfx import v1 as tfx

    return metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
    )


def run_summary(metadata_path: str) -> list[tuple[str, str, float]]:
    """(node id, state, seconds) of every execution in the latest run, from MLMD."""
    from ml_metadata.proto import metadata_store_pb2

    store = _store(metadata_path)
    latest = _latest_run(store)
    if latest is None:
        return []
    summary = []
    for execution in sorted(store.get_executions_by_context(latest.id), key=lambda e: e.id):
        # TFX puts every execution in a "node" context named "<pipeline>.<node id>".
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        node = nodes[0].split(".", 1)[-1] if nodes else str(execution.id)
        summary.append(
            (
                node,
                metadata_store_pb2.Execution.State.Name(execution.last_known_state),
                (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000,
            )
        )
    return summary


def latest_push(metadata_path: str) -> dict[str, Any]:
    """The PushedModel of the latest run: ``pushed`` (0/1), ``version``, ``destination``."""
    store = _store(metadata_path)
    latest = _latest_run(store)
    pushed = [
        a
        for a in (store.get_artifacts_by_context(latest.id) if latest else [])
        if a.type == "PushedModel"
    ]
    if not pushed:
        return {"pushed": 0}
    props = pushed[-1].custom_properties
    return {
        "pushed": int(props["pushed"].int_value) if "pushed" in props else 0,
        "version": props["pushed_version"].string_value if "pushed_version" in props else None,
        "destination": (
            props["pushed_destination"].string_value if "pushed_destination" in props else None
        ),
    }


def local_store(workdir: str, serving_model_dir: str | None = None) -> str:
    """The model store a local run pushes to: ``serving_model_dir`` (a path or a gs:// /
    s3:// URI) or ``<workdir>/models/demo``."""
    return serving_model_dir or os.path.join(os.path.abspath(workdir), "models", MODEL_NAME)


def local_pipeline(
    workdir: str,
    train_steps: int,
    feedback_examples: str | None = None,
    data_root: str = DATA_ROOT,
    feedback_log_dirs: Sequence[str] = (),
    feedback_merge: FeedbackMerge | None = None,
    *,
    serving_model_dir: str | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> tfx.dsl.Pipeline:
    """The demo pipeline laid out under ``workdir`` (pipeline root, SQLite MLMD, model store)."""
    workdir = os.path.abspath(workdir)
    return create_pipeline(
        pipeline_root=os.path.join(workdir, "pipeline_root"),
        data_root=data_root,
        serving_model_dir=local_store(workdir, serving_model_dir),
        metadata_path=os.path.join(workdir, "metadata.sqlite"),
        train_steps=train_steps,
        feedback_examples=feedback_examples,
        feedback_log_dirs=feedback_log_dirs,
        feedback_merge=feedback_merge,
        beam_pipeline_args=beam_pipeline_args,
    )


def run_local(
    workdir: str,
    train_steps: int,
    feedback_examples: str | None = None,
    data_root: str = DATA_ROOT,
    feedback_log_dirs: Sequence[str] = (),
    feedback_merge: FeedbackMerge | None = None,
    *,
    serving_model_dir: str | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> str:
    """Runs the pipeline on LocalDagRunner in this process; returns the model store."""
    from tfx import v1 as tfx

    tfx.orchestration.LocalDagRunner().run(
        local_pipeline(
            workdir,
            train_steps,
            feedback_examples,
            data_root,
            feedback_log_dirs,
            feedback_merge,
            serving_model_dir=serving_model_dir,
            beam_pipeline_args=beam_pipeline_args,
        )
    )
    return local_store(workdir, serving_model_dir)


def _configure_worker_logging(events: Any) -> None:
    """Worker logs: everything at INFO to stderr (the front end's log file), TFX's proto
    dumps left out, node transitions and our summaries also sent as events."""
    from absl import logging as absl_logging

    from pipelines.run_events import DropProtoDumps

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s] %(message)s"))
    handler.addFilter(DropProtoDumps())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.addHandler(events)
    root.setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)


def _feedback_merge(args: argparse.Namespace) -> FeedbackMerge:
    return FeedbackMerge(args.feedback_window_spans, args.feedback_weight, args.corrected_weight)


def _feedback_flags(args: argparse.Namespace) -> list[str]:
    """The ``run`` flags of the feedback merge, passed on to the worker process."""
    flags = [f"--feedback_log_dir={os.path.abspath(d)}" for d in args.feedback_log_dir]
    if flags:
        flags += [
            f"--feedback_window_spans={args.feedback_window_spans}",
            f"--feedback_weight={args.feedback_weight}",
            f"--corrected_weight={args.corrected_weight}",
        ]
    return flags


def _store_flags(args: argparse.Namespace) -> list[str]:
    """``--serving_model_dir`` and ``--beam_pipeline_args``, passed on to the worker process."""
    flags = [f"--serving_model_dir={args.serving_model_dir}"] if args.serving_model_dir else []
    if args.beam_pipeline_args is not None:
        flags.append(f"--beam_pipeline_args={args.beam_pipeline_args}")
    return flags


def _beam_args(args: argparse.Namespace) -> list[str] | None:
    """``--beam_pipeline_args`` split like a shell would; None keeps the default."""
    return None if args.beam_pipeline_args is None else shlex.split(args.beam_pipeline_args)


def run_worker(args: argparse.Namespace) -> int:
    """``run --events_fd N``: run the pipeline here, reporting progress on descriptor N."""
    from pipelines import quiet
    from pipelines.run_events import EventWriter, NodeEventHandler

    quiet.silence_python_warnings()  # before TFX pulls in the Google SDKs
    writer = EventWriter(args.events_fd)
    events = NodeEventHandler(writer)
    _configure_worker_logging(events)
    workdir = os.path.abspath(args.workdir)
    metadata_path = os.path.join(workdir, "metadata.sqlite")
    try:
        from tfx import v1 as tfx

        pipeline = local_pipeline(
            workdir,
            args.train_steps,
            args.feedback_examples,
            args.data_root,
            args.feedback_log_dir,
            _feedback_merge(args),
            serving_model_dir=args.serving_model_dir,
            beam_pipeline_args=_beam_args(args),
        )
        writer.send("nodes", nodes=[component.id for component in pipeline.components])
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except BaseException as exc:  # reported, then the traceback goes to the log
        message = str(exc).strip() or type(exc).__name__
        writer.send(
            "failed",
            node=events.current_node,
            error=f"{type(exc).__name__}: {message}".splitlines()[0][:500],
        )
        traceback.print_exc()
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    steps = [{"node": n, "state": s, "seconds": t} for n, s, t in run_summary(metadata_path)]
    writer.send(
        "result",
        steps=steps,
        store=local_store(workdir, args.serving_model_dir),
        metadata_path=metadata_path,
        push=latest_push(metadata_path),
    )
    writer.close()
    return 0


def run_with_progress(args: argparse.Namespace) -> int:
    """``run``: the pipeline in a worker process, its progress here, its logs in a file."""
    from pipelines import local_run

    outcome = local_run.watch(
        local_run.demo_pipeline_command(
            args.workdir,
            args.train_steps,
            feedback_examples=args.feedback_examples,
            data_root=args.data_root,
            extra_args=_feedback_flags(args) + _store_flags(args),
        ),
        log_path=local_run.pipeline_log_path(args.workdir),
        title=f"Pipeline {PIPELINE_NAME} on LocalDagRunner",
        verbose=args.verbose,
    )
    if not outcome.ok:
        local_run.print_failure(outcome)
        return 1
    push = outcome.result.get("push", {})
    where = f"version {push.get('version')} in {outcome.result.get('store')}"
    print(f"Pushed {where}" if push.get("pushed") else "Nothing pushed (see the Pusher line)")
    print(f"Logs: {outcome.log_path}")
    return 0


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
    from tfx import v1 as tfx

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
    run = commands.add_parser(
        "run", help="run on LocalDagRunner (progress here, logs in <workdir>/logs/pipeline.log)"
    )
    run.add_argument("--workdir", default="demo-workdir")
    run.add_argument("--train_steps", type=int, default=20)
    run.add_argument("--data_root", default=DATA_ROOT, help="CSV files for CsvExampleGen")
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
    run.add_argument(
        "--serving_model_dir",
        default=None,
        help="model store to push to: a path or gs:// / s3:// URI (default <workdir>/models/demo)",
    )
    run.add_argument("--verbose", action="store_true", help="stream the full logs as well")
    # Set by the progress front end for the worker process it starts (pipelines/local_run.py).
    run.add_argument("--events_fd", type=int, default=None, help=argparse.SUPPRESS)
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

    if args.command == "run":
        return run_worker(args) if args.events_fd is not None else run_with_progress(args)
    from pipelines import quiet

    quiet.silence_python_warnings()
    compile_kubeflow(
        image=args.image,
        pipeline_root=args.pipeline_root,
        data_root=args.data_root,
        serving_model_dir=args.serving_model_dir,
        output=args.output,
        pipeline_name=args.pipeline_name,
        beam_pipeline_args=_beam_args(args),
    )
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
