"""One summary line per component execution, visible at TFX's default log threshold.

TFX logs through absl, which shows WARNING and above unless the pipeline script calls
``absl.logging.set_verbosity(absl.logging.INFO)`` (LocalDagRunner sets no level; absl's
default verbosity is WARNING until flags are parsed). A pipeline run with defaults therefore
says nothing about what our components did: whether the model was blessed, which version was
pushed. These lines are that answer, so they go to the ``tfx_serving_suite`` logger, whose
level is INFO unless the application set one (``logging.getLogger("tfx_serving_suite")
.setLevel(logging.WARNING)`` silences them). The level, not the message, stays INFO: a
successful push is not a warning.

Each record also carries ``summary_component`` and ``summary`` attributes, so a progress view
(:mod:`pipelines.run_events`) can show the line next to the component without parsing text.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "tfx_serving_suite"


def summary_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logging.root.handlers and not logger.handlers:
        # What absl itself does before its first record (absl/logging/__init__.py: log()), so
        # the line reaches stderr even when nothing has logged through absl yet.
        logging.basicConfig()
    return logger


def log_summary(component: str, summary: str) -> None:
    """Logs ``<component>: <summary>`` at INFO on the ``tfx_serving_suite`` logger."""
    summary_logger().info(
        "%s: %s",
        component,
        summary,
        extra={"summary_component": component, "summary": summary},
    )
