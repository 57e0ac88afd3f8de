"""The closed loop end to end: pipeline, real model server, feedback, next pipeline run.

SQLite, full chain: run 1 -> the server serves it -> predictions -> feedback for some of them
-> run 2 (FeedbackExampleGen emits exactly the labelled rows; the Trainer reads base + feedback)
-> the server swaps to run 2's version -> lineage shows served version -> feedback -> Trainer ->
next version; run 3 without new feedback emits an empty span and trains on base data only.

MariaDB and PostgreSQL: the same chain, with the database down while the server starts and
takes predictions and feedback (serving and feedback go on; the reports wait in the spool and
arrive once). The three chains take 4.5-6 minutes together on the shared 2-core machine
(pipeline runs of 12-62 s, depending on the load), so all three run in full.

Stacks (docs/stacks.md): the pipeline and the MLMD worker — the only process that talks to the
database — run on the TFX 1.16 stack in every chain. The server runs on the TFX stack in the
SQLite chain and on the current stack (Python 3.12, TF 2.21, protobuf 5+, with the worker on
the TFX stack's interpreter: the serving image's configuration) in the MariaDB and PostgreSQL
chains, so the next run's FeedbackExampleGen reads prediction logs written by each stack. The
server's part (spool, heartbeat, prediction log, feedback join) does not depend on the backend,
so each stack runs full chains once rather than every chain twice.

Each step's time is printed (``pytest -s``); docs/metadata.md quotes them.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2 as pb
from tfx import v1 as tfx

from pipelines import serving_demo
from serving.metadata import lineage
from serving.metadata.config import parse_connection
from serving.metadata.mlmd_store import connect, connection_config
from serving.metadata.spool import Spool
from tests.support.server_process import ServerProcess
from tests.support.stacks import runtime_version_of, server_on_current_stack

pytestmark = pytest.mark.integration

# (request id or None = let the server generate one, rows, label per row or None = no feedback)
REQUESTS = [
    ("p0", [(0.5, 1.0), (-1.5, -1.0)], [1, 1]),
    ("p1", [(2.0, 2.0)], [0]),
    (None, [(-2.0, -2.0)], [1]),
    ("p3", [(1.0, -0.5)], [0]),
    ("p4", [(0.2, 0.1)], None),
    (None, [(-0.3, 0.4)], None),
]


class Steps:
    """Times each step for the closing table."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.rows: list[list] = []

    def run(self, name: str, action, note=lambda _result: ""):
        started = time.perf_counter()
        result = action()
        self.rows.append([name, time.perf_counter() - started, note(result)])
        return result

    def print(self) -> None:
        print(f"\nfeedback loop on {self.backend}:")
        for name, seconds, note in self.rows:
            print(f"  {name:<36} {seconds:6.1f} s  {note}")
        print(f"  {'total':<36} {sum(r[1] for r in self.rows):6.1f} s")


class Loop:
    """One model store, prediction log and metadata store shared by the pipeline runs and the
    server, as in a deployment. ``server_stack``: ``ServerProcess`` arguments choosing the
    server's interpreter (empty: this test's, the TFX stack)."""

    def __init__(self, connection: str, tmp_path, server_stack: dict | None = None) -> None:
        self.connection = connection
        self.server_stack = server_stack or {}
        self.workdir = tmp_path / "demo"
        self.store_dir = str(self.workdir / "models" / "demo")
        self.log_dir = str(tmp_path / "predictions")
        self.spool_dir = str(tmp_path / "spool")

    def run_pipeline(self) -> str:
        tfx.orchestration.LocalDagRunner().run(
            serving_demo.create_pipeline(
                pipeline_root=str(self.workdir / "root"),
                data_root=serving_demo.DATA_ROOT,
                serving_model_dir=self.store_dir,
                train_steps=10,
                feedback_log_dirs=[self.log_dir],
                metadata_connection_config=connection_config(parse_connection(self.connection)),
            )
        )
        return max(os.listdir(self.store_dir), key=int)

    def store(self):
        return connect(parse_connection(self.connection))

    def server(self) -> ServerProcess:
        return ServerProcess(
            [
                "--model_name=demo",
                f"--model_base_path={self.store_dir}",
                f"--metadata_connection={self.connection}",
                f"--metadata_spool_dir={self.spool_dir}",
                f"--prediction_log_dir={self.log_dir}",
                "--prediction_log_sampling=0,demo=1.0",
                "--metadata_server_id=srv-1",
                "--file_system_poll_wait_seconds=1",
            ],
            **self.server_stack,
        )

    def feedback_spans(self) -> list[pb.Artifact]:
        spans = [
            a
            for a in self.store().get_artifacts_by_type("Examples")
            if "feedback_cursor" in a.custom_properties and a.state == pb.Artifact.LIVE
        ]
        return sorted(spans, key=lambda a: a.properties["span"].int_value)

    def trainer_inputs(self) -> list[tuple]:
        """(producer, span, feedback rows) of the newest Trainer execution's ``examples``."""
        store = self.store()
        types = {t.id: t.name for t in store.get_execution_types()}
        trainers = [e for e in store.get_executions() if types[e.type_id].endswith(".Trainer")]
        newest = max(trainers, key=lambda e: e.id)
        ids = [
            e.artifact_id
            for e in store.get_events_by_execution_ids([newest.id])
            if e.type == pb.Event.INPUT and e.path.steps[0].key == "examples"
        ]
        inputs = []
        for artifact in store.get_artifacts_by_id(ids):
            span = artifact.properties["span"].int_value
            if "feedback_cursor" in artifact.custom_properties:
                rows = artifact.custom_properties["num_examples"].int_value
                inputs.append(("FeedbackExampleGen", span, rows))
            else:
                assert "/CsvExampleGen/" in artifact.uri, artifact.uri
                inputs.append(("CsvExampleGen", span, None))
        return sorted(inputs, key=str)

    def episodes(self) -> list[pb.Execution]:
        found = self.store().get_executions_by_type("serving.ModelServing")
        return sorted(found, key=lambda e: e.id)


