"""``s3://`` buckets (AWS S3, MinIO, Ceph RGW, ...) through boto3.

Credentials come from botocore's default chain, as for the AWS CLI: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (a Kubernetes Secret), ``AWS_PROFILE`` and the shared config files,
IRSA on EKS (``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``, injected by the pod identity
webhook), and instance/container metadata.

Custom endpoints: botocore's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, or TF Serving's
``S3_ENDPOINT`` (host[:port], with ``S3_USE_HTTPS=0`` for plain HTTP and ``S3_VERIFY_SSL=0`` to
skip certificate checks), so a MinIO or Ceph setup written for TF Serving works unchanged.
Custom endpoints use path-style addressing (``http://host/bucket/key``), which MinIO and Ceph
accept without wildcard DNS. Region: ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / the profile,
else ``us-east-1``.

Retries are botocore's "standard" mode (exponential backoff with jitter on throttling, 5xx
and connection errors). The create-if-absent write is ``If-None-Match: *`` (S3 conditional
writes; MinIO and moto honour it too); S3 answers 412, or 409 while a concurrent conditional
write to the same key is in flight, and both mean another writer got there first.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
from collections.abc import Iterator

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from serving.storage.object_store import (
    PreconditionFailed,
    StoreError,
    StoreObject,
    StoreSettings,
    StoreUnavailable,
)

_MISSING = {"NoSuchKey", "404", "NotFound"}
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
# Big files go up in parallel 64 MiB parts (S3's single PUT is limited to 5 GiB).
_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)


def endpoint_from_environment(environ: dict[str, str]) -> tuple[str | None, bool]:
    """(endpoint_url, verify) from TF Serving's ``S3_ENDPOINT`` convention, unless botocore's
    own ``AWS_ENDPOINT_URL(_S3)`` is set (botocore reads those itself)."""
    verify = environ.get("S3_VERIFY_SSL", "1").lower() not in ("0", "false")
    if environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL"):
        return None, verify
    endpoint = environ.get("S3_ENDPOINT", "")
    if not endpoint:
        return None, verify
    if "://" not in endpoint:
        https = environ.get("S3_USE_HTTPS", "1").lower() not in ("0", "false")
        endpoint = f"{'https' if https else 'http'}://{endpoint}"
    return endpoint, verify


class S3Store:
    def __init__(self, bucket: str, settings: StoreSettings) -> None:
        self._bucket = bucket
        self._settings = settings
        self._current = threading.local()
        environ = dict(os.environ)
        endpoint, verify = endpoint_from_environment(environ)
        custom = bool(
            endpoint or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
        )
        session = boto3.session.Session()
        # Standard mode retries each request max_attempts times with capped exponential backoff
        # (about 20 s at most); sized so the whole retry chain stays near the deadline.
        attempts = max(2, min(10, 1 + int(math.log2(1 + settings.retry_deadline_seconds))))
        self._client = session.client(
            "s3",
            endpoint_url=endpoint,
            verify=verify,
            region_name=session.region_name or "us-east-1",
            config=Config(
                retries={"mode": "standard", "max_attempts": attempts},
                connect_timeout=min(5.0, settings.request_timeout_seconds),
                read_timeout=settings.request_timeout_seconds,
                s3={"addressing_style": "path" if custom else "auto"},
                max_pool_connections=16,
            ),
        )
        self._client.meta.events.register("before-send.s3", self._count_request)

    def _count_request(self, **_: object) -> None:
        if self._settings.on_request is not None:
            self._settings.on_request(getattr(self._current, "operation", "request"))

    @contextlib.contextmanager
    def _call(self, operation: str, key: str) -> Iterator[None]:
        self._current.operation = operation
        where = f"s3://{self._bucket}/{key}"
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _CONFLICT or status in ("412",):
                raise PreconditionFailed(f"{where} already exists") from exc
            if code == "NoSuchBucket":
                raise StoreError(f"Bucket s3://{self._bucket} does not exist") from exc
            if code in _MISSING or status == "404":
                raise FileNotFoundError(f"{where} does not exist") from exc
            if code in _DENIED or status == "403":
                raise StoreError(
                    f"Access to {where} denied ({code}): check the credentials and the bucket "
                    "policy (see docs/object-stores.md)"
                ) from exc
            if status.startswith("5") or code in ("SlowDown", "RequestTimeout", "Throttling"):
                raise StoreUnavailable(f"{where}: {operation} failed: {exc}") from exc
            raise StoreError(f"{where}: {operation} failed: {exc}") from exc
        except NoCredentialsError as exc:
            raise StoreError(
                f"No AWS credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or IRSA (see docs/object-stores.md)"
            ) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise StoreUnavailable(
                f"s3://{self._bucket} did not answer {operation}: {exc}"
            ) from exc

    def list(self, prefix: str) -> list[StoreObject]:
        start = prefix.strip("/") + "/" if prefix.strip("/") else ""
        found: list[StoreObject] = []
        with self._call("list", start):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=start
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    if key.endswith("/"):
                        continue
                    modified = item["LastModified"].timestamp()
                    found.append(
                        StoreObject(
                            key[len(start) :],
                            int(item["Size"]),
                            f"{item['ETag'].strip(chr(34))}@{modified:.6f}",
                            modified,
                        )
                    )
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        with self._call("read", key):
            return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()

    def download(self, key: str, local_path: str) -> None:
        # One GET streamed to disk (s3transfer's download_file adds a HEAD per object).
        with self._call("download", key):
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
            with open(local_path, "wb") as out:
                shutil.copyfileobj(body, out, 1 << 20)

    def upload(self, local_path: str, key: str) -> None:
        with self._call("upload", key):
            self._client.upload_file(local_path, self._bucket, key, Config=_TRANSFER)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        with self._call("put", key):
            self._client.put_object(Bucket=self._bucket, Key=key, Body=data, **extra)

    def copy(self, source_key: str, target_key: str) -> None:
        with self._call("copy", source_key):
            self._client.copy(
                {"Bucket": self._bucket, "Key": source_key},
                self._bucket,
                target_key,
                Config=_TRANSFER,
            )

    def delete(self, key: str) -> None:
        with self._call("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=key)


def open_bucket(bucket: str, settings: StoreSettings) -> S3Store:
    return S3Store(bucket, settings)
