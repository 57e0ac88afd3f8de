"""The report kinds the server spools and their payload keys (the server↔worker contract).

Times are epoch milliseconds as floats: MLMD's INT properties are 32-bit on MySQL/MariaDB and
PostgreSQL, so anything like a timestamp is stored as DOUBLE.
"""

from __future__ import annotations

SERVER_STARTED = "server_started"  # server_id, hostname, runtime_version, started_at_ms, pid
VERSION_LOADED = "version_loaded"  # episode_id, server_id, model_name, model_version, path,
# base_path, load_started_ms, load_time_ms, load_latency_ms, hostname, device,
# heartbeat_interval_s
VERSION_LOAD_FAILED = "version_load_failed"  # as VERSION_LOADED + error
VERSION_UNLOADED = "version_unloaded"  # episode_id, unload_time_ms, unload_reason
PREDICTION_LOG = "prediction_log"  # shard_id, episode_id, uri, num_records, window_start_ms,
# window_end_ms, model_name, model_version, server_id
LIVE_METRICS = "live_metrics"  # server_id, model_name, model_version, episode_id, task,
# num_predictions, num_labeled, accuracy, auc, mae, rmse, updated_ms
HEARTBEAT = "heartbeat"  # server_id, heartbeat_ms, heartbeat_interval_s (spooled with replace)

# A RUNNING load is *stale* when its server has not been heard from for this many heartbeat
# intervals: it died without restarting (or cannot reach the metadata store). Three intervals
# ride out a slow delivery or one lost beat without calling a live server dead.
STALE_AFTER_BEATS = 3


def is_stale(last_seen_ms: float | None, interval_s: float | None, now_ms: float) -> bool | None:
    """True/False for a RUNNING load; None when its server sends no heartbeats (older
    servers), i.e. liveness unknown."""
    if not last_seen_ms or not interval_s:
        return None
    return now_ms - last_seen_ms > STALE_AFTER_BEATS * interval_s * 1000.0
