"""The status page (/status) in a real headless browser, against a running server.

The server runs on the current serving stack with its MLMD worker on the TFX stack (the
serving image's configuration), serves two versions of one model under the labels ``stable``
and ``canary`` with a 75/25 traffic split, logs every prediction, and reports to a SQLite
MLMD store holding a pipeline run for each version. Debian's chromium loads the page, runs its
script (which fetches /status/snapshot.json and the lineage pictures), and the DOM it leaves
is checked; a desktop and a phone-sized screenshot are saved next to the test's files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from serving.metadata.config import parse_connection
from serving.metadata.mlmd_store import connect
from tests.metadata.history import seed_run
from tests.support.models import write_half_plus_two
from tests.support.server_process import REPO_ROOT, ServerProcess
from tests.support.stacks import server_on_current_stack

V1, V2 = 1700000000, 1700003600
SPLIT = {"stable": 75, "canary": 25}
# half_plus_two: y = 0.5 x + 2. Version V1 answers x = 1, 2 (labelled 3, 2: a regression);
# V2 answers scores 0.2, 0.7, 0.9 (labelled 0, 0, 1: a classifier).
REGRESSION = {"x": [1.0, 2.0], "labels": [3.0, 2.0]}
CLASSIFIER = {"x": [-3.6, -2.6, -2.2], "labels": [0, 0, 1]}


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0:
        subprocess.run([str(REPO_ROOT / "scripts" / "ensure_chromium.sh")], check=True)
        found = shutil.which("chromium")
    if found is None:
        message = "chromium is not installed: run scripts/ensure_chromium.sh as root"
        if os.environ.get("CI"):  # CI must drive the real browser, never skip it
            pytest.fail(message)
        pytest.skip(message)
    return found


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium with virtual time: the page's timers run, network fetches pause it
    (so the snapshot and the pictures arrive before the DOM is dumped / the shot taken)."""
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # root in a container: chromium's sandbox needs user namespaces
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=8000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


# HTML's void elements: no end tag in the DOM dump.
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}


