"""The metadata worker process: drains the spool into MLMD and answers lineage queries.

Run by the model server (``python -m serving.metadata.worker``) when a metadata connection is
configured. Being a separate process is the point: MLMD's embedded client holds the GIL while it
waits on a lock or a slow database, and ``ml_metadata`` need not be importable by serving code.

Delivery is at-least-once from the spool and idempotent in the store, i.e. exactly-once in
effect: a report is acknowledged only after its write committed, and a replayed report finds its
earlier write by ``external_id``. An unreachable database only delays delivery.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from ml_metadata import errors

from serving.metadata import reports
from serving.metadata.config import ConnectionSpec, parse_connection
from serving.metadata.mlmd_records import MlmdRecords
from serving.metadata.mlmd_store import connect
from serving.metadata.query_socket import QueryServer
from serving.metadata.records import RetryLater
from serving.metadata.spool import Report, Spool

log = logging.getLogger("serving.metadata.worker")

_PERMANENT = (errors.InvalidArgumentError, errors.FailedPreconditionError)
_MAX_BACKOFF_SECONDS = 10.0
_BATCH = 200


def _dispatch(records: MlmdRecords, report: Report) -> None:
    handler = {
        reports.SERVER_STARTED: records.record_server_started,
        reports.VERSION_LOADED: records.record_version_loaded,
        reports.VERSION_LOAD_FAILED: records.record_version_load_failed,
        reports.VERSION_UNLOADED: records.record_version_unloaded,
        reports.PREDICTION_LOG: records.record_prediction_log,
        reports.LIVE_METRICS: records.record_live_metrics,
        reports.HEARTBEAT: records.record_heartbeat,
    }[report.kind]
    handler(report.payload)


def _superseded(batch: list[Report]) -> set[int]:
    """Live-metrics reports carry cumulative numbers: only the last per version matters."""
    last: dict[tuple, int] = {}
    for report in batch:
        if report.kind == reports.LIVE_METRICS:
            p = report.payload
            last[(p["server_id"], p["model_name"], p["model_version"])] = report.seq
    return {
        r.seq
        for r in batch
        if r.kind == reports.LIVE_METRICS
        and last[(r.payload["server_id"], r.payload["model_name"], r.payload["model_version"])]
        != r.seq
    }


class Deliverer:
    """One pass = deliver what is queued, in order, until empty or blocked."""

    def __init__(self, spool: Spool, spec: ConnectionSpec) -> None:
        self._spool = spool
        self._spec = spec
        self._records: MlmdRecords | None = None
        self.failures = 0

    def _store(self) -> MlmdRecords:
        if self._records is None:
            self._records = MlmdRecords(connect(self._spec, attempts=1))
            log.info("Connected to metadata store %s", self._spec.describe())
        return self._records

    def deliver(self) -> bool:
        """True when the spool was drained; False when blocked (retry later)."""
        while True:
            batch = self._spool.peek(_BATCH)
            if not batch:
                return True
            skip = _superseded(batch)
            self._spool.ack(sorted(skip))
            done: list[int] = []
            try:
                for report in batch:
                    if report.seq in skip:
                        continue
                    try:
                        _dispatch(self._store(), report)
                    except _PERMANENT as exc:
                        log.error(
                            "Metadata store rejected %s %s: %s (parked in %s)",
                            report.kind,
                            report.report_id,
                            exc,
                            self._spool.path,
                        )
                        self._spool.ack(done)
                        done = []
                        self._spool.park(report, str(exc))
                        continue
                    done.append(report.seq)
            except RetryLater as exc:
                self._spool.ack(done)
                log.info("Delivery waits: %s", exc)
                return False
            except Exception as exc:  # outage, lock, dropped connection: reconnect later
                self._spool.ack(done)
                self.failures += 1
                if self.failures == 1 or self.failures % 30 == 0:
                    log.warning(
                        "Metadata store %s unavailable (%s: %s); %d reports kept in %s",
                        self._spec.describe(),
                        type(exc).__name__,
                        exc,
                        len(self._spool),
                        self._spool.path,
                    )
                self._records = None
                return False
            self._spool.ack(done)
            if self.failures:
                log.info("Metadata store reachable again; backlog delivered")
                self.failures = 0


def run(
    spool_dir: str,
    spec: ConnectionSpec,
    query_socket: str,
    parent_pid: int,
    poll_seconds: float,
    drain_seconds: float,
) -> int:
    spool = Spool(spool_dir)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    queries = QueryServer(query_socket, spec) if query_socket else None
    if queries is not None:
        queries.start()
    deliverer = Deliverer(spool, spec)
    backoff = poll_seconds
    while not stopping.is_set():
        if parent_pid and os.getppid() != parent_pid:
            log.info(
                "Model server exited; metadata worker stops (undelivered reports stay spooled)"
            )
            break
        drained = deliverer.deliver()
        backoff = poll_seconds if drained else min(max(backoff * 2, 0.5), _MAX_BACKOFF_SECONDS)
        stopping.wait(backoff)
    deadline = time.monotonic() + drain_seconds
    while len(spool) and time.monotonic() < deadline and not deliverer.deliver():
        time.sleep(0.5)
    if len(spool):
        log.warning(
            "%d metadata reports not delivered yet; kept in %s for the next start",
            len(spool),
            spool.path,
        )
    if queries is not None:
        queries.stop()
    spool.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.metadata.worker")
    parser.add_argument("--spool_dir", required=True)
    parser.add_argument("--connection", required=True, help="see serving.metadata.config")
    parser.add_argument("--query_socket", default="")
    parser.add_argument("--parent_pid", type=int, default=0)
    parser.add_argument("--poll_seconds", type=float, default=0.2)
    parser.add_argument("--drain_seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s metadata-worker %(levelname)s %(message)s"
    )
    return run(
        args.spool_dir,
        parse_connection(args.connection),
        args.query_socket,
        args.parent_pid,
        args.poll_seconds,
        args.drain_seconds,
    )


if __name__ == "__main__":
    sys.exit(main())
