"""Content manifest of a model directory: the sha256 and size of every file.

The Exporter (and the InfraValidator for its stamped model) writes the manifest next to the
model it describes; the Pusher re-hashes the copy it is about to publish and compares. That
turns "the copy looks complete" into "the copy is byte-identical to what was validated", which
is what makes the atomic rename in :mod:`components.model_store` (and the completion marker in
:mod:`components.bucket_store`) safe to do.

Directories may live on a local disk, on any filesystem TensorFlow can read, or in a
``gs://`` / ``s3://`` bucket (Kubeflow pipeline roots); buckets are read through the store
clients of :mod:`serving.storage.object_store`, which need no TensorFlow file-system plugin
(TensorFlow 2.16 itself has no ``s3://``). The format lives in :mod:`serving.storage.manifest`
so the server can check its downloads without importing the components.
"""

from __future__ import annotations

import posixpath

from components import store_io
from serving.storage.bucket_layout import CONTROL_FILENAMES
from serving.storage.manifest import (
    FileEntry,
    ManifestMismatchError,
    hash_local_file,
    hash_stream,
    local_manifest_paths,
)
from serving.storage.manifest import Manifest as _ManifestFormat

MANIFEST_FILENAME = "manifest.json"
_CHUNK_BYTES = 1 << 20

__all__ = [
    "MANIFEST_FILENAME",
    "FileEntry",
    "Manifest",
    "ManifestMismatchError",
    "build_manifest",
    "hash_file",
    "list_files",
    "manifest_path_for",
]


class Manifest(_ManifestFormat):
    """The manifest format plus reading, writing and verifying wherever the model lives."""

    def write(self, path: str) -> None:
        store_io.write_bytes(path, self.to_json().encode())

    @classmethod
    def read(cls, path: str) -> Manifest:
        return cls.from_json(store_io.read_bytes(path).decode())

    def verify(self, model_dir: str) -> None:
        """Raises ManifestMismatchError naming every difference between the dir and the manifest."""
        self.check(build_manifest(model_dir).files, model_dir)


def list_files(model_dir: str) -> list[str]:
    """Relative POSIX paths of all files below model_dir, sorted (in a bucket version, without
    the Pusher's claim and completion marker: they describe the model, they are not part of it)."""
    if store_io.is_bucket_uri(model_dir):
        return [o.key for o in store_io.list_objects(model_dir) if o.key not in CONTROL_FILENAMES]
    root = model_dir.rstrip("/")
    if store_io.is_local(root):
        return sorted(local_manifest_paths(root.removeprefix("file://")))
    paths = []
    for dirname, _, filenames in store_io.gfile().walk(root):
        rel_dir = dirname[len(root) :].lstrip("/")
        paths.extend(posixpath.join(rel_dir, name) if rel_dir else name for name in filenames)
    return sorted(paths)


def hash_file(path: str) -> FileEntry:
    if store_io.is_bucket_uri(path):
        return store_io.hash_object(path)
    if store_io.is_local(path):
        return hash_local_file(path.removeprefix("file://"))
    with store_io.gfile().GFile(path, "rb") as f:
        return hash_stream(iter(lambda: f.read(_CHUNK_BYTES), b""))


def build_manifest(model_dir: str) -> Manifest:
    if not store_io.is_dir(model_dir):
        raise FileNotFoundError(f"Model directory {model_dir} does not exist.")
    return Manifest({p: hash_file(posixpath.join(model_dir, p)) for p in list_files(model_dir)})


def manifest_path_for(model_dir: str) -> str:
    """Where the manifest of a model dir lives: in its parent (the artifact root for
    ``Format-Serving/`` and ``stamped_model/``), so publishing the model never publishes its
    own checksum file."""
    return posixpath.join(posixpath.dirname(model_dir.rstrip("/")), MANIFEST_FILENAME)
