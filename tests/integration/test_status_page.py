"""/status on a running server: behind the API's auth, off with --status_page=false.

The page's content in a real browser (with lineage and feedback) is tested in
tests/metadata/test_status_page_browser.py; this runs on both stacks without ml-metadata.
"""

from __future__ import annotations

import json

import pytest

from tests.support.models import write_half_plus_two
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration


def test_status_page_needs_the_api_token_and_reports_requests(tmp_path):
    write_half_plus_two(str(tmp_path / "m" / "1"))
    (tmp_path / "tokens").write_text("page-token\n")
    args = [f"--model_base_path={tmp_path / 'm'}", "--model_name=m"]
    args.append(f"--auth_token_file={tmp_path / 'tokens'}")
    token = {"Authorization": "Bearer page-token"}
    with ServerProcess(args) as server:
        for path in ("/status", "/status/snapshot.json"):
            assert server.request("GET", path)[0] == 401
        status, page, headers = server.request_with_headers("GET", "/status", headers=token)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"/status/snapshot.json" in page and b"http" not in page.split(b"<body>")[1]
        status, body = server.request(
            "POST", "/v1/models/m:predict", {"instances": [1.0, 2.0]}, token
        )
        assert status == 200, body
        status, body = server.request("GET", "/status/snapshot.json", headers=token)
        [model] = json.loads(body)["models"]
        [version] = model["versions"]
        assert (version["version"], version["state"]) == (1, "AVAILABLE")
        assert version["requests"]["requests"] == 1
        assert version["lineage"] is None and version["feedback"] is None
        # Metrics kept for the page are not exported without --monitoring_config_file.
        assert server.request("GET", "/monitoring/prometheus/metrics", headers=token)[0] == 404
        status, body = server.request("GET", "/status/lineage/m/1.svg", headers=token)
        assert status == 400 and b"--metadata_connection" in body


def test_status_page_can_be_turned_off(tmp_path):
    write_half_plus_two(str(tmp_path / "m" / "1"))
    args = [f"--model_base_path={tmp_path / 'm'}", "--model_name=m", "--status_page=false"]
    with ServerProcess(args) as server:
        assert server.request("GET", "/status")[0] == 404
        assert server.request("GET", "/status/snapshot.json")[0] == 404
