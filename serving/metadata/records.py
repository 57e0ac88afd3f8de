"""The project's metadata interface: what serving reports and what lineage asks.

MLMD's future is uncertain (Kubeflow Pipelines removed it; its last release is 1.16), so the
worker and the CLI talk to this protocol only. :mod:`serving.metadata.mlmd_backend` implements
it on MLMD; replacing MLMD means writing another implementation, not touching serving.

Report payloads are plain JSON dicts (they travel through the spool); the keys each ``record_*``
reads are listed in :mod:`serving.metadata.reports`. Every ``record_*`` is idempotent on the ids
in its payload, because the worker may replay a report after a crash.
"""

from __future__ import annotations

from typing import Any, Protocol

Payload = dict[str, Any]


class RetryLater(Exception):
    """Raised by a ``record_*`` whose prerequisite is not in the store yet (a PushedModel the
    Pusher is still publishing); the worker keeps the report and tries again."""


class ServingRecords(Protocol):
    def record_server_started(self, payload: Payload) -> None: ...

    def record_version_loaded(self, payload: Payload) -> None: ...

    def record_version_load_failed(self, payload: Payload) -> None: ...

    def record_version_unloaded(self, payload: Payload) -> None: ...

    def record_prediction_log(self, payload: Payload) -> None: ...

    def record_live_metrics(self, payload: Payload) -> None: ...

    def record_heartbeat(self, payload: Payload) -> None: ...

    def record_feedback_examples(self, payload: Payload) -> int:
        """Registers exported feedback Examples; returns the artifact id."""
        ...
