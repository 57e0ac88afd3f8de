"""Exports joined (features, label) feedback as TFX ``Examples`` for the next pipeline run.

``python -m serving.metadata.export --prediction_log_dir=D --model=demo --output_dir=X
[--metadata_connection=sqlite:///…/metadata.sqlite]`` writes ``X/Split-train`` and
``X/Split-eval`` (gzip TFRecords of ``tf.Example``, ExampleGen's layout) and, with a metadata
connection, registers ``X`` as the ``Examples`` output of a ``serving.FeedbackEvaluation`` whose
inputs are the served PushedModels and prediction-log shards. A pipeline that imports ``X``
with ``Importer(reimport=False)`` then reuses that very artifact, so lineage runs
serving → feedback → next Trainer. Runs offline (not in the server), reading the index the
server writes. Inside a pipeline, ``FeedbackExampleGen`` does this continuously (only labels
new since its last run, merged with base data); both use :mod:`serving.metadata.feedback_examples`.
"""

from __future__ import annotations

import argparse
import os
import sys

from serving.metadata.feedback_examples import (
    SPLIT_NAMES,
    WeightPolicy,
    build_examples,
    write_splits,
)
from serving.metadata.prediction_index import PredictionIndex


class ExportError(RuntimeError):
    pass


def write_examples(
    log_dir: str,
    model: str,
    output_dir: str,
    label_key: str,
    versions: list[str],
    weights: WeightPolicy | None = None,
) -> dict:
    """Writes the splits; returns what a metadata record needs.

    Trains on its own (``--feedback_examples``), so both splits must be non-empty: with the
    hash split leaving one empty, one row moves over."""
    try:
        index = PredictionIndex(log_dir, create=False)
    except FileNotFoundError as exc:
        raise ExportError(str(exc)) from exc
    try:
        rows = index.joined(model, versions)
    finally:
        index.close()
    if len(rows) < 2:
        raise ExportError(
            f"Only {len(rows)} labelled predictions of model {model!r} in {log_dir}; send "
            "feedback for at least 2 logged requests first"
        )
    built = build_examples(rows, label_key, weights=weights or WeightPolicy(feature=""))
    by_split = built.records
    if not by_split["eval"]:
        by_split["eval"].append(by_split["train"].pop())
    if not by_split["train"]:
        by_split["train"].append(by_split["eval"].pop())
    write_splits(output_dir, by_split)
    return {
        "uri": os.path.abspath(output_dir),
        "num_examples": built.num_examples,
        "split_names": SPLIT_NAMES,
        "model_name": model,
        "model_version": ",".join(built.versions),
        "episode_ids": built.episode_ids,
        "shard_ids": built.shard_ids,
    }


def register(connection: str, summary: dict) -> int:
    """Records the export in MLMD (imported here: the export CLI, not the server, owns it)."""
    from serving.metadata.config import parse_connection
    from serving.metadata.mlmd_records import MlmdRecords
    from serving.metadata.mlmd_store import connect

    export_id = "feedback-export:" + summary["uri"]
    records = MlmdRecords(connect(parse_connection(connection)))
    return records.record_feedback_examples({**summary, "export_id": export_id})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.metadata.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prediction_log_dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--output_dir", required=True, help="a new directory per export")
    parser.add_argument("--versions", default="", help="comma-separated; default all")
    parser.add_argument("--label_key", default="label")
    parser.add_argument("--metadata_connection", default="")
    args = parser.parse_args(argv)
    if os.path.exists(args.output_dir) and os.listdir(args.output_dir):
        print(
            f"error: {args.output_dir} is not empty; exports are immutable, pick a new directory",
            file=sys.stderr,
        )
        return 2
    versions = [v for v in args.versions.split(",") if v]
    try:
        summary = write_examples(
            args.prediction_log_dir, args.model, args.output_dir, args.label_key, versions
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {summary['num_examples']} labelled examples to {summary['uri']}")
    if args.metadata_connection:
        artifact_id = register(args.metadata_connection, summary)
        print(f"Registered as Examples artifact {artifact_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
