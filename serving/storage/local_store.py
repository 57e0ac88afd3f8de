"""The POSIX implementation of :class:`~serving.storage.object_store.ObjectStore`.

Keys are absolute paths without the leading '/'. It lets the components and tests treat a
local directory and a bucket alike; the server keeps its own richer local source
(:mod:`serving.storage.source`), and the Pusher keeps atomic ``rename(2)`` publishing for
POSIX stores (:mod:`components.model_store`), which object stores cannot offer.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from serving.storage.object_store import PreconditionFailed, RequestHook, StoreObject


class LocalStore:
    def __init__(self, on_request: RequestHook | None = None) -> None:
        self._on_request = on_request

    def _path(self, operation: str, key: str) -> str:
        if self._on_request is not None:
            self._on_request(operation)
        return "/" + key.strip("/")

    def list(self, prefix: str) -> list[StoreObject]:
        root = self._path("list", prefix)
        found = []
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                full = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):  # removed while listing
                    st = os.stat(full)
                    key = os.path.relpath(full, root).replace(os.sep, "/")
                    found.append(StoreObject(key, st.st_size, str(st.st_mtime_ns), st.st_mtime))
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        with open(self._path("read", key), "rb") as f:
            return f.read()

    def download(self, key: str, local_path: str) -> None:
        shutil.copyfile(self._path("download", key), local_path)

    def upload(self, local_path: str, key: str) -> None:
        target = self._path("upload", key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(local_path, target)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        target = self._path("put", key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            with open(target, "xb" if if_absent else "wb") as f:
                f.write(data)
        except FileExistsError as exc:
            raise PreconditionFailed(f"{target} already exists") from exc

    def copy(self, source_key: str, target_key: str) -> None:
        target = self._path("copy", target_key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile("/" + source_key.strip("/"), target)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path("delete", key))
