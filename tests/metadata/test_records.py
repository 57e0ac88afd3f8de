"""MLMD records and lineage on a known history (SQLite file; MariaDB in the integration tests)."""

from __future__ import annotations

import json
import time

import pytest
from ml_metadata.proto import metadata_store_pb2 as pb

from serving.metadata import lineage, reports
from serving.metadata.config import parse_connection
from serving.metadata.mlmd_records import MlmdRecords
from serving.metadata.mlmd_store import connect
from serving.metadata.records import RetryLater
from serving.metadata.spool import Spool
from serving.metadata.worker import Deliverer
from tests.metadata.history import seed_run

V1, V2 = "1700000000", "1700003600"
DEST = "/models/demo"


def _load(episode: str, version: str, server: str = "srv-a", started: float = 1.0e12) -> dict:
    return {
        "episode_id": episode,
        "server_id": server,
        "model_name": "demo",
        "model_version": version,
        "path": f"/mnt/other/demo/{version}",  # mounted elsewhere than the Pusher saw it
        "base_path": "/mnt/other/demo",
        "load_started_ms": started,
        "load_time_ms": started + 500,
        "load_latency_ms": 500.0,
        "hostname": "host-a",
        "device": "CPU",
    }


@pytest.fixture
def connection(tmp_path) -> str:
    return f"sqlite://{tmp_path}/mlmd.sqlite"


@pytest.fixture
def history(connection):
    store = connect(parse_connection(connection))
    pm1, trainer1, examples = seed_run(store, "run-1", V1, f"{DEST}/{V1}")
    pm2, _, _ = seed_run(store, "run-2", V2, f"{DEST}/{V2}")
    return store, {"pm1": pm1, "pm2": pm2, "trainer1": trainer1, "examples": examples}


def _episodes(store):
    return store.get_executions_by_type("serving.ModelServing")


def test_load_links_pushed_model_and_replay_changes_nothing(history):
    store, ids = history
    records = MlmdRecords(store)
    for _ in range(2):  # a replay after a crash between the write and the spool ack
        records.record_version_loaded(_load("srv-a/demo/1", V1))
    [episode] = _episodes(store)
    assert episode.last_known_state == pb.Execution.RUNNING
    assert episode.properties["load_time_ms"].double_value == 1.0e12 + 500  # > 2^31: DOUBLE
    [event] = [
        e for e in store.get_events_by_execution_ids([episode.id]) if e.type == pb.Event.INPUT
    ]
    assert event.artifact_id == ids["pm1"]
    contexts = {(c.type, c.name) for c in store.get_contexts_by_execution(episode.id)}
    assert contexts == {("serving.server", "srv-a"), ("serving.deployment", "demo")}
    for _ in range(2):
        records.record_version_unloaded(
            {"episode_id": "srv-a/demo/1", "unload_time_ms": 2.0e12, "unload_reason": "unloaded"}
        )
    [episode] = _episodes(store)
    assert episode.last_known_state == pb.Execution.COMPLETE


def test_restart_cancels_stale_episodes_and_unpushed_versions_are_external(history):
    store, _ = history
    records = MlmdRecords(store)
    records.record_version_loaded(_load("srv-a/demo/1", V1))
    records.record_server_started(
        {"server_id": "srv-a", "hostname": "h", "runtime_version": "x", "started_at_ms": 1.1e12}
    )
    [episode] = _episodes(store)
    assert episode.last_known_state == pb.Execution.CANCELED
    records.record_version_loaded(_load("srv-a/demo/7", "7", started=1.2e12))
    [external] = store.get_artifacts_by_uri("/mnt/other/demo/7")
    assert external.custom_properties["is_external"].int_value == 1


def test_fresh_pushed_version_waits_for_its_pushed_model(history):
    store, _ = history
    records = MlmdRecords(store)
    now = time.time()
    with pytest.raises(RetryLater):
        records.record_version_loaded(_load("srv-a/demo/new", str(int(now)), started=now * 1000))
    assert not _episodes(store)


