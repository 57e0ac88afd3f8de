"""``POST /v1/models/{m}[/versions/{v}]:feedback``: ground-truth labels joined by request id.

Body::

    {"labels": [{"request_id": "abc", "label": 1},
                {"request_id": "def", "label": [0, 1]},       # one per row of a batch request
                {"request_id": "ghi", "row": 2, "label": 0.5}]}

The answer lists what was accepted, every id that could not be joined and why (never dropped
silently), and the version metrics after the update. Runs on a worker thread: it touches only
the local index, never MLMD; the metrics go to MLMD through the reporter's spool.
"""

from __future__ import annotations

from typing import Any

from serving.errors import invalid_argument
from serving.metadata.prediction_index import LoggedRequest
from serving.metadata.prediction_log import PredictionLogger
from serving.metadata.reporter import MetadataReporter

_MAX_LABELS = 10_000
_NOT_LOGGED = (
    "no logged prediction with this id on this server (sampled out, made on another server, "
    "or never made)"
)


class FeedbackService:
    def __init__(self, logger: PredictionLogger, reporter: MetadataReporter | None) -> None:
        self._logger = logger
        self._reporter = reporter

    def submit(self, model: str, version: int | None, body: Any) -> dict[str, Any]:
        items = _items(body)
        self._logger.wait_idle(1.0)
        index = self._logger.index
        logged = index.lookup(item["request_id"] for item in items)
        accepted: list[tuple[str, int, float]] = []
        unknown: list[dict[str, str]] = []
        versions: set[str] = set()
        for item in items:
            rid = item["request_id"]
            found = logged.get(rid)
            reason = _mismatch(found, model, version)
            if reason is None:
                try:
                    rows = _labels(item, found)
                except ValueError as exc:
                    reason = str(exc)
            if reason is not None:
                unknown.append({"request_id": rid, "reason": reason})
                continue
            accepted.extend((rid, row, label) for row, label in rows)
            versions.add(found.version)
        index.add_labels(accepted)
        metrics = [index.metrics(model, v) for v in sorted(versions)]
        if self._reporter is not None:
            for m in metrics:
                self._reporter.report_live_metrics(m)
        return {
            "accepted": len(accepted),
            "unknown": unknown,
            "metrics": [m.as_dict() for m in metrics],
        }


def _items(body: Any) -> list[dict[str, Any]]:
    labels = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(labels, list) or not labels:
        raise invalid_argument(
            'Feedback needs {"labels": [{"request_id": "...", "label": <number or list>}]}'
        )
    if len(labels) > _MAX_LABELS:
        raise invalid_argument(f"At most {_MAX_LABELS} labels per feedback call")
    for i, item in enumerate(labels):
        if not isinstance(item, dict) or not isinstance(item.get("request_id"), str):
            raise invalid_argument(f"labels[{i}] needs a string request_id")
        if "label" not in item:
            raise invalid_argument(f"labels[{i}] ({item['request_id']}) has no label")
    return labels


def _mismatch(found: LoggedRequest | None, model: str, version: int | None) -> str | None:
    if found is None:
        return _NOT_LOGGED
    if found.model != model:
        return f"logged for model {found.model!r}, not {model!r}"
    if version is not None and found.version != str(version):
        return f"answered by version {found.version}, not {version}"
    return None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"label {value!r} is not a number")
    return float(value)


def _labels(item: dict[str, Any], found: LoggedRequest) -> list[tuple[int, float]]:
    label = item["label"]
    if isinstance(label, list):
        if len(label) != found.rows:
            raise ValueError(f"{len(label)} labels for a request of {found.rows} rows")
        return [(row, _number(v)) for row, v in enumerate(label)]
    row = item.get("row", 0 if found.rows == 1 else None)
    if not isinstance(row, int) or not 0 <= row < found.rows:
        raise ValueError(
            f"the request had {found.rows} rows: send a list of {found.rows} labels or a "
            "'row' index"
        )
    return [(row, _number(label))]
