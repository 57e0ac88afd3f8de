from google.protobuf import text_format

from serving.core.version_policy import VersionPolicy, describe, select_versions


def _policy(text: str) -> VersionPolicy:
    return text_format.Parse(text, VersionPolicy())


def test_default_is_latest_one():
    assert select_versions("m", VersionPolicy(), [1, 5, 3]) == {5}
    assert describe(VersionPolicy()) == "latest{1}"


def test_latest_n_all_specific():
    assert select_versions("m", _policy("latest { num_versions: 2 }"), [1, 5, 3]) == {3, 5}
    assert select_versions("m", _policy("latest { num_versions: 0 }"), [1, 2]) == {2}
    assert select_versions("m", _policy("all {}"), [1, 5, 3]) == {1, 3, 5}
    specific = _policy("specific { versions: 3 versions: 9 }")
    assert select_versions("m", specific, [1, 3, 5]) == {3}
    assert describe(specific) == "specific[3, 9]"
    assert select_versions("m", _policy("specific {}"), [1, 3]) == set()
