"""The shared model store: ``<base>/<integer version>/`` directories polled by model servers.

TF Serving (and this project's runtime) treat every integer-named child of the base directory as a
loadable version and ignore anything else. Publishing therefore copies into a hidden, non-numeric
sibling (``.incoming-<version>-<uuid>``), verifies it against the model's manifest, fsyncs, and
only then renames it to ``<version>``. ``rename(2)`` within one POSIX filesystem is atomic, so a
poller sees either no version or the complete one -- never a half-copied model, even if the
publisher is killed mid-copy. Stale incoming dirs left by such a crash are removed by later
publishes.

Retention moves versions to hidden ``.retired-<version>-<uuid>`` names first (again one atomic
rename) so servers unload them cleanly before their files are deleted. Rollback hides newer
versions as ``.rolled-back-<version>-<uuid>`` and keeps them, so a rollback can be inspected or
undone by renaming the directory back, and their numbers are never handed out again.

This is the store for local or mounted POSIX filesystems (local disk, NFS, a Kubernetes PVC).
``gs://`` and ``s3://`` stores have no rename and use a claim / completion-marker protocol
instead (:mod:`components.bucket_store`); :func:`open_model_store` picks the right one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import posixpath
import re
import shutil
import time
import uuid

from absl import logging

from components import store_io
from components.manifest import Manifest, list_files
from serving.storage.object_store import is_bucket_uri

INCOMING_PREFIX = ".incoming-"
RETIRED_PREFIX = ".retired-"
ROLLED_BACK_PREFIX = ".rolled-back-"


def rollback_plan(base: str, versions: list[int], to_version: int | None) -> tuple[int, list[int]]:
    """The version a rollback makes latest (default: the one before the latest) and the newer
    versions it hides; the same rule for local and bucket stores."""
    if to_version is None:
        if len(versions) < 2:
            raise ValueError(
                f"Nothing to roll back to in {base}: versions={versions}. "
                "Pass an explicit to_version or push a model first."
            )
        to_version = versions[-2]
    if to_version not in versions:
        raise ValueError(f"Version {to_version} is not in {base} (versions={versions}).")
    return to_version, [v for v in versions if v > to_version]


_HIDDEN_VERSION_RE = re.compile(
    rf"^(?:{re.escape(INCOMING_PREFIX)}|{re.escape(RETIRED_PREFIX)}|{re.escape(ROLLED_BACK_PREFIX)})"
    r"(\d+)-[0-9a-f]+$"
)
DEFAULT_STALE_INCOMING_SECONDS = 3600.0
_MAX_RENAME_ATTEMPTS = 100


@dataclasses.dataclass(frozen=True)
class PublishedVersion:
    version: int
    path: str
    manifest_digest: str


class ModelStore:
    """Atomic publish, retention, rollback and housekeeping for one model's base directory."""

    def __init__(self, base_directory: str) -> None:
        if is_bucket_uri(base_directory):
            raise ValueError(
                f"Model store {base_directory!r} is a bucket; ModelStore publishes to POSIX "
                "filesystems by atomic rename. Use open_model_store(), which returns a "
                "BucketModelStore for gs:// and s3:// URIs."
            )
        if "://" in base_directory and not base_directory.startswith("file://"):
            raise ValueError(
                f"Model store {base_directory!r} is neither a POSIX path nor a gs:// or s3:// "
                "bucket; mount it (e.g. a PVC or NFS) and pass the local path, or use a bucket."
            )
        self.base = os.path.abspath(base_directory.removeprefix("file://"))

    def versions(self) -> list[int]:
        """Visible (servable) versions, ascending."""
        if not os.path.isdir(self.base):
            return []
        return sorted(
            int(name)
            for name in os.listdir(self.base)
            if name.isdigit() and os.path.isdir(os.path.join(self.base, name))
        )

    def version_path(self, version: int) -> str:
        return os.path.join(self.base, str(version))

    def _highest_used_version(self) -> int:
        """Highest version number ever handed out here, including hidden (in-flight, retired or
        rolled-back) ones, so a number is never reused for different content."""
        used = list(self.versions())
        if os.path.isdir(self.base):
            for name in os.listdir(self.base):
                m = _HIDDEN_VERSION_RE.match(name)
                if m:
                    used.append(int(m.group(1)))
        return max(used, default=0)

    def publish(
        self,
        source_dir: str,
        manifest: Manifest,
        *,
        stale_incoming_seconds: float = DEFAULT_STALE_INCOMING_SECONDS,
    ) -> PublishedVersion:
        """Copy source_dir into a new version; returns it once it is visible.

        The version is the current UNIX time in seconds, as stock TFX and TF Serving expect, but
        never lower than or equal to an existing one: a same-second collision (or a clock behind
        the store) moves to the next free number instead of being skipped, and the newest push
        is always the highest version, which is what the servers' "latest" policy loads.
        """
        os.makedirs(self.base, exist_ok=True)
        version = max(int(time.time()), self._highest_used_version() + 1)
        self.clean_stale_incoming(stale_incoming_seconds)
        incoming = os.path.join(self.base, f"{INCOMING_PREFIX}{version}-{uuid.uuid4().hex}")
        try:
            _copy_tree_durably(source_dir, incoming)
            manifest.verify(incoming)
            version = self._rename_into_place(incoming, version)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        _fsync_dir(self.base)
        logging.info("Published %s as version %d in %s", source_dir, version, self.base)
        return PublishedVersion(version, self.version_path(version), manifest.digest)

    def _rename_into_place(self, incoming: str, version: int) -> int:
        # rename(2) of a directory onto an existing non-empty directory fails with
        # ENOTEMPTY/EEXIST, so two concurrent publishers can never overwrite each other; the
        # loser takes the next number.
        for _ in range(_MAX_RENAME_ATTEMPTS):
            target = self.version_path(version)
            try:
                os.rename(incoming, target)
                return version
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                logging.warning("Version %d appeared concurrently; trying %d", version, version + 1)
                version += 1
        raise RuntimeError(
            f"Could not find a free version number in {self.base} after "
            f"{_MAX_RENAME_ATTEMPTS} attempts; is another process publishing in a loop?"
        )

    def clean_stale_incoming(self, older_than_seconds: float) -> list[str]:
        """Removes incoming dirs of crashed publishers (older than the threshold)."""
        removed = []
        if not os.path.isdir(self.base):
            return removed
        now = time.time()
        for name in os.listdir(self.base):
            path = os.path.join(self.base, name)
            if not name.startswith(INCOMING_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - os.path.getmtime(path) >= older_than_seconds:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                    logging.info("Removed stale incoming dir %s", path)
        return removed

    def _hide(self, version: int, prefix: str) -> str:
        hidden = os.path.join(self.base, f"{prefix}{version}-{uuid.uuid4().hex}")
        os.rename(self.version_path(version), hidden)
        _fsync_dir(self.base)
        return hidden

    def retain(self, keep_last: int) -> list[int]:
        """Deletes all but the newest keep_last versions; returns the deleted ones."""
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 (got {keep_last}); a store needs a version.")
        doomed = self.versions()[:-keep_last]
        for version in doomed:
            shutil.rmtree(self._hide(version, RETIRED_PREFIX), ignore_errors=True)
        if doomed:
            logging.info("Retention removed versions %s from %s", doomed, self.base)
        return doomed

    def rollback(self, to_version: int | None = None) -> list[int]:
        """Makes to_version (default: the previous one) the latest by removing newer versions.

        Servers with the default "latest" version policy switch back to it on their next poll.
        The newer versions are kept as hidden ``.rolled-back-*`` dirs; their numbers are never
        reused by later publishes.
        """
        versions = self.versions()
        to_version, newer = rollback_plan(self.base, versions, to_version)
        for version in newer:
            self._hide(version, ROLLED_BACK_PREFIX)
        logging.info("Rolled %s back to version %d (removed %s)", self.base, to_version, newer)
        return newer


def open_model_store(base: str):
    """The store for ``base``: :class:`BucketModelStore` for gs:// and s3:// URIs, else
    :class:`ModelStore` (POSIX, atomic rename)."""
    if is_bucket_uri(base):
        from components.bucket_store import BucketModelStore

        return BucketModelStore(base)
    return ModelStore(base)


def _copy_tree_durably(source_dir: str, target_dir: str) -> None:
    """Copies every file (sources may be remote: gfile or a bucket), fsyncing files and dirs."""
    os.makedirs(target_dir)
    for rel in list_files(source_dir):
        dst = os.path.join(target_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        _copy_file(posixpath.join(source_dir, rel), dst)
    for dirpath, _, _ in os.walk(target_dir, topdown=False):
        _fsync_dir(dirpath)


def _copy_file(src: str, dst: str) -> None:
    if is_bucket_uri(src):
        store_io.download_file(src, dst)
        with open(dst, "rb+") as fout:
            os.fsync(fout.fileno())
        return
    opener = open if store_io.is_local(src) else store_io.gfile().GFile
    with opener(src.removeprefix("file://"), "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """``python -m components.model_store {list,rollback,retain} --base_directory=...``
    (a path, or a gs:// / s3:// URI)."""
    parser = argparse.ArgumentParser(prog="python -m components.model_store", description=__doc__)
    parser.add_argument("command", choices=["list", "rollback", "retain"])
    parser.add_argument("--base_directory", required=True)
    parser.add_argument("--to_version", type=int, help="rollback target (default: previous)")
    parser.add_argument("--keep_last", type=int, default=5, help="retain: versions to keep")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    store = open_model_store(args.base_directory)
    if args.command == "rollback":
        store.rollback(args.to_version)
    elif args.command == "retain":
        store.retain(args.keep_last)
    print("\n".join(str(v) for v in store.versions()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
