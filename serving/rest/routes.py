"""TF Serving's REST URL grammar (http_rest_api_util.cc), decoded into a :class:`Route`.

The path is matched case-insensitively on the *raw* (still percent-encoded) path and the
captured model name / label are URL-decoded afterwards, exactly as upstream does, so a model
or label may contain any character except ``/`` and ``:``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote

from serving.errors import invalid_argument

_INT64_MAX = 2**63 - 1

_INFERENCE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict|feedback)",
    re.IGNORECASE,
)
_INFO = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
# Beyond TF Serving, answered by the metadata plug-in (serving.metadata.rest_routes) when the
# server runs it: lineage from the metadata store, and feedback on logged predictions.
LINEAGE_PATH = re.compile(
    r"/v1/lineage/(?:models/([^/:]+)(?:/versions/(\d+)|/diff/(\d+)/(\d+))?|servers/([^/]+))",
    re.IGNORECASE,
)
FEEDBACK_PATH = re.compile(r"(?i:/v1/models/[^/:]+(?:/versions/\d+|/labels/[^/:]+)?):feedback")
API_PREFIX = re.compile(r"/v1/", re.IGNORECASE)

INFERENCE_VERBS = ("classify", "regress", "predict", "feedback")


@dataclass(frozen=True)
class Route:
    """``kind`` is one of predict/classify/regress/feedback/status/metadata/list, or
    lineage_version/lineage_versions/lineage_diff/lineage_server (``extra`` holds the diff's
    versions or the server id)."""

    kind: str
    model: str
    version: int | None
    label: str | None
    extra: tuple[str, ...] = ()


def _malformed(method: str, path: str) -> Exception:
    return invalid_argument(f"Malformed request: {method} {path}")


def _version(text: str | None) -> int | None:
    """A ``\\d+`` version as TF Serving reads it (``absl::SimpleAtoi`` into int64): leading
    zeros are fine, anything beyond int64 is a 400. Long strings are refused by their length
    before ``int()``, which would also refuse past 4300 digits, with a ValueError."""
    if text is None:
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(_INT64_MAX)) or int(digits) > _INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return int(digits)


# Clients repeat a few URLs, so their routes are kept (a Route is immutable): matching,
# URL-decoding and building one took ~3 us of every request. Only short paths are kept, so a
# client sending endless distinct paths holds at most this many entries of this many chars.
_KEPT_ROUTES = 512
_KEPT_PATH_CHARS = 256


def parse_route(method: str, raw_path: str) -> Route:
    """The route for a ``/v1/...`` request, or INVALID_ARGUMENT with upstream's texts."""
    if len(raw_path) <= _KEPT_PATH_CHARS:
        return _kept_route(method, raw_path)
    return _parse_route(method, raw_path)


def _parse_route(method: str, raw_path: str) -> Route:
    if method == "POST":
        match = _INFERENCE.fullmatch(raw_path)
        if not match or match.group(4) not in INFERENCE_VERBS:  # the verb is case-sensitive
            raise _malformed(method, raw_path)
        name, version, label, verb = match.groups()
        return Route(verb, unquote(name), _version(version), unquote(label) if label else None)
    if method == "GET" and (lineage := LINEAGE_PATH.fullmatch(raw_path)):
        return _lineage_route(*lineage.groups())
    if method == "GET":
        match = _INFO.fullmatch(raw_path)
        if not match:
            raise _malformed(method, raw_path)
        name, version, label, metadata = match.groups()
        if name is None:
            if version is None and label is None and metadata is None:
                return Route("list", "", None, None)  # beyond TF Serving (its issue #795)
            raise invalid_argument("Missing model name in request.")
        return Route(
            "metadata" if metadata else "status",
            unquote(name),
            _version(version),
            unquote(label) if label else None,
        )
    raise _malformed(method, raw_path)


_kept_route = functools.lru_cache(maxsize=_KEPT_ROUTES)(_parse_route)  # errors are not kept


def _lineage_route(
    model: str | None,
    version: str | None,
    first: str | None,
    second: str | None,
    server: str | None,
) -> Route:
    if server is not None:
        return Route("lineage_server", "", None, None, (unquote(server),))
    if first is not None and second is not None:
        return Route("lineage_diff", unquote(model or ""), None, None, (first, second))
    if version is not None:
        return Route("lineage_version", unquote(model or ""), _version(version), None)
    return Route("lineage_versions", unquote(model or ""), None, None)
