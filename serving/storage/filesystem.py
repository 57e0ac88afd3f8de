"""The few file-system operations version discovery needs, behind one small interface.

Discovery only lists, stats and checks existence, so an object store (gs://, s3://) can be
added by implementing :class:`FileSystem` for its scheme and registering it; nothing else in
the runtime touches paths directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FileInfo:
    """A file below a version directory; a changing (size, mtime) means it is being written."""

    relative_path: str
    size: int
    mtime_ns: int


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


_FACTORIES: dict[str, Callable[[], FileSystem]] = {"": LocalFileSystem, "file": LocalFileSystem}


def register_filesystem(scheme: str, factory: Callable[[], FileSystem]) -> None:
    """Make ``scheme://`` base paths usable (e.g. an object-store client)."""
    _FACTORIES[scheme] = factory


def filesystem_for(path: str) -> FileSystem:
    scheme = path.split("://", 1)[0] if "://" in path else ""
    try:
        return _FACTORIES[scheme]()
    except KeyError:
        raise ValueError(
            f"No file system is registered for {scheme}:// paths (base path {path!r}); "
            f"supported: {[*sorted(s for s in _FACTORIES if s), 'plain paths']}"
        ) from None