class _Dom(HTMLParser):
    """The rendered DOM as (tag, attributes, text inside) for every element."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        texts: list[str] = []
        self.elements.append((tag, dict(attrs), texts))
        if tag not in _VOID:
            self._open.append((tag, texts))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), []))

    def handle_endtag(self, tag):
        while self._open:  # close up to the matching element (the DOM dump is well formed)
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, texts in self._open:
            texts.append(data)

    def find(self, tag: str, **attrs: str) -> list[tuple[dict[str, str], str]]:
        found = []
        for t, a, texts in self.elements:
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                found.append((a, "".join(texts)))
        return found


def _config(base: Path) -> str:
    return f"""model_config_list {{ config {{
        name: "demo" base_path: "{base}" model_platform: "tensorflow"
        model_version_policy {{ specific {{ versions: {V1} versions: {V2} }} }}
        version_labels {{ key: "stable" value: {V1} }}
        version_labels {{ key: "canary" value: {V2} }} }} }}"""


def _predict_and_label(server: ServerProcess, label: str, case: dict) -> None:
    labels = []
    for x, y in zip(case["x"], case["labels"], strict=True):
        status, body, headers = server.request_with_headers(
            "POST", f"/v1/models/demo/labels/{label}:predict", {"instances": [x]}
        )
        assert status == 200, body
        labels.append({"request_id": headers["x-request-id"], "label": y})
    status, body = server.json("POST", "/v1/models/demo:feedback", {"labels": labels})
    assert status == 200 and body["accepted"] == len(labels) and not body["unknown"], body


@pytest.mark.integration
def test_status_page_in_a_headless_browser(tmp_path):
    chromium = _chromium()
    base = tmp_path / "models" / "demo"
    for version in (V1, V2):
        write_half_plus_two(str(base / str(version)))
    connection = f"sqlite://{tmp_path / 'metadata.sqlite'}"
    store = connect(parse_connection(connection))
    seed_run(store, "run-1", str(V1), f"{base}/{V1}")
    seed_run(store, "run-2", str(V2), f"{base}/{V2}")
    del store  # closes this process's connection before the server's worker opens its own
    (tmp_path / "models.config").write_text(_config(base))
    (tmp_path / "split.json").write_text(json.dumps({"models": {"demo": SPLIT}}))
    args = [
        f"--model_config_file={tmp_path / 'models.config'}",
        f"--traffic_split_config_file={tmp_path / 'split.json'}",
        f"--metadata_connection={connection}",
        f"--metadata_spool_dir={tmp_path / 'spool'}",
        f"--prediction_log_dir={tmp_path / 'predictions'}",
        "--prediction_log_sampling=1.0",
    ]
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with ServerProcess(args, **server_on_current_stack()) as server:
        # (GET /v1/models/demo answers for one label's version under a split: ask each.)
        for version in (V1, V2):
            server.wait_for(lambda v=version: server.available_versions(f"demo/versions/{v}"))
        _predict_and_label(server, "stable", REGRESSION)
        _predict_and_label(server, "canary", CLASSIFIER)

        def lineage_ready():
            status, doc = server.json("GET", "/status/snapshot.json")
            versions = doc["models"][0]["versions"] if status == 200 else []
            return all((v["lineage"] or {}).get("svg") for v in versions) and len(versions) == 2

        server.wait_for(lineage_ready, timeout=60)
        url = f"{server.url}/status"
        dom_text = _browser(chromium, tmp_path / "profile", "--dump-dom", url).stdout
        desktop = artifacts / "status-page.png"
        phone = artifacts / "status-page-phone.png"
        for shot, size in ((desktop, "1280,1600"), (phone, "390,2400")):
            profile = tmp_path / "profile"
            _browser(chromium, profile, f"--screenshot={shot}", f"--window-size={size}", url)
    (artifacts / "status-page.html").write_text(dom_text)
    print(f"\nstatus page artifacts (DOM, screenshots): {artifacts}")

    dom = _Dom()
    dom.feed(dom_text)
    [(_, header)] = dom.find("span", id="refresh")
    assert header.startswith("updated"), header  # the script fetched and rendered a snapshot
    [(_, model)] = dom.find("section", data_model="demo")
    assert str(base) in model
    rows = {int(a["data-version"]): (a["data-state"], text) for a, text in dom.find("tr")[1:]}
    assert set(rows) == {V1, V2}
    assert {state for state, _ in rows.values()} == {"AVAILABLE"}
    chips = {a["data-label"]: text for a, text in dom.find("span", **{"class": "chip"})}
    assert chips == {"stable": f"stable → {V1}", "canary": f"canary → {V2}"}
    split = {a["data-split-label"]: text for a, text in dom.find("span") if "data-split-label" in a}
    assert split == {label: f"{label} {w}%" for label, w in SPLIT.items()}  # of 100

    feedback = [text for a, text in dom.find("td", data_label="feedback")]
    served = [int(a["data-version"]) for a, _ in dom.find("tr")[1:]]
    by_version = dict(zip(served, feedback, strict=True))
    errors = [0.5 * x + 2 - y for x, y in zip(REGRESSION["x"], REGRESSION["labels"], strict=True)]
    mae = sum(abs(e) for e in errors) / len(errors)
    rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert by_version[V1] == f"MAE {mae:.3f}, RMSE {rmse:.3f}, 2 labelled of 2"
    scores = [0.5 * x + 2 for x in CLASSIFIER["x"]]
    correct = sum((s >= 0.5) == (y == 1) for s, y in zip(scores, CLASSIFIER["labels"], strict=True))
    accuracy = correct / len(scores)
    # One positive (0.9) scored above both negatives (0.2, 0.7): AUC 1.
    assert by_version[V2] == f"accuracy {accuracy:.3f}, AUC 1.000, 3 labelled of 3"
    counts = dict(
        zip(served, [text for _, text in dom.find("td", data_label="requests")], strict=True)
    )
    assert counts == {V1: str(len(REGRESSION["x"])), V2: str(len(CLASSIFIER["x"]))}

    lineage = {int(a["data-version"]): text for a, text in dom.find("details")}
    assert set(lineage) == {V1, V2}
    assert "run-1" in lineage[V1] and "run-2" in lineage[V2]
    titles = [text for _, text in dom.find("title")][1:]  # the page's own title first
    assert sorted(titles) == [f"Lineage of model demo version {v}" for v in (V1, V2)]
    assert len(dom.find("svg")) == 2
    for shot in (desktop, phone):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
