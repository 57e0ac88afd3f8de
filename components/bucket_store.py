"""Publishing model versions into a ``gs://`` / ``s3://`` bucket, safely for every reader.

Object stores have no atomic rename: every uploaded object is visible at once, to this
project's server and to a stock TF Serving polling the same bucket. So a version is written
under its final number in an order that is safe for both (layout in
:mod:`serving.storage.bucket_layout`):

1. **Claim** the number: create ``<v>/tfx-serving-push.json`` with a create-if-absent
   precondition (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``). The number is
   ``max(now, highest number ever used + 1)``, TF Serving's timestamp convention; a pusher
   that loses the race to a concurrent one gets a precondition failure and tries the next
   number, so concurrent pushes never share a version.
2. **Upload** every model file, ``saved_model.pb`` last. TF Serving tries to load a version as
   soon as its directory is listed, fails while ``saved_model.pb`` is missing and retries
   (``--max_num_load_retries`` times, every ``--load_retry_interval_micros``); once
   ``saved_model.pb`` exists everything else already does.
3. **Verify**: list the version and read every file back, comparing names, sizes and sha256
   with the manifest the Exporter wrote.
4. **Mark complete**: write ``<v>/tfx-serving-complete.json`` holding the manifest. This
   project's server loads only versions with a marker.

A push that fails removes what it uploaded (``saved_model.pb`` first) and leaves a tiny
``.abandoned-<v>-<id>`` tombstone so the number is never reused (a TF Serving that saw the
half version may have given up on that number for good). A push killed outright leaves its
claim; later pushes abandon such claims once older than ``stale_incoming_seconds``.

Retention deletes old versions (marker first); rollback moves newer versions to
``.rolled-back-<v>-<id>/`` (server-side copies, then deletes) so they can be inspected or
restored and their numbers stay used. Requests are retried with exponential backoff by the
store clients (:mod:`serving.storage.gcs`, :mod:`serving.storage.s3`).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid

from absl import logging

from components import store_io
from components.manifest import Manifest, list_files
from components.model_store import PublishedVersion, rollback_plan
from serving.storage.bucket_layout import (
    ABANDONED_PREFIX,
    CLAIM_FILENAME,
    MARKER_FILENAME,
    ROLLED_BACK_PREFIX,
    SAVED_MODEL_FILENAMES,
    BaseListing,
    VersionObjects,
    group_by_version,
)
from serving.storage.manifest import hash_local_file
from serving.storage.object_store import (
    PUBLISHING,
    ObjectStore,
    PreconditionFailed,
    StoreLocation,
    parse_location,
)
from serving.storage.stores import open_store

_MAX_CLAIM_ATTEMPTS = 100
MARKER_FORMAT_VERSION = 1


class BucketModelStore:
    """Publish, retention, rollback and housekeeping for one model's base prefix in a bucket.

    Same interface as :class:`components.model_store.ModelStore` (POSIX).
    """

    def __init__(self, base_uri: str, store: ObjectStore | None = None) -> None:
        self.location: StoreLocation = parse_location(base_uri)
        if not self.location.scheme:
            raise ValueError(f"{base_uri!r} is not a bucket URI; use ModelStore for paths.")
        self.base = self.location.uri
        self._store = store or open_store(self.location, PUBLISHING)

    # ------------------------------------------------------------------ reading
    def _listing(self) -> BaseListing:
        return group_by_version(self._store.list(self.location.prefix))

    def versions(self) -> list[int]:
        """Complete (marker present) versions and versions written by others, ascending."""
        listing = self._listing()
        return sorted(v for v, objs in listing.versions.items() if _is_servable(objs))

    def version_path(self, version: int) -> str:
        return f"{self.base}/{version}"

    def _key(self, *parts: str) -> str:
        return self.location.child(*parts).prefix

    # ------------------------------------------------------------------ publish
    def publish(
        self,
        source_dir: str,
        manifest: Manifest,
        *,
        stale_incoming_seconds: float = 3600.0,
    ) -> PublishedVersion:
        """Uploads source_dir as a new version; returns it once its marker is written."""
        listing = self._listing()
        self.clean_stale_incoming(stale_incoming_seconds, listing)
        push_id = uuid.uuid4().hex
        version = self._claim(
            max(int(time.time()), listing.highest_used_version() + 1), push_id, source_dir
        )
        try:
            self._upload_model(source_dir, version)
            self._verify(version, manifest)
            marker = {
                "format_version": MARKER_FORMAT_VERSION,
                "version": version,
                "push_id": push_id,
                "completed_at": time.time(),
                "manifest": manifest.to_dict(),
            }
            self._store.put(
                self._key(str(version), MARKER_FILENAME),
                json.dumps(marker, indent=1, sort_keys=True).encode(),
                if_absent=True,
            )
        except BaseException:
            logging.exception("Push of version %d to %s failed; removing it", version, self.base)
            self._abandon(version, push_id)
            raise
        logging.info("Published %s as version %d in %s", source_dir, version, self.base)
        return PublishedVersion(version, self.version_path(version), manifest.digest)

    def _claim(self, version: int, push_id: str, source: str) -> int:
        claim = json.dumps(
            {
                "push_id": push_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "source": source,
                "claimed_at": time.time(),
            }
        ).encode()
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            key = self._key(str(version), CLAIM_FILENAME)
            try:
                self._store.put(key, claim, if_absent=True)
                return version
            except PreconditionFailed:
                if self._claimed_by(key) == push_id:  # our own write, answered late and retried
                    return version
                logging.warning(
                    "Version %d was claimed concurrently; trying %d", version, version + 1
                )
                version += 1
        raise RuntimeError(
            f"Could not claim a free version number in {self.base} after "
            f"{_MAX_CLAIM_ATTEMPTS} attempts; is another process publishing in a loop?"
        )

    def _claimed_by(self, claim_key: str) -> str | None:
        try:
            return json.loads(self._store.read(claim_key)).get("push_id")
        except (FileNotFoundError, ValueError):
            return None

    def _upload_model(self, source_dir: str, version: int) -> None:
        """Every file, ``saved_model.pb`` last (see the module docstring)."""
        files = list_files(source_dir)
        files.sort(key=lambda rel: rel in SAVED_MODEL_FILENAMES)
        with store_io.localized(source_dir, prefix="push-") as local:
            for rel in files:
                self._store.upload(
                    os.path.join(local, *rel.split("/")), self._key(str(version), rel)
                )

    def _verify(self, version: int, manifest: Manifest) -> None:
        """Names and sizes from one listing, then every file read back and hashed."""
        objects = {o.key: o for o in self._store.list(self._key(str(version)))}
        uploaded = {k: o for k, o in objects.items() if k not in (CLAIM_FILENAME, MARKER_FILENAME)}
        where = self.version_path(version)
        with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
            actual = {}
            for key in sorted(uploaded):
                local = os.path.join(tmp, "object")
                self._store.download(self._key(str(version), key), local)
                actual[key] = hash_local_file(local)
                os.remove(local)
        manifest.check(actual, where)

    # ------------------------------------------------------------------ cleanup
    def _delete_version(self, objects: VersionObjects) -> None:
        for key in objects.deletion_order():
            self._store.delete(self._key(objects.name, key))

    def _abandon(self, version: int, push_id: str) -> None:
        """Removes a failed push (model files first) and leaves a tombstone for its number."""
        try:
            objects = self._listing().versions.get(version)
            self._store.put(self._key(f"{ABANDONED_PREFIX}{version}-{push_id}"), b"")
            if objects is not None:
                self._delete_version(objects)
        except Exception:  # the original error matters more; later pushes clean up
            logging.exception("Could not remove the failed push of version %d", version)

    def clean_stale_incoming(
        self, older_than_seconds: float, listing: BaseListing | None = None
    ) -> list[int]:
        """Abandons claimed-but-unmarked versions of crashed pushers older than the threshold.

        Versions without a claim are left alone: they were written by someone else.
        """
        listing = listing or self._listing()
        now = time.time()
        removed = []
        for version, objects in sorted(listing.versions.items()):
            if objects.claim is None or objects.marker is not None:
                continue
            if now - objects.claim.mtime < older_than_seconds:
                continue  # possibly a push still in progress
            push_id = self._claimed_by(self._key(objects.name, CLAIM_FILENAME)) or "0"
            self._store.put(self._key(f"{ABANDONED_PREFIX}{version}-{push_id}"), b"")
            self._delete_version(objects)
            listing.hidden_numbers.add(version)
            removed.append(version)
            logging.info("Removed the stale push of version %d from %s", version, self.base)
        for version in removed:
            del listing.versions[version]
        return removed

    # ------------------------------------------------------------------ retention / rollback
    def retain(self, keep_last: int) -> list[int]:
        """Deletes all but the newest keep_last servable versions; returns the deleted ones."""
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 (got {keep_last}); a store needs a version.")
        listing = self._listing()
        servable = sorted(v for v, o in listing.versions.items() if _is_servable(o))
        doomed = servable[:-keep_last]
        for version in doomed:
            self._delete_version(listing.versions[version])
        if doomed:
            logging.info("Retention removed versions %s from %s", doomed, self.base)
        return doomed

    def rollback(self, to_version: int | None = None) -> list[int]:
        """Makes to_version (default: the previous one) the latest by moving newer versions to
        ``.rolled-back-<v>-<id>/``; servers with the "latest" policy switch on their next poll."""
        listing = self._listing()
        versions = sorted(v for v, o in listing.versions.items() if _is_servable(o))
        to_version, newer = rollback_plan(self.base, versions, to_version)
        for version in newer:
            objects = listing.versions[version]
            hidden = f"{ROLLED_BACK_PREFIX}{version}-{uuid.uuid4().hex}"
            for key in objects.deletion_order():
                self._store.copy(self._key(objects.name, key), self._key(hidden, key))
            self._delete_version(objects)
        logging.info("Rolled %s back to version %d (removed %s)", self.base, to_version, newer)
        return newer


def _is_servable(objects: VersionObjects) -> bool:
    """Marked complete by this project's Pusher, or written by someone else (no claim)."""
    return objects.marker is not None or (objects.claim is None and bool(objects.files))
