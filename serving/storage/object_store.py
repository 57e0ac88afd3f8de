"""One small interface over the stores a model can live in: POSIX paths, ``gs://``, ``s3://``.

Object stores have no directories and no rename, so the interface is keys and whole objects:
one recursive ``list`` (the only call a poll makes), ``read``/``download``, ``upload``/``put``
with an optional *create-only-if-absent* precondition (GCS ``ifGenerationMatch=0``, S3
``If-None-Match: *``), ``copy`` and ``delete``. That is everything the Pusher needs to publish
safely and the server needs to discover and fetch versions.

The cloud SDKs (google-cloud-storage, boto3) are imported only when a ``gs://`` / ``s3://`` URI
is opened, so a server on local paths never loads them (``pip install
tfx-serving-suite[buckets]`` adds them). Credentials, endpoints and retries follow each
ecosystem's own conventions; see :mod:`serving.storage.gcs` and :mod:`serving.storage.s3`.
:func:`serving.storage.stores.open_store` picks the implementation for a location.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

BUCKET_SCHEMES = ("gs", "s3")


class StoreError(OSError):
    """A store request failed for a reason retrying will not fix (permissions, no bucket)."""


class StoreUnavailable(StoreError):
    """The store did not answer (network, 5xx, throttling) even after the client's retries."""


class PreconditionFailed(StoreError):
    """A create-if-absent write found the object already there (another writer won)."""


@dataclass(frozen=True)
class StoreObject:
    """One object under a listed prefix.

    ``revision`` changes on every write of the key (GCS generation, S3 ETag + modification
    time), so comparing listings tells a rewritten object from an unchanged one without
    reading it.
    """

    key: str  # relative to the listed prefix, '/'-separated
    size: int
    revision: str
    mtime: float  # seconds since the epoch, from the store


RequestHook = Callable[[str], None]  # called with the operation name for every HTTP request


class ObjectStore(Protocol):
    """A bucket (or a local root) addressed by '/'-separated keys."""

    def list(self, prefix: str) -> list[StoreObject]:
        """Every object whose key starts with ``prefix`` + '/', keys relative to it, sorted.

        All pages of one listing; an empty list when nothing is there (buckets cannot tell a
        missing prefix from an empty one).
        """
        ...

    def read(self, key: str) -> bytes:
        """The whole object; FileNotFoundError if it does not exist."""
        ...

    def download(self, key: str, local_path: str) -> None:
        """Writes the object to ``local_path`` (parent directories must exist)."""
        ...

    def upload(self, local_path: str, key: str) -> None:
        """Creates or replaces ``key`` with the file's bytes."""
        ...

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Writes ``data``; with ``if_absent`` raises PreconditionFailed if ``key`` exists."""
        ...

    def copy(self, source_key: str, target_key: str) -> None: ...

    def delete(self, key: str) -> None:
        """Removes ``key``; a missing key is not an error (deletes are retried)."""
        ...


@dataclass(frozen=True)
class StoreLocation:
    """A parsed ``scheme://bucket/prefix`` URI (``scheme`` "" for local paths)."""

    scheme: str
    bucket: str
    prefix: str  # no leading or trailing '/'

    @property
    def uri(self) -> str:
        if not self.scheme:
            return "/" + self.prefix
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def child(self, *parts: str) -> StoreLocation:
        joined = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return StoreLocation(self.scheme, self.bucket, joined)


def is_bucket_uri(path: str) -> bool:
    return path.split("://", 1)[0] in BUCKET_SCHEMES if "://" in path else False


def parse_location(uri: str) -> StoreLocation:
    """``gs://b/p/q`` -> (gs, b, p/q); a local path or ``file://`` URI -> ("", "", abs path)."""
    if "://" not in uri or uri.startswith("file://"):
        return StoreLocation("", "", os.path.abspath(uri.removeprefix("file://")).strip("/"))
    scheme, rest = uri.split("://", 1)
    if scheme not in BUCKET_SCHEMES:
        raise ValueError(
            f"Unsupported store URI {uri!r}: use a local path, gs://bucket/path or "
            "s3://bucket/path."
        )
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"Store URI {uri!r} names no bucket (expected {scheme}://bucket/path).")
    return StoreLocation(scheme, bucket, prefix.strip("/"))


@dataclass(frozen=True)
class StoreSettings:
    """How patient a client is: the server polls with short deadlines (a poll must not hang
    while the store is down), the Pusher with long ones (a push should ride out a blip)."""

    retry_deadline_seconds: float = 120.0
    request_timeout_seconds: float = 60.0
    on_request: RequestHook | None = None


POLLING = StoreSettings(retry_deadline_seconds=5.0, request_timeout_seconds=10.0)
PUBLISHING = StoreSettings()
