"""Liveness: a server killed with SIGKILL (no unload reports, no restart) is shown stale.

Two real servers report to one SQLite store with a 0.5 s heartbeat; one is killed. Its load
stays RUNNING in MLMD (nothing closed it), and the lineage views call it stale once three
intervals pass without a beat, while the other server stays live. The two run on different
stacks (docs/stacks.md): the killed one on the current stack with its MLMD worker on the TFX
stack's interpreter (the serving image's configuration), the live one on the TFX stack.
"""

from __future__ import annotations

import signal
import sys

import pytest
from ml_metadata.proto import metadata_store_pb2 as pb

from serving.metadata import lineage
from serving.metadata.config import parse_connection
from serving.metadata.mlmd_lineage import MlmdLineage
from serving.metadata.mlmd_store import connect
from serving.metadata.reports import STALE_AFTER_BEATS
from tests.support.models import version_dir, write_half_plus_two
from tests.support.server_process import ServerProcess
from tests.support.stacks import runtime_version_of, server_on_current_stack

pytestmark = pytest.mark.integration

INTERVAL = 0.5


def _server(tmp_path, connection: str, server_id: str, **stack) -> ServerProcess:
    return ServerProcess(
        [
            "--model_name=hpt",
            f"--model_base_path={tmp_path / 'models'}",
            f"--metadata_connection={connection}",
            f"--metadata_spool_dir={tmp_path / ('spool-' + server_id)}",
            f"--metadata_server_id={server_id}",
            f"--metadata_heartbeat_seconds={INTERVAL}",
            "--file_system_poll_wait_seconds=1",
        ],
        **stack,
    )


def test_killed_server_turns_stale_while_the_other_stays_live(tmp_path, capsys):
    write_half_plus_two(version_dir(str(tmp_path / "models"), 1))
    connection = f"sqlite://{tmp_path / 'mlmd.sqlite'}"
    current_stack = server_on_current_stack()
    doomed = _server(tmp_path, connection, "doomed", **current_stack)
    alive = _server(tmp_path, connection, "alive")

    def versions() -> dict:
        [entry] = MlmdLineage(connect(parse_connection(connection))).served_versions("hpt")
        return entry

    with alive, doomed:
        for server in (alive, doomed):
            server.wait_for(lambda s=server: s.available_versions("hpt"))
        beating = alive.wait_for(
            lambda: (v := versions())["live_on"] == ["alive", "doomed"] and v, timeout=60
        )
        assert beating["stale_on"] == []

        doomed.stop(signal.SIGKILL)  # no unload report, no restart: only the beats stop
        stale = alive.wait_for(lambda: (v := versions())["stale_on"] and v, timeout=60)
        assert (stale["live_on"], stale["stale_on"]) == (["alive"], ["doomed"])

        store = connect(parse_connection(connection))
        view = MlmdLineage(store).server_history("doomed")
        assert view["stale"] and [e["version"] for e in view["stale_loads"]] == ["1"]
        # Each server says which stack it ran on.
        assert view["runtime_version"].endswith(runtime_version_of(current_stack["python"]))
        live_runtime = MlmdLineage(store).server_history("alive")["runtime_version"]
        assert live_runtime.endswith(runtime_version_of(sys.executable))
        # Stale is a reading, not a write: the record stays RUNNING until the id restarts.
        [load] = [
            e
            for e in store.get_executions_by_type("serving.ModelServing")
            if e.properties["server_id"].string_value == "doomed"
        ]
        assert load.last_known_state == pb.Execution.RUNNING
        # The rule at its edge, from the last time the server was heard from (its last beat or
        # the load itself, whichever is later: a kill can land before the first beat after the
        # load): 3 intervals is live, beyond is not.
        last_seen = max(
            load.properties["heartbeat_ms"].double_value,
            load.properties["load_time_ms"].double_value,
        )
        edge = last_seen + STALE_AFTER_BEATS * INTERVAL * 1000
        lineage_at = MlmdLineage(store)
        assert lineage_at.served_versions("hpt", now_ms=edge)[0]["stale_on"] == []
        assert lineage_at.served_versions("hpt", now_ms=edge + 1)[0]["stale_on"] == ["doomed"]

        capsys.readouterr()
        assert lineage.main(["--metadata_connection", connection, "server", "doomed"]) == 0
        out = capsys.readouterr().out
        assert "STALE: no heartbeat since " in out and "still recorded as loaded: hpt/1" in out
        assert lineage.main(["--metadata_connection", connection, "versions", "hpt"]) == 0
        assert "alive,doomed (stale)" in capsys.readouterr().out
