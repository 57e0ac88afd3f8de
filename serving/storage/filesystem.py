"""The few file-system operations local version discovery needs, behind one small interface.

Discovery of local directories lists, stats and checks existence per version on every poll.
That is cheap on a disk and expensive on an object store (a request per call), so ``gs://``
and ``s3://`` base paths are not file systems here: they have their own one-listing-per-poll
source (:mod:`serving.storage.bucket_source`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FileInfo:
    """A file below a version directory; a changing (size, mtime) means it is being written.

    Object stores have no useful mtime; their objects carry ``revision`` instead (GCS
    generation, S3 ETag), which changes on every write.
    """

    relative_path: str
    size: int
    mtime_ns: int
    revision: str = ""


class FileSystem(Protocol):
    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def list_children(self, path: str) -> list[str]:
        """Names directly below ``path``."""
        ...

    def walk_files(self, path: str) -> list[FileInfo]:
        """Every file below ``path``, recursively, sorted by relative path."""
        ...

    def join(self, *parts: str) -> str: ...


class LocalFileSystem:
    """POSIX paths (and ``file://`` URIs)."""

    @staticmethod
    def _local(path: str) -> str:
        return path.removeprefix("file://")

    def exists(self, path: str) -> bool:
        return os.path.exists(self._local(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self._local(path))

    def list_children(self, path: str) -> list[str]:
        return os.listdir(self._local(path))

    def walk_files(self, path: str) -> list[FileInfo]:
        root = self._local(path)
        found: list[FileInfo] = []
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:  # removed between listing and stat: still changing
                    continue
                found.append(FileInfo(os.path.relpath(full, root), st.st_size, st.st_mtime_ns))
        found.sort(key=lambda f: f.relative_path)
        return found

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)


def filesystem_for(path: str) -> FileSystem:
    scheme = path.split("://", 1)[0] if "://" in path else ""
    if scheme in ("", "file"):
        return LocalFileSystem()
    raise ValueError(
        f"Base path {path!r}: {scheme}:// is not a local file system; supported are plain "
        "paths, file://, gs:// and s3:// (buckets are polled by BucketVersionSource)"
    )
