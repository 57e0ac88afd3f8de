"""The server must install and run without tfx/apache-beam (its own container)."""

import subprocess
import sys

FORBIDDEN = ("tfx", "apache_beam", "ml_metadata", "kfp")


def test_server_import_path_does_not_touch_tfx():
    code = (
        "import sys, serving.cli, serving.server, serving.rest.app\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""
