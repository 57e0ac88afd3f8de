"""Opening the store a location names: the local root, or a ``gs://`` / ``s3://`` bucket.

Kept apart from :mod:`serving.storage.object_store` (the interface every store implements) so
the implementations import the interface and this module imports them, with no cycle. The cloud
SDKs are imported on first use of their scheme, which keeps them off a local-path server's
import path.
"""

from __future__ import annotations

import importlib
import threading

from serving.storage.local_store import LocalStore
from serving.storage.object_store import (
    PUBLISHING,
    ObjectStore,
    StoreError,
    StoreLocation,
    StoreSettings,
)

_IMPLEMENTATIONS = {"gs": "serving.storage.gcs", "s3": "serving.storage.s3"}

_lock = threading.Lock()


def open_store(location: StoreLocation, settings: StoreSettings = PUBLISHING) -> ObjectStore:
    """A client for the location's bucket (or the local root for local paths)."""
    if not location.scheme:
        return LocalStore(settings.on_request)
    with _lock:  # SDK imports are not thread-safe in every version
        try:
            module = importlib.import_module(_IMPLEMENTATIONS[location.scheme])
        except ImportError as exc:
            raise StoreError(
                f"{location.scheme}:// stores need the cloud SDKs: pip install "
                f"'tfx-serving-suite[buckets]' ({exc})"
            ) from exc
    return module.open_bucket(location.bucket, settings)
