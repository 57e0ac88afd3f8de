"""Builds the serving-side metadata pieces from the server flags (all off unless a flag asks).

Nothing here imports ``ml_metadata``: only the worker process does, possibly on another
interpreter (:mod:`serving.metadata.worker_python`). A configured metadata connection is checked
to be usable (the worker's interpreter has ``ml_metadata`` and this package) before serving
starts, so a missing package is a startup error with a fix, not silent loss of reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serving.core.model_manager import VersionRecord
from serving.errors import (
    ConfigError,
    failed_precondition,
    invalid_argument,
    not_found,
    unavailable,
)
from serving.metadata.config import MetadataConfigError, parse_connection
from serving.metadata.feedback import FeedbackService
from serving.metadata.lineage_svg import render_svg
from serving.metadata.prediction_index import PredictionIndex
from serving.metadata.prediction_log import PredictionLogger
from serving.metadata.reporter import MetadataReporter
from serving.metadata.rest_routes import feedback_route, lineage_route
from serving.metadata.sampling import parse_sampling
from serving.metadata.worker_python import check_worker_python, worker_python
from serving.rest.app import ExtraRoute

log = logging.getLogger(__name__)


class MetadataSetupError(ConfigError):
    """A metadata flag combination that cannot work; the message says what to change."""


@dataclass
class MetadataServices:
    reporter: MetadataReporter | None
    logger: PredictionLogger | None
    feedback: FeedbackService | None

    def start(self) -> None:
        if self.reporter is not None:
            self.reporter.start()

    def close(self) -> None:
        """Logger first: closing its shards spools their reports before the worker drains."""
        if self.logger is not None:
            self.logger.close()
        if self.reporter is not None:
            self.reporter.close()

    def rest_routes(self) -> tuple[ExtraRoute, ...]:
        """What this plug-in adds to the REST port: feedback with ``--prediction_log_dir``,
        lineage with ``--metadata_connection``."""
        routes = []
        if self.feedback is not None:
            routes.append(feedback_route(self.feedback))
        if self.reporter is not None:
            routes.append(lineage_route(self.lineage))
        return tuple(routes)

    def inference_observers(self) -> tuple[PredictionLogger, ...]:
        """Told of every successful inference (``serving.api.inference.InferenceObserver``)."""
        return (self.logger,) if self.logger is not None else ()

    def state_observers(self) -> tuple[Callable[[str, VersionRecord], None], ...]:
        """Told of every version state change (``ServerCore``'s ``on_state_change``)."""
        return (self.reporter.on_state_change,) if self.reporter is not None else ()

    # What the status page reads (serving.status.snapshot.StatusMetadata).
    def feedback_index(self) -> PredictionIndex | None:
        return self.logger.index if self.logger is not None else None

    def has_lineage(self) -> bool:
        return self.reporter is not None

    def lineage_svg(self, view: dict[str, Any]) -> str:
        return render_svg(view)

    async def lineage(self, request: dict[str, Any]) -> Any:
        if self.reporter is None:
            raise failed_precondition("Lineage queries need --metadata_connection on this server")
        answer = await self.reporter.query(request)
        if answer.get("ok"):
            return answer["result"]
        code = answer.get("code", "UNAVAILABLE")
        if code == "NOT_FOUND":
            raise not_found(answer["error"])
        if code == "INVALID_ARGUMENT":
            raise invalid_argument(answer["error"])
        raise unavailable(answer["error"])


def _device() -> str:
    import tensorflow as tf  # already loaded by the servables; asked once at startup

    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def build_metadata_services(options) -> MetadataServices | None:
    """``options`` is :class:`serving.options.ServerOptions`; None when no flag asks."""
    if not options.metadata_connection and not options.prediction_log_dir:
        return None
    reporter = None
    server_id = options.server_id()
    if options.metadata_connection:
        try:
            connection = parse_connection(options.metadata_connection)
        except MetadataConfigError as exc:
            raise MetadataSetupError(f"--metadata_connection: {exc}") from exc
        python = worker_python()
        check_worker_python(python)
        reporter = MetadataReporter(
            os.path.abspath(options.metadata_spool_dir),
            connection,
            server_id,
            _device(),
            options.metadata_spool_max_reports,
            heartbeat_seconds=options.metadata_heartbeat_seconds,
            worker_python=python,
        )
    logger = feedback = None
    if options.prediction_log_dir:
        try:
            rates = parse_sampling(options.prediction_log_sampling)
        except ValueError as exc:
            raise MetadataSetupError(str(exc)) from exc
        logger = PredictionLogger(
            options.prediction_log_dir,
            rates,
            server_id,
            reporter.episode_for if reporter else (lambda _m, _v: None),
            reporter.spool if reporter else None,
        )
        feedback = FeedbackService(logger, reporter)
    return MetadataServices(reporter, logger, feedback)
