"""The REST app's seam for plug-ins (serving.rest.app.ExtraRoute), driven in-process as ASGI."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import orjson

from serving.errors import not_found
from serving.rest.app import ExtraRoute, RestApi, RestOptions
from serving.security.auth import TokenAuthenticator


def _call(app: RestApi, method: str, path: str, headers=(), body: bytes = b""):
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode()}
    scope["headers"] = list(headers)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, payload = sent
    return start["status"], dict(start["headers"]), payload["body"]


async def _page(match: re.Match[str], body: bytes) -> bytes:
    if match.group(1) == "missing":
        raise not_found("no such page")
    return f"<p>{match.group(1)}</p>".encode()


def _app(**options) -> RestApi:
    route = ExtraRoute("GET", re.compile(r"/status/(\w+)"), _page, b"text/html")
    service = SimpleNamespace(metrics=None, core=None)  # extra routes reach neither
    return RestApi(service, RestOptions(extra_routes=(route,), **options))


def test_an_extra_route_answers_with_its_content_type_and_a_request_id():
    status, headers, body = _call(_app(), "GET", "/status/main")
    assert (status, body) == (200, b"<p>main</p>")
    assert headers[b"content-type"] == b"text/html"
    assert len(headers[b"x-request-id"]) == 32


def test_an_extra_route_error_is_the_usual_json_error():
    status, headers, body = _call(_app(), "GET", "/status/missing")
    assert status == 404
    assert headers[b"content-type"] == b"application/json"
    assert orjson.loads(body) == {"error": "no such page"}


def test_an_extra_route_needs_a_token_like_any_api_call():
    app = _app(authenticator=TokenAuthenticator(frozenset({b"secret"})))
    assert _call(app, "GET", "/status/main")[0] == 401
    ok = _call(app, "GET", "/status/main", [(b"authorization", b"Bearer secret")])
    assert ok[0] == 200


def test_plugin_urls_without_the_plugin_name_the_flag_to_set():
    app = _app()
    status, _, body = _call(app, "POST", "/v1/models/m:feedback", body=b"{}")
    assert status == 400
    assert orjson.loads(body)["error"] == "Feedback needs --prediction_log_dir on this server"
    status, _, body = _call(app, "GET", "/v1/lineage/models/m")
    assert status == 400
    assert "--metadata_connection" in orjson.loads(body)["error"]
    assert _call(app, "GET", "/nowhere")[0] == 404
