"""The status page's routes on the REST port (``--status_page``, on by default).

``GET /status``                                 the page (one self-contained HTML file)
``GET /status/snapshot.json``                   what the page shows, refreshed by its script
``GET /status/lineage/<model>/<version>.svg``   a served version's lineage picture

The HTML is a package resource with its CSS and script inline and no external asset, so it
works offline and behind the same TLS and auth as the API (it is served by the same app).
"""

from __future__ import annotations

import re
from importlib import resources

import orjson

from serving.errors import failed_precondition, invalid_argument, not_found
from serving.rest.app import ExtraRoute
from serving.status.snapshot import StatusSnapshot

PAGE_PATH = "/status"
SNAPSHOT_PATH = "/status/snapshot.json"
LINEAGE_PREFIX = "/status/lineage/"

_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
_SVG = b"image/svg+xml"


class StatusPage:
    def __init__(self, snapshot: StatusSnapshot) -> None:
        self._snapshot = snapshot
        self._html = resources.files(__package__).joinpath("page.html").read_bytes()

    def routes(self) -> tuple[ExtraRoute, ...]:
        return (
            ExtraRoute("GET", re.compile(re.escape(PAGE_PATH)), self._page, _HTML),
            ExtraRoute("GET", re.compile(re.escape(SNAPSHOT_PATH)), self._document, _JSON),
            ExtraRoute("GET", re.compile(re.escape(LINEAGE_PREFIX) + "(.*)"), self._lineage, _SVG),
        )

    async def _page(self, _match: re.Match[str], _body: bytes) -> bytes:
        return self._html

    async def _document(self, _match: re.Match[str], _body: bytes) -> bytes:
        return orjson.dumps(await self._snapshot.build())

    async def _lineage(self, match: re.Match[str], _body: bytes) -> bytes:
        """The picture of a version the snapshot has fetched lineage for (its cache)."""
        cache = self._snapshot.lineage
        if cache is None:
            raise failed_precondition("Lineage pictures need --metadata_connection")
        model, _, version = match.group(1).removesuffix(".svg").rpartition("/")
        if not model or not version.isdigit():
            raise invalid_argument(
                f"Expected {LINEAGE_PREFIX}<model>/<version>.svg, got {match.group(0)}"
            )
        svg = cache.svg(model, int(version))
        if svg is None:
            raise not_found(f"No lineage fetched for model {model} version {version} (yet)")
        return svg.encode()
