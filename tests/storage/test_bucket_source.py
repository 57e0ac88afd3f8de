"""BucketVersionSource decisions and fetches, against the emulators (no server process)."""

from __future__ import annotations

import os

import pytest

from components import store_io
from components.bucket_store import BucketModelStore
from components.manifest import build_manifest
from serving.errors import Code, ServingError
from serving.storage.bucket_layout import CLAIM_FILENAME
from serving.storage.bucket_source import BucketVersionSource
from serving.storage.manifest import local_manifest_paths
from serving.storage.object_store import PUBLISHING, parse_location
from serving.storage.stores import open_store
from serving.storage.version_cache import VersionCache


@pytest.fixture
def source(base_uri, tmp_path) -> BucketVersionSource:
    return BucketVersionSource("m", base_uri, VersionCache(str(tmp_path / "cache")))


def test_marked_version_is_ready_at_once_and_fetched_verified(source, base_uri, half_plus_two_dirs):
    model = half_plus_two_dirs[2.0]
    version = BucketModelStore(base_uri).publish(model, build_manifest(model)).version

    discovery = source.poll()

    assert list(discovery.ready) == [version] and not discovery.changing
    local = source.fetch(f"{base_uri}/{version}")
    assert sorted(local_manifest_paths(local)) == sorted(build_manifest(model).files)
    build_manifest(model).verify(local)
    # A second fetch (e.g. after a restart) reuses the cached copy.
    assert source.fetch(f"{base_uri}/{version}") == local


def test_claimed_unmarked_version_is_never_ready(source, base_uri, half_plus_two_dirs):
    store_io.upload_tree(half_plus_two_dirs[2.0], f"{base_uri}/5")
    store_io.write_bytes(f"{base_uri}/5/{CLAIM_FILENAME}", b"{}")

    for _ in range(3):
        discovery = source.poll()
        assert discovery.pending == {5: "push in progress (claimed, no completion marker yet)"}
        assert not discovery.ready


def test_foreign_version_is_ready_after_an_unchanged_second_poll(
    source, base_uri, half_plus_two_dirs
):
    model = half_plus_two_dirs[2.0]
    store_io.write_bytes(f"{base_uri}/3/variables/variables.index", b"partial")
    assert source.poll().pending == {3: "no saved_model.pb or saved_model.pbtxt yet"}
    store_io.upload_tree(model, f"{base_uri}/3")
    assert source.poll().changing == {3}  # complete now, but changed since the last poll
    discovery = source.poll()
    assert list(discovery.ready) == [3]
    local = source.fetch(f"{base_uri}/3")
    build_manifest(model).verify(local)


def test_fetch_rejects_a_copy_that_does_not_match_the_marker(source, base_uri, half_plus_two_dirs):
    model = half_plus_two_dirs[2.0]
    version = BucketModelStore(base_uri).publish(model, build_manifest(model)).version
    location = parse_location(base_uri)
    store = open_store(location, PUBLISHING)
    key = location.child(str(version), "variables", "variables.index").prefix
    data = store.read(key)
    store.put(key, data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, different bytes
    source.poll()

    with pytest.raises(ServingError) as raised:
        source.fetch(f"{base_uri}/{version}")

    assert raised.value.code == Code.DATA_LOSS
    assert "variables/variables.index" in raised.value.message
    assert os.listdir(source._cache.root) == ["m"]
    assert os.listdir(os.path.join(source._cache.root, "m")) == []  # nothing half-made kept


def test_unreachable_or_empty_store_keeps_what_is_loaded(base_uri, tmp_path):
    empty = BucketVersionSource("m", base_uri, VersionCache(str(tmp_path / "c1")))
    assert not empty.poll().base_path_exists
    missing_bucket = BucketVersionSource(
        "m", base_uri.replace("://models/", "://no-such-bucket/"), VersionCache(str(tmp_path))
    )
    assert not missing_bucket.poll().base_path_exists
