"""Times the lineage queries on a store with thousands of records (the issue asks < 1 s).

``python -m benchmarks.lineage_queries sqlite:///tmp/lineage-bench.sqlite`` (or a mysql://
connection): seeds 40 TFX-shaped pipeline runs, 3,000 serving episodes on 20 servers with
unloads and 1,000 prediction-log shards, then times each query as the CLI runs it.
"""

from __future__ import annotations

import sys
import time

from serving.metadata.config import parse_connection
from serving.metadata.mlmd_lineage import MlmdLineage
from serving.metadata.mlmd_records import MlmdRecords
from serving.metadata.mlmd_store import connect
from tests.metadata.history import seed_run

RUNS, EPISODES, SHARDS = 40, 3000, 1000


def seed(store) -> list[str]:
    versions = [str(1_700_000_000 + 3600 * i) for i in range(RUNS)]
    for i, version in enumerate(versions):
        seed_run(store, f"run-{i}", version, f"/models/demo/{version}")
    records = MlmdRecords(store)
    for i in range(EPISODES):
        version = versions[i % RUNS]
        episode = f"srv-{i % 20}/demo/{version}/{i}"
        started = 1.7e12 + i * 1000.0
        records.record_version_loaded(
            {
                "episode_id": episode,
                "server_id": f"srv-{i % 20}",
                "model_name": "demo",
                "model_version": version,
                "path": f"/models/demo/{version}",
                "load_started_ms": started,
                "load_time_ms": started + 300,
                "load_latency_ms": 300.0,
            }
        )
        if i < EPISODES - 40:
            records.record_version_unloaded(
                {"episode_id": episode, "unload_time_ms": started + 9e5}
            )
        if i < SHARDS:
            records.record_prediction_log(
                {
                    "shard_id": f"shard-{i}",
                    "episode_id": episode,
                    "uri": f"/logs/{i}",
                    "num_records": 100,
                    "model_name": "demo",
                    "model_version": version,
                }
            )
    return versions


def main(connection: str) -> None:
    spec = parse_connection(connection)
    started = time.perf_counter()
    versions = seed(connect(spec))
    print(f"seeded in {time.perf_counter() - started:.1f} s")
    queries = {
        "version (lineage of one version)": lambda view: view.version_lineage("demo", versions[7]),
        "versions (all versions served)": lambda view: view.served_versions("demo"),
        "server (history of one server)": lambda view: view.server_history("srv-3"),
        "diff (two versions)": lambda view: view.version_diff("demo", versions[3], versions[9]),
    }
    for name, query in queries.items():
        started = time.perf_counter()
        view = MlmdLineage(connect(spec))  # as the CLI does: connect + query
        query(view)
        print(f"{name:<36} {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main(sys.argv[1])