def span_rows(artifact: pb.Artifact) -> list[tuple[float, float, int, float]]:
    """(x1, x2, label, sample_weight) of every row in both splits."""
    files = tf.io.gfile.glob(os.path.join(artifact.uri, "Split-*", "*.gz"))
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        f = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append(
            (
                round(f["x1"].float_list.value[0], 4),
                round(f["x2"].float_list.value[0], 4),
                f["label"].int64_list.value[0],
                f["sample_weight"].float_list.value[0],
            )
        )
    return sorted(rows)


def predict_and_label(server: ServerProcess) -> list[tuple]:
    """Sends REQUESTS and labels for some; returns the rows a span must hold, with the weight
    the merge policy gives them (2.0 where the served answer was wrong)."""
    labelled, labels = [], []
    for rid, rows, row_labels in REQUESTS:
        body = {"instances": [{"x1": [x1], "x2": [x2]} for x1, x2 in rows]}
        status, payload, headers = server.request_with_headers(
            "POST", "/v1/models/demo:predict", body, {"X-Request-Id": rid} if rid else {}
        )
        assert status == 200, payload
        if rid:
            assert headers["x-request-id"] == rid
        scores = [p[0] for p in json.loads(payload)["predictions"]]
        if row_labels is not None:
            labels.append({"request_id": headers["x-request-id"], "label": row_labels})
            labelled += [
                (round(x1, 4), round(x2, 4), y, 2.0 if (p >= 0.5) != (y == 1) else 1.0)
                for (x1, x2), y, p in zip(rows, row_labels, scores, strict=True)
            ]
    status, answer = server.json(
        "POST",
        "/v1/models/demo:feedback",
        {"labels": [*labels, {"request_id": "never-made", "label": 1}]},
    )
    assert status == 200 and answer["accepted"] == len(labelled), answer
    assert [u["request_id"] for u in answer["unknown"]] == ["never-made"]
    assert answer["metrics"][0]["num_labeled"] == len(labelled)
    return sorted(labelled)


def lineage_text(connection: str, capsys, version: str) -> str:
    capsys.readouterr()
    assert lineage.main(["--metadata_connection", connection, "version", "demo", version]) == 0
    return capsys.readouterr().out


def check_run_2(loop: Loop, labelled: list[tuple], v1: str) -> pb.Artifact:
    span = loop.feedback_spans()[-1]
    assert span.properties["span"].int_value == 2
    assert span_rows(span) == labelled  # exactly the labelled rows, weighted
    assert json.loads(span.custom_properties["feedback_versions"].string_value) == [v1]
    assert loop.trainer_inputs() == [
        ("CsvExampleGen", 0, None),
        ("FeedbackExampleGen", 2, len(labelled)),
    ]
    return span


def check_lineage(loop: Loop, capsys, v1: str, v2: str, span: pb.Artifact, rows: int) -> None:
    text = lineage_text(loop.connection, capsys, v2)
    assert f"  trained on     feedback from versions {v1}: {rows} rows (span 2)\n" in text
    text = lineage_text(loop.connection, capsys, v1)
    run_1 = text.split("pipeline run   ")[1].split("\n")[0]
    [line] = [x for x in text.splitlines() if x.startswith("  feedback data  ")]
    assert line.startswith(f"  feedback data  {span.uri} ({rows} rows) -> Trainer in run ")
    assert line.endswith(f" -> version {v2}") and run_1 not in line


def run_3_without_feedback(loop: Loop, steps: Steps, capsys) -> None:
    v3 = steps.run("pipeline run 3 (no new feedback)", loop.run_pipeline)
    span3 = loop.feedback_spans()[-1]
    assert (span3.properties["span"].int_value, span_rows(span3)) == (3, [])
    assert loop.trainer_inputs() == [("CsvExampleGen", 0, None), ("FeedbackExampleGen", 3, 0)]
    steps.rows[-1][2] = f"pushed {v3}; feedback span 3: 0 rows"
    text = lineage_text(loop.connection, capsys, v3)
    assert "  trained on     no new feedback (span 3): base data only\n" in text


