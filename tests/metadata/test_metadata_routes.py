"""The REST routes this package adds to TF Serving's URL grammar."""

import pytest

from serving.errors import ServingError
from serving.rest.routes import Route, parse_route


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/models/demo:feedback", Route("feedback", "demo", None, None)),
        ("POST", "/v1/models/demo/versions/7:feedback", Route("feedback", "demo", 7, None)),
        ("GET", "/v1/lineage/models/demo", Route("lineage_versions", "demo", None, None)),
        ("GET", "/v1/lineage/models/demo/versions/7", Route("lineage_version", "demo", 7, None)),
        (
            "GET",
            "/v1/lineage/models/demo/diff/7/9",
            Route("lineage_diff", "demo", None, None, ("7", "9")),
        ),
        (
            "GET",
            "/v1/lineage/servers/host:8501",
            Route("lineage_server", "", None, None, ("host:8501",)),
        ),
    ],
)
def test_metadata_routes(method, path, expected):
    assert parse_route(method, path) == expected


def test_feedback_is_post_only():
    with pytest.raises(ServingError):
        parse_route("GET", "/v1/models/demo:feedback")