@pytest.mark.usefixtures("history")
def test_worker_delivers_spool_in_order_once(tmp_path, connection):
    spool = Spool(str(tmp_path / "spool"))
    spool.append(reports.VERSION_LOADED, "e1", _load("e1", V1))
    spool.append(reports.VERSION_LOADED, "e1", _load("e1", V1))  # same id: stored once
    spool.append(reports.VERSION_UNLOADED, "e1/u", {"episode_id": "e1", "unload_time_ms": 3.0})
    assert len(spool) == 2
    assert Deliverer(spool, parse_connection(connection)).deliver()
    assert len(spool) == 0
    [episode] = _episodes(connect(parse_connection(connection)))
    assert episode.last_known_state == pb.Execution.COMPLETE


def test_worker_keeps_reports_while_store_unreachable(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    spool.append(reports.VERSION_LOADED, "e1", _load("e1", V1))
    unreachable = parse_connection("mysql://u:p@127.0.0.1:9/none")
    assert not Deliverer(spool, unreachable).deliver()
    assert len(spool) == 1


def test_spool_is_bounded_and_durable(tmp_path):
    spool = Spool(str(tmp_path), max_reports=2)
    assert spool.append("k", "a", {}) and spool.append("k", "b", {})
    assert not spool.append("k", "c", {})
    assert spool.dropped == 1
    spool.close()
    assert [r.report_id for r in Spool(str(tmp_path)).peek()] == ["a", "b"]


def test_lineage_cli_on_known_history(history, connection, capsys, tmp_path):
    store, _ = history
    records = MlmdRecords(store)
    records.record_version_loaded(_load("srv-a/demo/1", V1))
    records.record_version_loaded(_load("srv-b/demo/1", V1, server="srv-b"))
    records.record_version_unloaded({"episode_id": "srv-a/demo/1", "unload_time_ms": 1.0e12 + 9e5})
    records.record_live_metrics(
        {
            "server_id": "srv-b",
            "model_name": "demo",
            "model_version": V1,
            "episode_id": "srv-b/demo/1",
            "task": "classification",
            "num_predictions": 10,
            "num_labeled": 4,
            "accuracy": 0.75,
            "auc": 0.5,
        }
    )
    examples_id = records.record_feedback_examples(
        {
            "export_id": "x1",
            "uri": str(tmp_path / "fb"),
            "split_names": '["train", "eval"]',
            "num_examples": 4,
            "model_name": "demo",
            "model_version": V1,
            "episode_ids": ["srv-b/demo/1"],
            "shard_ids": [],
        }
    )
    seed_run(store, "run-3", "1700007200", f"{DEST}/1700007200", examples_id=examples_id)

    assert lineage.main(["--metadata_connection", connection, "version", "demo", V1]) == 0
    out = capsys.readouterr().out
    assert "pipeline run   run-1" in out
    assert f"pushed to      {DEST}/{V1}" in out
    assert "InfraBlessing  blessed=1 /pr/blessing/run-1" in out
    assert (
        "server  state     loaded                     unloaded                   load ms\n"
        "------  --------  -------------------------  -------------------------  -------\n"
        "srv-a   COMPLETE  2001-09-09T01:46:40+00:00  2001-09-09T02:01:40+00:00  500\n"
        "srv-b   RUNNING   2001-09-09T01:46:40+00:00                             500\n"
    ) in out
    assert "live metrics   srv-b: accuracy=0.750 auc=0.500 labeled=4/10" in out
    assert f"feedback data  {tmp_path / 'fb'} (4 rows) -> Trainer in run run-3 -> version " in out
    assert "1700007200" in out.split("feedback data")[1]

    # The next version's view names the served version its feedback came from.
    assert lineage.main(["--metadata_connection", connection, "version", "demo", "1700007200"]) == 0
    out = capsys.readouterr().out
    assert "  trained on     feedback from versions 1700000000: 4 rows (span 0)\n" in out
    assert "pipeline run   run-3" in out

    assert lineage.main(["--metadata_connection", connection, "--json", "versions", "demo"]) == 0
    [served] = json.loads(capsys.readouterr().out)
    assert (served["version"], served["servers"], served["live_on"]) == (
        V1,
        ["srv-a", "srv-b"],
        ["srv-b"],
    )

    assert lineage.main(["--metadata_connection", connection, "diff", "demo", V1, V2]) == 0
    out = capsys.readouterr().out
    assert "pipeline_run     run-1" in out and "run-2" in out

    assert lineage.main(["--metadata_connection", connection, "version", "demo", "42"]) == 1
    assert "No record of model 'demo' version 42" in capsys.readouterr().err


def test_heartbeat_marks_a_silent_server_stale_after_three_intervals(history, capsys, connection):
    store, _ = history
    records = MlmdRecords(store)
    loaded = {**_load("srv-a/demo/1", V1), "heartbeat_interval_s": 30.0}
    records.record_version_loaded(loaded)
    records.record_version_loaded(_load("srv-b/demo/1", V1, server="srv-b"))  # no heartbeats
    beat = 1.0e12 + 60_000
    records.record_heartbeat(
        {"server_id": "srv-a", "heartbeat_ms": beat, "heartbeat_interval_s": 30.0}
    )
    [episode] = [e for e in _episodes(store) if e.properties["server_id"].string_value == "srv-a"]
    assert episode.properties["heartbeat_ms"].double_value == beat

    from serving.metadata.mlmd_lineage import MlmdLineage

    queries = MlmdLineage(store)
    alive_until = beat + 3 * 30_000
    [fresh] = queries.served_versions("demo", now_ms=alive_until)
    assert (fresh["live_on"], fresh["stale_on"]) == (["srv-a", "srv-b"], [])
    [silent] = queries.served_versions("demo", now_ms=alive_until + 1)
    # srv-b never sent a heartbeat (an older server): liveness unknown, still listed live.
    assert (silent["live_on"], silent["stale_on"]) == (["srv-b"], ["srv-a"])
    server = queries.server_history("srv-a", now_ms=alive_until + 1)
    assert server["stale"] and server["live"] == []
    assert [e["version"] for e in server["stale_loads"]] == [V1]
    assert queries.server_history("srv-a", now_ms=alive_until)["stale"] is False

    # A later beat makes it live again (a server cut off from the store, then back).
    records.record_heartbeat(
        {"server_id": "srv-a", "heartbeat_ms": alive_until, "heartbeat_interval_s": 30.0}
    )
    [back] = queries.served_versions("demo", now_ms=alive_until + 1)
    assert back["stale_on"] == []


def test_spool_replace_keeps_one_newest_report_at_the_end(tmp_path):
    spool = Spool(str(tmp_path))
    spool.replace("heartbeat", "srv/heartbeat", {"at": 1})
    spool.append("k", "load", {})
    spool.replace("heartbeat", "srv/heartbeat", {"at": 2})
    assert [(r.report_id, r.payload) for r in spool.peek()] == [
        ("load", {}),
        ("srv/heartbeat", {"at": 2}),
    ]


def test_feedback_sources_link_served_models_and_closed_shards_once(history):
    store, ids = history
    records = MlmdRecords(store)
    records.record_version_loaded(_load("srv-a/demo/1", V1))
    records.record_prediction_log(
        {
            "shard_id": "predlog:/logs/demo/1/a.tfrecord",
            "episode_id": "srv-a/demo/1",
            "uri": "/logs/demo/1/a.tfrecord",
            "num_records": 3,
            "window_start_ms": 1.0e12,
            "window_end_ms": 1.0e12 + 6e4,
            "model_name": "demo",
            "model_version": V1,
            "server_id": "srv-a",
        }
    )
    [shard] = store.get_artifacts_by_uri("/logs/demo/1/a.tfrecord")
    sources = records.feedback_sources(
        "demo",
        [V1, V2],
        ["srv-a/demo/1"],  # V1 through its serving record; V2 by version in the store dir
        ["predlog:/logs/demo/1/a.tfrecord", "predlog:/logs/demo/2/still-open.tfrecord"],
    )
    assert sorted((a.id, key) for a, key in sources) == sorted(
        [(ids["pm1"], "served_model"), (ids["pm2"], "served_model"), (shard.id, "prediction_log")]
    )
    type_id = store.put_execution_type(pb.ExecutionType(name="x.FeedbackExampleGen"))
    [execution_id] = store.put_executions([pb.Execution(type_id=type_id)])
    for _ in range(2):  # a driver retry adds nothing twice
        records.link_inputs(execution_id, sources)
    events = store.get_events_by_execution_ids([execution_id])
    assert sorted((e.artifact_id, e.path.steps[0].key, e.path.steps[1].index) for e in events) == [
        (ids["pm1"], "served_model", 0),
        (ids["pm2"], "served_model", 1),
        (shard.id, "prediction_log", 0),
    ]