def test_feedback_closes_the_loop_on_sqlite(tmp_path, capsys):
    loop = Loop(f"sqlite://{tmp_path / 'metadata.sqlite'}", tmp_path)
    steps = Steps("sqlite")
    server = loop.server()
    try:
        v1 = steps.run("pipeline run 1", loop.run_pipeline, lambda v: f"pushed {v}")
        [first] = loop.feedback_spans()  # no server has logged yet: an empty first span
        assert (first.properties["span"].int_value, span_rows(first)) == (1, [])

        steps.run(
            "server start, v1 available",
            lambda: (server.start(), server.wait_for(lambda: server.available_versions("demo"))),
        )
        labelled = steps.run(
            "6 predictions (7 rows), feedback for 4",
            lambda: predict_and_label(server),
            lambda rows: f"{len(rows)} labelled rows",
        )

        def live_view():
            status, view = server.json("GET", f"/v1/lineage/models/demo/versions/{v1}")
            return view if status == 200 and view["servers"] and view["live_metrics"] else None

        view = server.wait_for(live_view)
        assert view["servers"][0]["state"] == "RUNNING" and view["servers"][0]["stale"] is False
        assert view["live_metrics"][0]["num_labeled"] == len(labelled)

        v2 = steps.run("pipeline run 2", loop.run_pipeline)
        span2 = check_run_2(loop, labelled, v1)
        steps.rows[-1][2] = f"pushed {v2}; feedback span 2: {len(labelled)} rows"

        steps.run(
            "server swaps to v2",
            lambda: server.wait_for(
                lambda: server.available_versions("demo") == [int(v2)], timeout=120
            ),
        )
        steps.run(
            "lineage v1 -> feedback -> v2 (CLI)",
            lambda: check_lineage(loop, capsys, v1, v2, span2, len(labelled)),
        )

        run_3_without_feedback(loop, steps, capsys)
    finally:
        server.stop()
        steps.print()
    # The server's load of v1 ended when v2 replaced it, recorded against v1's PushedModel.
    first_load = loop.episodes()[0]
    assert first_load.last_known_state == pb.Execution.COMPLETE
    assert first_load.properties["model_version"].string_value == v1


@pytest.mark.parametrize(
    "backend", ["mariadb", "postgresql"], ids=["mariadb-current-stack", "postgresql-current-stack"]
)
def test_feedback_loop_through_a_database_outage(backend, request, tmp_path, capsys):
    """The full chain on a server database, started while that database is down; the server on
    the current stack, its worker on the TFX stack (the serving image's configuration)."""
    database = request.getfixturevalue(f"{backend}_server")
    loop = Loop(database.connection_for("feedback_loop"), tmp_path, server_on_current_stack())
    steps = Steps(f"{backend}, server on the current stack")
    server = loop.server()
    try:
        v1 = steps.run("pipeline run 1", loop.run_pipeline, lambda v: f"pushed {v}")

        database.stop()
        steps.run(
            "database down; server start, v1 up",
            lambda: (server.start(), server.wait_for(lambda: server.available_versions("demo"))),
        )
        labelled = steps.run(
            "6 predictions (7 rows), feedback for 4",
            lambda: predict_and_label(server),
            lambda rows: f"{len(rows)} labelled rows, store still down",
        )
        status, answer = server.json("GET", f"/v1/lineage/models/demo/versions/{v1}")
        assert status == 503, answer
        spool = Spool(loop.spool_dir)
        queued = [r.kind for r in spool.peek()]
        spool.close()
        assert [k for k in queued if k != "heartbeat"][:2] == ["server_started", "version_loaded"]
        assert queued.count("heartbeat") == 1  # a newer beat replaces an undelivered one

        steps.run(
            "database up; spooled reports land",
            lambda: (database.start(), server.wait_for(lambda: loop.episodes(), timeout=60)),
        )
        [episode] = loop.episodes()  # delivered once
        assert episode.last_known_state == pb.Execution.RUNNING
        assert episode.properties["load_time_ms"].double_value > 2**31  # DOUBLE, not INT32
        server_record = loop.store().get_context_by_type_and_name("serving.server", "srv-1")
        runtime = server_record.properties["runtime_version"].string_value
        assert runtime.endswith(runtime_version_of(loop.server_stack["python"])), runtime

        v2 = steps.run("pipeline run 2", loop.run_pipeline)
        span2 = check_run_2(loop, labelled, v1)
        steps.rows[-1][2] = f"pushed {v2}; feedback span 2: {len(labelled)} rows"
        steps.run(
            "server swaps to v2",
            lambda: server.wait_for(
                lambda: server.available_versions("demo") == [int(v2)], timeout=120
            ),
        )
        steps.run(
            "lineage v1 -> feedback -> v2 (CLI)",
            lambda: check_lineage(loop, capsys, v1, v2, span2, len(labelled)),
        )
        run_3_without_feedback(loop, steps, capsys)
    finally:
        server.stop()
        steps.print()
