"""The metadata plug-in's REST routes: feedback on logged predictions and lineage queries.

Registered with the REST app as :class:`serving.rest.app.ExtraRoute`s by
:meth:`serving.metadata.services.MetadataServices.rest_routes`, so the REST front end carries
no metadata code; a server without the flags that enable them answers these URLs with
FAILED_PRECONDITION naming the flag (``serving.rest.app``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from serving.errors import invalid_argument
from serving.rest import json_body
from serving.rest.app import ExtraRoute
from serving.rest.routes import FEEDBACK_PATH, LINEAGE_PATH, parse_route

if TYPE_CHECKING:
    from serving.metadata.feedback import FeedbackService


def feedback_route(feedback: FeedbackService) -> ExtraRoute:
    """``POST /v1/models/<m>[/versions/<v>]:feedback``: joined on a worker thread (it reads
    the prediction index) so the event loop keeps serving."""

    async def handle(match: re.Match[str], body: bytes) -> bytes:
        route = parse_route("POST", match.string)
        if route.label is not None:
            raise invalid_argument("Send feedback to /versions/<v>:feedback or the model")
        doc = json_body.parse_json(body)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, feedback.submit, route.model, route.version, doc)
        return orjson.dumps(answer)

    return ExtraRoute("POST", FEEDBACK_PATH, handle)


def lineage_route(lineage: Callable[[dict[str, Any]], Awaitable[Any]]) -> ExtraRoute:
    """``GET /v1/lineage/...``: forwarded to the metadata worker, which owns the store."""

    async def handle(match: re.Match[str], body: bytes) -> bytes:
        route = parse_route("GET", match.string)
        if route.kind == "lineage_version":
            query = {"op": "version", "model": route.model, "version": route.version}
        elif route.kind == "lineage_versions":
            query = {"op": "versions", "model": route.model}
        elif route.kind == "lineage_diff":
            first, second = route.extra
            query = {"op": "diff", "model": route.model, "first": first, "second": second}
        else:
            query = {"op": "server", "server_id": route.extra[0]}
        return orjson.dumps(await lineage(query))

    return ExtraRoute("GET", LINEAGE_PATH, handle)
