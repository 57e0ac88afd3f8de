import os

import pytest

from serving.storage.filesystem import FileInfo
from serving.storage.source import VersionSource, incompleteness, parse_version


def _write(path: str, data: bytes = b"x") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _complete_version(base: str, version: int, shards: int = 1) -> str:
    root = os.path.join(base, str(version))
    _write(os.path.join(root, "saved_model.pb"))
    _write(os.path.join(root, "variables", "variables.index"))
    for i in range(shards):
        _write(os.path.join(root, "variables", f"variables.data-{i:05d}-of-{shards:05d}"))
    return root


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1", 1),
        ("00000123", 123),
        ("0", 0),
        ("v1", None),
        ("1.5", None),
        (".incoming-5-ab", None),
        ("1_000", None),
        ("-5", None),
        ("+7", None),
        (str(2**63), None),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_parse_version(name, expected):
    assert parse_version(name) == expected


def _files(*names: str) -> tuple[FileInfo, ...]:
    return tuple(FileInfo(n, 1, 1) for n in names)


def test_incompleteness_rules():
    assert incompleteness(_files("variables/variables.index")) == (
        "no saved_model.pb or saved_model.pbtxt yet"
    )
    assert incompleteness(_files("saved_model.pb")) is None  # a graph without variables
    assert incompleteness(_files("saved_model.pbtxt", "assets/vocab.txt")) is None
    assert "no variables.index" in incompleteness(
        _files("saved_model.pb", "variables/variables.data-00000-of-00001")
    )
    assert "no data shard" in incompleteness(_files("saved_model.pb", "variables/variables.index"))
    assert "missing data shard(s) [1]" in incompleteness(
        _files(
            "saved_model.pb",
            "variables/variables.index",
            "variables/variables.data-00000-of-00003",
            "variables/variables.data-00002-of-00003",
        )
    )


def test_version_is_ready_only_after_an_unchanged_second_poll(tmp_path):
    base = str(tmp_path)
    _complete_version(base, 1)
    source = VersionSource("m", base)
    first = source.poll()
    assert first.ready == {} and first.changing == {1}
    second = source.poll()
    assert list(second.ready) == [1]
    assert second.ready[1].path == os.path.join(base, "1")


def test_growing_file_keeps_version_changing(tmp_path):
    base = str(tmp_path)
    root = _complete_version(base, 3)
    source = VersionSource("m", base)
    source.poll()
    with open(os.path.join(root, "variables", "variables.data-00000-of-00001"), "ab") as handle:
        handle.write(b"more bytes")
    assert source.poll().changing == {3}
    assert list(source.poll().ready) == [3]


def test_incomplete_and_non_version_children(tmp_path):
    base = str(tmp_path)
    _complete_version(base, 1)
    _write(os.path.join(base, "2", "saved_model.pb"))
    _write(os.path.join(base, "2", "variables", "variables.data-00000-of-00002"))
    _complete_version(os.path.join(base, ".incoming-9-abc"), 9)
    _write(os.path.join(base, "notes.txt"))
    source = VersionSource("m", base)
    source.poll()
    discovery = source.poll()
    assert list(discovery.ready) == [1]
    assert "variables.index" in discovery.pending[2]
    assert discovery.base_path_exists


def test_missing_and_empty_base_path(tmp_path):
    missing = VersionSource("m", str(tmp_path / "nope")).poll()
    assert not missing.base_path_exists
    empty = VersionSource("m", str(tmp_path)).poll()
    assert empty.base_path_exists and not empty.ready and not empty.pending and not empty.changing


def test_model_tflite_completes_a_version_only_with_prefer_tflite_model():
    lite = _files("model.tflite")
    assert incompleteness(lite, accept_tflite=True) is None
    assert "start the server with --prefer_tflite_model=true" in incompleteness(lite)
    # With the flag, a half-copied SavedModel beside model.tflite does not matter: TF Lite runs.
    assert incompleteness(_files("model.tflite", "variables/variables.index"), True) is None


def test_tflite_version_is_discovered_with_the_flag(tmp_path):
    base = str(tmp_path)
    _write(os.path.join(base, "5", "model.tflite"))
    with_flag = VersionSource("m", base, accept_tflite=True)
    with_flag.poll()
    assert list(with_flag.poll().ready) == [5]
    without = VersionSource("m", base)
    without.poll()
    assert "model.tflite" in without.poll().pending[5]
