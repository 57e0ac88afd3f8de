"""A bounded, durable, ordered queue of metadata reports in a small local SQLite file.

The serving process appends; the metadata worker (another process) reads in order, writes to
MLMD, and only then acknowledges. A report therefore survives MLMD outages and restarts of
either process, and because every report carries an id that the MLMD writes are keyed by
(``external_id``), replaying one that was written but not yet acknowledged changes nothing.

This file is never an MLMD store: it is opened with Python's ``sqlite3`` only, so the warning
about two SQLite libraries sharing one file does not apply.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SPOOL_FILENAME = "reports.sqlite"
DEFAULT_MAX_REPORTS = 100_000


@dataclass(frozen=True)
class Report:
    seq: int
    report_id: str
    kind: str
    payload: dict[str, Any]
    created: float


class Spool:
    """``append`` never raises into the caller's thread: a full or broken spool is logged."""

    def __init__(self, directory: str, max_reports: int = DEFAULT_MAX_REPORTS) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, SPOOL_FILENAME)
        self._max = max_reports
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reports (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "report_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, payload TEXT NOT NULL, "
            "created REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS parked (seq INTEGER PRIMARY KEY, report_id TEXT, "
            "kind TEXT, payload TEXT, created REAL, error TEXT)"
        )
        self._db.commit()
        self.dropped = 0

    def append(self, kind: str, report_id: str, payload: dict[str, Any]) -> bool:
        """Queues one report; the same ``report_id`` twice is stored once. False if not stored."""
        return self._put("INSERT OR IGNORE", kind, report_id, payload)

    def replace(self, kind: str, report_id: str, payload: dict[str, Any]) -> bool:
        """Queues a report that supersedes a still-queued one with the same id, which it
        replaces (moving to the end of the queue): for state where only the newest value
        matters, such as heartbeats, so an outage queues one report instead of thousands."""
        return self._put("INSERT OR REPLACE", kind, report_id, payload)

    def _put(self, verb: str, kind: str, report_id: str, payload: dict[str, Any]) -> bool:
        try:
            with self._lock, self._db:
                (count,) = self._db.execute("SELECT COUNT(*) FROM reports").fetchone()
                if count >= self._max:
                    self.dropped += 1
                    log.error(
                        "Metadata spool %s is full (%d reports, MLMD unreachable for long?): "
                        "dropping %s report %s. Fix the metadata connection or raise "
                        "--metadata_spool_max_reports.",
                        self.path,
                        count,
                        kind,
                        report_id,
                    )
                    return False
                self._db.execute(
                    f"{verb} INTO reports (report_id, kind, payload, created) VALUES (?, ?, ?, ?)",
                    (report_id, kind, json.dumps(payload, sort_keys=True), time.time()),
                )
            return True
        except sqlite3.Error:
            self.dropped += 1
            log.exception("Cannot write %s report %s to %s", kind, report_id, self.path)
            return False

    def peek(self, limit: int = 100) -> list[Report]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, report_id, kind, payload, created FROM reports ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            Report(seq, rid, kind, json.loads(body), created)
            for seq, rid, kind, body, created in rows
        ]

    def ack(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock, self._db:
            self._db.executemany("DELETE FROM reports WHERE seq = ?", [(s,) for s in seqs])

    def park(self, report: Report, error: str) -> None:
        """Moves a report the store rejects for good (a bug, not an outage) out of the way,
        keeping it in the ``parked`` table for inspection instead of retrying it forever."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO parked VALUES (?, ?, ?, ?, ?, ?)",
                (
                    report.seq,
                    report.report_id,
                    report.kind,
                    json.dumps(report.payload, sort_keys=True),
                    report.created,
                    error,
                ),
            )
            self._db.execute("DELETE FROM reports WHERE seq = ?", (report.seq,))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
