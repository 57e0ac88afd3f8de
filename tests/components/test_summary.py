"""Component summary lines reach stderr at absl's default threshold (what LocalDagRunner uses)."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A fresh interpreter configured as a pipeline script that sets no log level: absl's
# verbosity stays WARNING, so absl INFO records (TFX's own) are dropped.
_SCRIPT = """
from absl import logging as absl_logging
from components.summary import log_summary
absl_logging.info("absl info: hidden at the default verbosity")
absl_logging.warning("absl warning: shown")
log_summary("Pusher", "pushed version 7 to /models/m")
"""


def test_summary_is_visible_where_absl_info_is_not():
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "absl info" not in result.stderr
    assert "absl warning: shown" in result.stderr
    assert "Pusher: pushed version 7 to /models/m" in result.stderr


def test_application_level_wins():
    script = (
        "import logging\n"
        "logging.getLogger('tfx_serving_suite').setLevel(logging.WARNING)\n" + _SCRIPT
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "absl warning: shown" in result.stderr
    assert "pushed version 7" not in result.stderr
