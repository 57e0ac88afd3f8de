"""Discovers versions under a ``gs://`` / ``s3://`` base path with one listing per poll.

TF Serving polls object stores through its file-system layer: a children listing of the base,
then per-version listings and stats while loading, every poll. Here each poll is exactly one
recursive listing of ``<base>/`` (one request per 1,000 objects), from which every decision is
made (layout in :mod:`serving.storage.bucket_layout`):

* a version with a **completion marker** is ready at once (the Pusher writes the marker after
  verifying every file);
* a version with a **claim but no marker** is a push in progress, or a killed one: never loaded;
* a version with **neither** was written by someone else: ready once complete (the same rules
  as local directories) and unchanged -- names, sizes, object revisions -- across two polls.

A ready version is downloaded by the load thread into the :class:`VersionCache`, checked
(against the marker's manifest, sha256 included, or the listed sizes) and loaded from local
disk; requests never touch the bucket. When the store cannot be listed the poll reports the
base path as missing, so the manager keeps serving what it has; the failure is logged once per
outage and counted in ``:tfx_serving:storage:poll_failures``. An empty listing is treated the
same way (a prefix has no existence of its own, so "empty" cannot be told from "missing").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from serving.errors import Code, ServingError
from serving.storage.bucket_layout import MARKER_FILENAME, VersionObjects, group_by_version
from serving.storage.filesystem import FileInfo
from serving.storage.manifest import Manifest, ManifestMismatchError, hash_local_file
from serving.storage.object_store import (
    POLLING,
    PUBLISHING,
    ObjectStore,
    StoreError,
    StoreSettings,
    parse_location,
)
from serving.storage.source import Discovery, Fingerprint, VersionCandidate, incompleteness
from serving.storage.stores import open_store
from serving.storage.version_cache import VersionCache

log = logging.getLogger(__name__)

# Cached copies of versions not in use that are kept for a fast switch back (e.g. a rollback).
KEEP_UNUSED_CACHED_VERSIONS = 1


@dataclass(frozen=True)
class _Ready:
    objects: VersionObjects
    fingerprint: Fingerprint


class BucketVersionSource:
    def __init__(
        self,
        model_name: str,
        base_path: str,
        cache: VersionCache,
        metrics=None,
        accept_tflite: bool = False,
        poll_store: ObjectStore | None = None,
        fetch_store: ObjectStore | None = None,
    ) -> None:
        self.model_name = model_name
        self.base_path = base_path.rstrip("/")
        self._location = parse_location(base_path)
        self._cache = cache
        self._metrics = metrics
        self._accept_tflite = accept_tflite
        self._poll_store = poll_store
        self._fetch_store = fetch_store
        self._requests = 0  # HTTP requests sent by the poll client (read by the poll thread)
        self._previous: dict[int, Fingerprint] = {}
        self._ready: dict[str, _Ready] = {}
        self._lock = threading.Lock()
        self._in_use: dict[str, str | None] = {}  # remote path -> cache entry, while loaded
        self._failed_polls = 0
        self._warned_empty = False
        self._pending_reasons: dict[int, str] = {}

    # ------------------------------------------------------------------ clients
    def _count(self, operation: str) -> None:
        self._requests += 1
        if self._metrics is not None:
            self._metrics.record_store_request(self.model_name, operation)

    def _count_fetch(self, operation: str) -> None:
        if self._metrics is not None:
            self._metrics.record_store_request(self.model_name, operation)

    def _poller(self) -> ObjectStore:
        if self._poll_store is None:  # opened lazily: the SDK import happens on the poll thread
            settings = StoreSettings(
                POLLING.retry_deadline_seconds, POLLING.request_timeout_seconds, self._count
            )
            self._poll_store = open_store(self._location, settings)
        return self._poll_store

    def _fetcher(self) -> ObjectStore:
        with self._lock:
            if self._fetch_store is None:
                settings = StoreSettings(
                    PUBLISHING.retry_deadline_seconds,
                    PUBLISHING.request_timeout_seconds,
                    self._count_fetch,
                )
                self._fetch_store = open_store(self._location, settings)
            return self._fetch_store

    # ------------------------------------------------------------------ polling
    def poll(self) -> Discovery:
        before = self._requests
        try:
            objects = self._poller().list(self._location.prefix)
        except StoreError as exc:
            self._poll_failed(exc)
            return Discovery(base_path_exists=False)
        finally:
            if self._metrics is not None:
                self._metrics.record_store_poll(self.model_name, self._requests - before)
        if self._failed_polls:
            log.warning(
                "Model %s: %s is reachable again after %d failed poll(s)",
                self.model_name,
                self.base_path,
                self._failed_polls,
            )
            self._failed_polls = 0
        listing = group_by_version(objects)
        if not listing.versions:
            if not self._warned_empty:
                log.warning(
                    "No versions of servable %s found under base path %s; keeping what is "
                    "loaded and polling again",
                    self.model_name,
                    self.base_path,
                )
                self._warned_empty = True
            return Discovery(base_path_exists=False)
        self._warned_empty = False
        discovery = Discovery(base_path_exists=True)
        seen: dict[int, Fingerprint] = {}
        ready: dict[str, _Ready] = {}
        for version, found in sorted(listing.versions.items()):
            files = tuple(FileInfo(o.key, o.size, 0, o.revision) for o in found.files)
            marker = found.marker
            fingerprint = files + (
                (FileInfo(MARKER_FILENAME, marker.size, 0, marker.revision),) if marker else ()
            )
            seen[version] = fingerprint
            path = f"{self.base_path}/{found.name}"
            if marker is not None:
                reason = None if found.files else "completion marker without model files"
            elif found.claim is not None:
                reason = "push in progress (claimed, no completion marker yet)"
            else:
                reason = incompleteness(files, self._accept_tflite)
            if reason is not None:
                discovery.pending[version] = reason
            elif marker is None and self._previous.get(version) != fingerprint:
                discovery.changing.add(version)
            else:
                discovery.ready[version] = VersionCandidate(version, path, fingerprint)
                ready[path] = _Ready(found, fingerprint)
        self._previous = seen
        self._ready = ready
        self._log_pending(discovery.pending)
        self._evict()
        return discovery

    def _poll_failed(self, exc: StoreError) -> None:
        self._failed_polls += 1
        if self._metrics is not None:
            self._metrics.record_store_poll_failure(self.model_name)
        if self._failed_polls == 1:
            log.warning(
                "Model %s: cannot list %s (%s); keeping the loaded versions and retrying every "
                "poll",
                self.model_name,
                self.base_path,
                exc,
            )

    def _log_pending(self, pending: dict[int, str]) -> None:
        for version, reason in pending.items():
            if self._pending_reasons.get(version) != reason:
                log.warning(
                    "Model %s: version %d is not loadable yet: %s", self.model_name, version, reason
                )
        self._pending_reasons = dict(pending)

    # ------------------------------------------------------------------ loading
    def fetch(self, path: str) -> str:
        """A local, checked copy of the version at ``path`` (runs on a load thread)."""
        ready = self._ready.get(path)
        if ready is None:
            raise ServingError(Code.NOT_FOUND, f"{path} is no longer listed in the store")
        objects = ready.objects
        version = objects.version
        identity = _identity(ready.fingerprint)
        with self._lock:  # before it exists, so a concurrent eviction keeps it
            self._in_use[path] = self._cache.entry(self.model_name, version, identity)
        store = self._fetcher()
        started = time.perf_counter()

        def fill(target: str) -> None:
            expected = self._expected_files(store, objects)
            for obj in objects.files:
                local = os.path.join(target, *obj.key.split("/"))
                os.makedirs(os.path.dirname(local), exist_ok=True)
                store.download(self._key(objects.name, obj.key), local)
            self._check(target, objects, expected)

        try:
            local, cached = self._cache.materialize(self.model_name, version, identity, fill)
        except (StoreError, FileNotFoundError) as exc:
            raise ServingError(Code.UNAVAILABLE, f"Cannot fetch {path}: {exc}") from exc
        except ManifestMismatchError as exc:
            raise ServingError(Code.DATA_LOSS, str(exc)) from exc
        size = sum(o.size for o in objects.files)
        log.info(
            "Model %s: version %d %s %s (%d files, %.1f MiB) in %.2f s",
            self.model_name,
            version,
            "found in the cache at" if cached else "downloaded to",
            local,
            len(objects.files),
            size / (1 << 20),
            time.perf_counter() - started,
        )
        return local

    def _key(self, *parts: str) -> str:
        return self._location.child(*parts).prefix

    def _expected_files(self, store: ObjectStore, objects: VersionObjects) -> Manifest | None:
        if objects.marker is None:
            return None
        marker = json.loads(store.read(self._key(objects.name, MARKER_FILENAME)))
        return Manifest.from_dict(marker["manifest"])

    @staticmethod
    def _check(local: str, objects: VersionObjects, manifest: Manifest | None) -> None:
        """Against the manifest (sha256) when the Pusher wrote one, else the listed sizes."""
        if manifest is not None:
            actual = {
                o.key: hash_local_file(os.path.join(local, *o.key.split("/")))
                for o in objects.files
            }
            manifest.check(actual, local)
            return
        for obj in objects.files:
            size = os.path.getsize(os.path.join(local, *obj.key.split("/")))
            if size != obj.size:
                raise ManifestMismatchError(
                    f"{obj.key}: downloaded {size} bytes, the listing said {obj.size}; the "
                    "version changed while it was fetched"
                )

    def on_state_change(self, path: str, in_use: bool) -> None:
        """Tracks which cache entries back loaded versions (never evicted while in use)."""
        with self._lock:
            if in_use:
                self._in_use.setdefault(path, None)
            else:
                self._in_use.pop(path, None)
        if not in_use:
            self._evict()

    def _evict(self) -> None:
        with self._lock:
            keep = {p for p in self._in_use.values() if p}
            unused = sorted(
                (r for path, r in self._ready.items() if path not in self._in_use),
                key=lambda r: r.objects.version,
            )
        for ready in unused[-KEEP_UNUSED_CACHED_VERSIONS:]:
            entry = self._cache.entry(
                self.model_name, ready.objects.version, _identity(ready.fingerprint)
            )
            keep.add(entry)
        self._cache.evict(self.model_name, keep)


def _identity(fingerprint: Fingerprint) -> str:
    """Names a cache entry after the exact object revisions it was downloaded from."""
    return hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:16]
