"""Worker side of a watched pipeline run: node states as JSON-line events on a pipe.

Where the states come from, and why: LocalDagRunner runs the nodes one after another in the
calling thread and logs ``"Component %s is running."`` before launching a node and
``"Component %s is finished."`` after it returned (tfx/orchestration/local/local_dag_runner.py,
TFX 1.16). A logging handler that matches those two records by their unformatted template and
node-id argument sees every transition at the moment it happens, in the process that makes
it, with no second MLMD client: polling the SQLite store from another process would take
read locks the runner's writes then wait on (see docs/metadata.md on embedded MLMD), and the
pipeline root shows when a node starts but not when it ends. A failure is the exception
LocalDagRunner raises, reported against the node that was running. After the run, the final
states are read from MLMD once, by this same process (see ``serving_demo.run_summary``).

Our components' summary lines (:mod:`components.summary`) ride along as ``detail`` events.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from components.summary import LOGGER_NAME as SUMMARY_LOGGER

RUNNING_TEMPLATE = "Component %s is running."
FINISHED_TEMPLATE = "Component %s is finished."
SKIPPED_TEMPLATE = "Skipping component %s."

# TFX's multi-line dumps of protos and ExecutionInfo reprs (tfx/orchestration/local and
# portable/launcher.py): hundreds of lines per run that repeat what MLMD records anyway.
PROTO_DUMP_TEMPLATES = frozenset(
    {
        "Using deployment config:\n %s",
        "Using connection config:\n %s",
        "Using run_options:\n %s",
        "Running launcher for %s",
        "[%s] Resolved inputs: %s",
        "Going to run a new execution: %s",
        "Publishing output artifacts %s for execution %s",
    }
)


class EventWriter:
    """JSON lines on a file descriptor inherited from the watching process."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class NodeEventHandler(logging.Handler):
    """Turns LocalDagRunner's node records and our summary records into events."""

    def __init__(self, writer: EventWriter) -> None:
        super().__init__(level=logging.INFO)
        self._writer = writer
        self.current_node: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        template, args = record.msg, record.args
        if template in (RUNNING_TEMPLATE, FINISHED_TEMPLATE, SKIPPED_TEMPLATE):
            (node,) = args if isinstance(args, tuple) else (args,)
            node = str(node)
            if template == RUNNING_TEMPLATE:
                self.current_node = node
                self._writer.send("running", node=node)
            elif template == FINISHED_TEMPLATE:
                self.current_node = None
                self._writer.send("finished", node=node)
            else:
                self._writer.send("skipped", node=node)
        elif record.name == SUMMARY_LOGGER and hasattr(record, "summary"):
            node = self.current_node or getattr(record, "summary_component", "")
            self._writer.send("detail", node=node, text=record.summary)


class DropProtoDumps(logging.Filter):
    """Leaves TFX's proto dumps out of the log (the records, not just their text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg in PROTO_DUMP_TEMPLATES)
