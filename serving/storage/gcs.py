"""``gs://`` buckets through google-cloud-storage (the JSON API).

Credentials are Application Default Credentials, as everywhere on Google Cloud: Workload
Identity / the metadata server on GKE and Vertex AI, ``GOOGLE_APPLICATION_CREDENTIALS``
pointing at a service-account JSON key, or ``gcloud auth application-default login`` on a
workstation. ``STORAGE_EMULATOR_HOST`` (the library's own switch) sends every request to an
emulator such as fake-gcs-server, with anonymous credentials.

Retries use the library's transient-error predicate (connection errors, 408/429/5xx) with
exponential backoff up to the settings' deadline. Uploads into a version the Pusher has
claimed are retried even without a generation precondition: nobody else writes those keys,
so repeating one is harmless. The create-if-absent write is ``ifGenerationMatch=0``, which
the service checks atomically; it is always a small single-request (multipart) upload, the
kind fake-gcs-server also checks (it ignores preconditions on resumable uploads).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import requests.adapters
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from serving.storage.object_store import (
    PreconditionFailed,
    StoreError,
    StoreObject,
    StoreSettings,
    StoreUnavailable,
)

_LIST_FIELDS = "items(name,size,generation,updated),nextPageToken"
_CHUNK = 1 << 20


class _CountingAdapter(requests.adapters.HTTPAdapter):
    """Counts every HTTP request the client sends (retries included): the poll-cost metric."""

    def __init__(self, store: GcsStore) -> None:
        super().__init__(pool_maxsize=16)
        self._store = store

    def send(self, request, **kwargs):  # type: ignore[override]
        self._store.count_request()
        return super().send(request, **kwargs)


class GcsStore:
    def __init__(self, bucket: str, settings: StoreSettings) -> None:
        self._settings = settings
        self._current = threading.local()  # the operation in flight on this thread
        try:
            self._client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        except auth_exceptions.DefaultCredentialsError as exc:
            raise StoreError(
                f"No Google credentials for gs://{bucket}: use Workload Identity, set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or run `gcloud auth "
                f"application-default login` (see docs/object-stores.md): {exc}"
            ) from exc
        adapter = _CountingAdapter(self)
        self._client._http.mount("https://", adapter)
        self._client._http.mount("http://", adapter)
        self._bucket = self._client.bucket(bucket)
        self._retry = DEFAULT_RETRY.with_delay(
            initial=0.2, maximum=5.0, multiplier=2.0
        ).with_timeout(settings.retry_deadline_seconds)
        self._timeout = (
            min(5.0, settings.request_timeout_seconds),
            settings.request_timeout_seconds,
        )

    def count_request(self) -> None:
        if self._settings.on_request is not None:
            self._settings.on_request(getattr(self._current, "operation", "request"))

    @contextlib.contextmanager
    def _call(self, operation: str, key: str) -> Iterator[None]:
        """Names the operation for the request counter and maps SDK errors to ours."""
        self._current.operation = operation
        try:
            yield
        except gexc.PreconditionFailed as exc:
            raise PreconditionFailed(f"gs://{self._bucket.name}/{key} already exists") from exc
        except gexc.NotFound as exc:
            if "bucket" in str(exc).lower() and operation == "list":
                raise StoreError(f"Bucket gs://{self._bucket.name} does not exist") from exc
            raise FileNotFoundError(f"gs://{self._bucket.name}/{key} does not exist") from exc
        except (gexc.Forbidden, gexc.Unauthorized) as exc:
            raise StoreError(
                f"Access to gs://{self._bucket.name}/{key} denied ({exc.code}): give this "
                "identity storage.objects.* on the bucket (see docs/object-stores.md)"
            ) from exc
        except (
            gexc.RetryError,
            gexc.ServerError,
            gexc.TooManyRequests,
            requests.exceptions.RequestException,
            auth_exceptions.TransportError,
            ConnectionError,
        ) as exc:
            raise StoreUnavailable(
                f"gs://{self._bucket.name} did not answer {operation} {key!r}: {exc}"
            ) from exc
        except gexc.GoogleAPICallError as exc:
            raise StoreError(f"gs://{self._bucket.name}/{key}: {exc}") from exc

    def list(self, prefix: str) -> list[StoreObject]:
        start = prefix.strip("/") + "/" if prefix.strip("/") else ""
        with self._call("list", start):
            blobs = self._client.list_blobs(
                self._bucket,
                prefix=start,
                fields=_LIST_FIELDS,
                retry=self._retry,
                timeout=self._timeout,
            )
            found = [
                StoreObject(
                    b.name[len(start) :], int(b.size or 0), str(b.generation), b.updated.timestamp()
                )
                for b in blobs
                if not b.name.endswith("/")  # "directory placeholder" objects of some tools
            ]
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        with self._call("read", key):
            return self._bucket.blob(key).download_as_bytes(
                retry=self._retry, timeout=self._timeout
            )

    def download(self, key: str, local_path: str) -> None:
        with self._call("download", key):
            self._bucket.blob(key, chunk_size=None).download_to_filename(
                local_path, retry=self._retry, timeout=self._timeout
            )

    def upload(self, local_path: str, key: str) -> None:
        with self._call("upload", key):
            self._bucket.blob(key).upload_from_filename(
                local_path, retry=self._retry, timeout=self._timeout, checksum="crc32c"
            )

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with self._call("put", key):
            self._bucket.blob(key).upload_from_string(
                data,
                if_generation_match=0 if if_absent else None,
                retry=self._retry,
                timeout=self._timeout,
            )

    def copy(self, source_key: str, target_key: str) -> None:
        with self._call("copy", source_key):
            source = self._bucket.blob(source_key)
            target = self._bucket.blob(target_key)
            token, _, _ = target.rewrite(source, retry=self._retry, timeout=self._timeout)
            while token is not None:  # large objects are rewritten in several calls
                token, _, _ = target.rewrite(
                    source, token=token, retry=self._retry, timeout=self._timeout
                )

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._call("delete", key):
            self._bucket.blob(key).delete(retry=self._retry, timeout=self._timeout)


def open_bucket(bucket: str, settings: StoreSettings) -> GcsStore:
    return GcsStore(bucket, settings)
