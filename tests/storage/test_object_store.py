"""The store interface on both wire protocols, its errors, endpoints and import boundary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from serving.storage.object_store import (
    PreconditionFailed,
    StoreError,
    StoreLocation,
    StoreSettings,
    StoreUnavailable,
    is_bucket_uri,
    parse_location,
)
from serving.storage.s3 import endpoint_from_environment
from serving.storage.stores import open_store
from tests.support.server_process import REPO_ROOT, free_port


def test_parse_location():
    assert parse_location("gs://b/models/m/") == StoreLocation("gs", "b", "models/m")
    assert parse_location("s3://b") == StoreLocation("s3", "b", "")
    assert parse_location("/srv/models").uri == "/srv/models"
    assert parse_location("file:///srv/models").uri == "/srv/models"
    assert (
        parse_location("gs://b/m").child("7", "saved_model.pb").uri == "gs://b/m/7/saved_model.pb"
    )
    assert is_bucket_uri("s3://b/m") and not is_bucket_uri("/m") and not is_bucket_uri("hdfs://x")
    with pytest.raises(ValueError, match="names no bucket"):
        parse_location("gs:///m")
    with pytest.raises(ValueError, match="Unsupported store URI"):
        parse_location("hdfs://namenode/m")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, (None, True)),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}, ("http://minio:9000", True)),
        ({"S3_ENDPOINT": "ceph.local", "S3_VERIFY_SSL": "0"}, ("https://ceph.local", False)),
        ({"S3_ENDPOINT": "https://x:1"}, ("https://x:1", True)),
        # botocore's own variable wins (botocore reads it itself).
        ({"S3_ENDPOINT": "minio:9000", "AWS_ENDPOINT_URL_S3": "http://o:1"}, (None, True)),
    ],
)
def test_s3_endpoint_follows_tf_serving_and_botocore_conventions(environ, expected):
    assert endpoint_from_environment(environ) == expected


def test_objects_round_trip_with_create_if_absent(emulator, base_uri, tmp_path):
    calls: list[str] = []
    location = parse_location(base_uri)
    store = open_store(location, StoreSettings(on_request=calls.append))
    key = location.child("1", "a.txt").prefix

    store.put(key, b"first", if_absent=True)
    with pytest.raises(PreconditionFailed):
        store.put(key, b"second", if_absent=True)
    assert store.read(key) == b"first"
    local = tmp_path / "b.bin"
    local.write_bytes(os.urandom(3000))
    store.upload(str(local), location.child("1", "dir", "b.bin").prefix)
    store.copy(key, location.child("2", "a.txt").prefix)

    calls.clear()
    listed = store.list(location.prefix)
    assert calls == ["list"]  # one request for the whole recursive listing
    assert [(o.key, o.size) for o in listed] == [
        ("1/a.txt", 5),
        ("1/dir/b.bin", 3000),
        ("2/a.txt", 5),
    ]
    before = listed[0].revision
    store.put(key, b"rewritten")
    assert store.list(location.prefix)[0].revision != before
    out = tmp_path / "out.bin"
    store.download(location.child("1", "dir", "b.bin").prefix, str(out))
    assert out.read_bytes() == local.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.read(location.child("nope").prefix)
    store.delete(key)
    store.delete(key)  # deleting a missing key is fine (deletes are retried)
    assert [o.key for o in store.list(location.prefix)] == ["1/dir/b.bin", "2/a.txt"]
    assert store.list(location.child("empty").prefix) == []


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_unreachable_store_raises_store_unavailable(scheme, monkeypatch):
    port = free_port()  # nothing listens there
    if scheme == "gs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    else:
        monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{port}")
        monkeypatch.setenv("S3_USE_HTTPS", "0")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    store = open_store(
        parse_location(f"{scheme}://models/m"),
        StoreSettings(retry_deadline_seconds=1.0, request_timeout_seconds=2.0),
    )
    with pytest.raises(StoreUnavailable, match="did not answer"):
        store.list("m")


def test_missing_google_credentials_say_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud application-default credentials
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")  # no metadata server either
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")
    with pytest.raises(StoreError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        open_store(parse_location("gs://models/m"))


def test_server_import_path_loads_no_cloud_sdk():
    """The SDKs are imported when a bucket is first polled, not by the server's modules."""
    code = (
        "import sys, serving.cli, serving.server, serving.storage.sources\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore') "
        "or m.startswith('google.cloud.storage'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=REPO_ROOT,
    )
    assert result.stdout.strip() == ""
