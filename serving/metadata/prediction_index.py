"""The local join table behind feedback: which request id produced which rows and scores.

Shards of ``PredictionLog`` are the durable, TFX-compatible log; this SQLite index next to them
is what makes a label join a keyed lookup instead of a scan. Labels are stored by
(request id, row) and replaced when re-sent, and metrics are recomputed from the table, so
re-posting the same feedback never counts twice.

Every stored label gets a new ``seq`` from an AUTOINCREMENT key (never reused, unlike a plain
rowid), so "labels since the last export" is ``seq > cursor`` — immune to clock changes and to
two labels sharing a timestamp. A re-sent label gets a new ``seq`` and is exported again. The
index also carries a random ``index_id``, so a cursor names the index it belongs to even when
the pipeline mounts the log directory at another path than the server.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

INDEX_FILENAME = "index.sqlite"
_LABELS = (
    "CREATE TABLE IF NOT EXISTS labels (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "request_id TEXT NOT NULL, row INTEGER NOT NULL, label REAL, received REAL, "
    "UNIQUE (request_id, row))"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, model TEXT, "
    "version TEXT, kind TEXT, shard TEXT, shard_id TEXT, episode_id TEXT, ts REAL)",
    "CREATE TABLE IF NOT EXISTS rows (request_id TEXT, row INTEGER, example BLOB, score REAL, "
    "PRIMARY KEY (request_id, row))",
    _LABELS,
    "CREATE INDEX IF NOT EXISTS requests_by_version ON requests (model, version)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
)
_MAX_METRIC_ROWS = 200_000  # newest labelled rows a metric is computed over


class JoinedRow(NamedTuple):
    """One labelled prediction row: the features the model saw, its answer and the label."""

    request_id: str
    row: int
    example: bytes  # serialized tf.Example of the request row
    label: float
    score: float | None  # what the served model answered (one number per row), if numeric
    version: str
    kind: str  # predict | classify | regress
    shard_id: str
    episode_id: str | None
    seq: int  # the label's position in this index's label order


@dataclass(frozen=True)
class LoggedRequest:
    request_id: str
    model: str
    version: str
    kind: str
    rows: int


@dataclass(frozen=True)
class VersionMetrics:
    model: str
    version: str
    task: str
    num_predictions: int
    num_labeled: int
    accuracy: float | None = None
    auc: float | None = None
    mae: float | None = None
    rmse: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class PredictionIndex:
    def __init__(self, directory: str, create: bool = True) -> None:
        """``create=False`` (readers such as the export and FeedbackExampleGen): the index
        must exist already; a missing one is an error rather than a new empty index."""
        self.path = os.path.join(directory, INDEX_FILENAME)
        if create:
            os.makedirs(directory, exist_ok=True)
        elif not os.path.exists(self.path):
            raise FileNotFoundError(
                f"No prediction index {self.path}: is {directory} a server's --prediction_log_dir?"
            )
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        with self._db:
            _migrate_labels(self._db)
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('index_id', ?)", (uuid.uuid4().hex,)
            )
        (self.index_id,) = self._db.execute(
            "SELECT value FROM meta WHERE key = 'index_id'"
        ).fetchone()

    def add(
        self,
        request_id: str,
        model: str,
        version: str,
        kind: str,
        shard: str,
        shard_id: str,
        episode_id: str | None,
        rows: Sequence[tuple[bytes, float | None]],
    ) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (request_id, model, version, kind, shard, shard_id, episode_id, time.time()),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)",
                [(request_id, i, example, score) for i, (example, score) in enumerate(rows)],
            )

    def lookup(self, request_ids: Iterable[str]) -> dict[str, LoggedRequest]:
        ids = list(dict.fromkeys(request_ids))
        found: dict[str, LoggedRequest] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for rid, model, version, kind, rows in self._db.execute(
                    "SELECT r.request_id, r.model, r.version, r.kind, COUNT(w.row) FROM requests r "
                    f"JOIN rows w ON w.request_id = r.request_id WHERE r.request_id IN ({marks}) "
                    "GROUP BY r.request_id",
                    chunk,
                ):
                    found[rid] = LoggedRequest(rid, model, version, kind, rows)
        return found

    def add_labels(self, labels: Sequence[tuple[str, int, float]]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO labels (request_id, row, label, received) "
                "VALUES (?, ?, ?, ?)",
                [(rid, row, label, now) for rid, row, label in labels],
            )

    def label_high_water(self) -> int:
        """The newest label's ``seq`` (0 when there is none): a cursor for "up to now"."""
        with self._lock:
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM labels").fetchone()
        return int(seq)

    def metrics(self, model: str, version: str) -> VersionMetrics:
        with self._lock:
            (num_predictions,) = self._db.execute(
                "SELECT COUNT(*) FROM rows w JOIN requests r ON r.request_id = w.request_id "
                "WHERE r.model = ? AND r.version = ?",
                (model, version),
            ).fetchone()
            (kind,) = self._db.execute(
                "SELECT COALESCE(MAX(kind), '') FROM requests WHERE model = ? AND version = ?",
                (model, version),
            ).fetchone()
            pairs = self._db.execute(
                "SELECT w.score, l.label FROM labels l JOIN rows w ON w.request_id = l.request_id "
                "AND w.row = l.row JOIN requests r ON r.request_id = l.request_id "
                "WHERE r.model = ? AND r.version = ? AND w.score IS NOT NULL "
                "ORDER BY l.received DESC LIMIT ?",
                (model, version, _MAX_METRIC_ROWS),
            ).fetchall()
        return compute_metrics(model, version, kind, num_predictions, pairs)

    def joined(
        self,
        model: str,
        versions: Sequence[str] = (),
        after_seq: int = 0,
        up_to_seq: int | None = None,
    ) -> list[JoinedRow]:
        """Labelled rows of ``model`` (optionally of some versions), joined by request id and
        row, whose label arrived in ``(after_seq, up_to_seq]``; in label order."""
        query = (
            "SELECT l.request_id, l.row, w.example, l.label, w.score, r.version, r.kind, "
            "r.shard_id, r.episode_id, l.seq "
            "FROM labels l JOIN rows w ON w.request_id = l.request_id AND w.row = l.row "
            "JOIN requests r ON r.request_id = l.request_id WHERE r.model = ? AND l.seq > ?"
        )
        args: list = [model, after_seq]
        if up_to_seq is not None:
            query += " AND l.seq <= ?"
            args.append(up_to_seq)
        if versions:
            query += f" AND r.version IN ({','.join('?' * len(versions))})"
            args += list(versions)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY l.seq", args).fetchall()
        return [JoinedRow(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _migrate_labels(db: sqlite3.Connection) -> None:
    """Indexes written before label cursors existed have no ``seq``: rebuild the table in
    arrival order (one transaction; the caller holds it)."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(labels)")]
    if not columns or "seq" in columns:
        return
    db.execute("ALTER TABLE labels RENAME TO labels_before_seq")
    db.execute(_LABELS)
    db.execute(
        "INSERT INTO labels (request_id, row, label, received) SELECT request_id, row, label, "
        "received FROM labels_before_seq ORDER BY received, request_id, row"
    )
    db.execute("DROP TABLE labels_before_seq")


def compute_metrics(
    model: str, version: str, kind: str, num_predictions: int, pairs: Sequence[tuple[float, float]]
) -> VersionMetrics:
    """Classifier metrics when the API was classify, or labels are 0/1 and scores
    probabilities; regressor metrics otherwise."""
    if not pairs:
        return VersionMetrics(model, version, infer_task(kind, pairs), num_predictions, 0)
    task = infer_task(kind, pairs)
    if task == "classification":
        correct = sum(1 for s, y in pairs if (s >= 0.5) == (y >= 0.5))
        return VersionMetrics(
            model,
            version,
            task,
            num_predictions,
            len(pairs),
            accuracy=correct / len(pairs),
            auc=_auc(pairs),
        )
    errors = [s - y for s, y in pairs]
    return VersionMetrics(
        model,
        version,
        task,
        num_predictions,
        len(pairs),
        mae=sum(abs(e) for e in errors) / len(errors),
        rmse=math.sqrt(sum(e * e for e in errors) / len(errors)),
    )


def infer_task(kind: str, pairs: Sequence[tuple[float, float]]) -> str:
    if kind == "classify":
        return "classification"
    if kind == "regress":
        return "regression"
    binary = all(y in (0.0, 1.0) and 0.0 <= s <= 1.0 for s, y in pairs)
    return "classification" if pairs and binary else "regression"


def _auc(pairs: Sequence[tuple[float, float]]) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half."""
    positives = sum(1 for _, y in pairs if y >= 0.5)
    negatives = len(pairs) - positives
    if not positives or not negatives:
        return None
    ordered = sorted(pairs, key=lambda p: p[0])
    rank_sum, i = 0.0, 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        average_rank = (i + j + 1) / 2  # ranks i+1..j
        rank_sum += average_rank * sum(1 for _, y in ordered[i:j] if y >= 0.5)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
