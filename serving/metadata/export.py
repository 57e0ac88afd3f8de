"""Exports joined (features, label) feedback as TFX ``Examples`` for the next pipeline run.

``python -m serving.metadata.export --prediction_log_dir=D --model=demo --output_dir=X
[--metadata_connection=sqlite:///…/metadata.sqlite]`` writes ``X/Split-train`` and
``X/Split-eval`` (gzip TFRecords of ``tf.Example``, ExampleGen's layout) and, with a metadata
connection, registers ``X`` as the ``Examples`` output of a ``serving.FeedbackEvaluation`` whose
inputs are the served PushedModels and prediction-log shards. A pipeline that imports ``X``
with ``Importer(reimport=False)`` then reuses that very artifact, so lineage runs
serving → feedback → next Trainer. Runs offline (not in the server), reading the index the
server writes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import tensorflow as tf

from serving.metadata.prediction_index import INDEX_FILENAME, PredictionIndex

SPLITS = ("train", "eval")
SPLIT_NAMES = json.dumps(list(SPLITS))  # the ``split_names`` property TFX writes
_EVAL_EVERY = 3


class ExportError(RuntimeError):
    pass


def _split(request_id: str, row: int) -> str:
    digest = hashlib.sha256(f"{request_id}/{row}".encode()).digest()
    return "eval" if digest[0] % _EVAL_EVERY == 0 else "train"


def write_examples(
    log_dir: str, model: str, output_dir: str, label_key: str, versions: list[str]
) -> dict:
    """Writes the splits; returns what a metadata record needs."""
    if not os.path.exists(os.path.join(log_dir, INDEX_FILENAME)):
        raise ExportError(
            f"No prediction index in {log_dir}: is it the server's --prediction_log_dir?"
        )
    index = PredictionIndex(log_dir)
    try:
        rows = index.joined(model, versions)
    finally:
        index.close()
    if len(rows) < 2:
        raise ExportError(
            f"Only {len(rows)} labelled predictions of model {model!r} in {log_dir}; send "
            "feedback for at least 2 logged requests first"
        )
    integral = all(float(row[3]).is_integer() for row in rows)
    by_split: dict[str, list[bytes]] = {name: [] for name in SPLITS}
    for request_id, row, example_bytes, label, *_ in rows:
        example = tf.train.Example.FromString(example_bytes)
        feature = example.features.feature[label_key]
        feature.Clear()
        if integral:
            feature.int64_list.value.append(int(label))
        else:
            feature.float_list.value.append(float(label))
        by_split[_split(request_id, row)].append(example.SerializeToString())
    if not by_split["eval"]:
        by_split["eval"].append(by_split["train"].pop())
    if not by_split["train"]:
        by_split["train"].append(by_split["eval"].pop())
    for name, records in by_split.items():
        folder = os.path.join(output_dir, f"Split-{name}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for record in records:
                writer.write(record)
    return {
        "uri": os.path.abspath(output_dir),
        "num_examples": len(rows),
        "split_names": SPLIT_NAMES,
        "model_name": model,
        "model_version": ",".join(sorted({r[4] for r in rows})),
        "episode_ids": sorted({r[6] for r in rows if r[6]}),
        "shard_ids": sorted({r[5] for r in rows if r[5]}),
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
