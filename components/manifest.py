"""Content manifest of a model directory: the sha256 and size of every file.

The Exporter (and the InfraValidator for its stamped model) writes the manifest next to the
model it describes; the Pusher re-hashes the copy it is about to publish and compares. That
turns "the copy looks complete" into "the copy is byte-identical to what was validated", which
is what makes the atomic rename in :mod:`components.model_store` safe to do.

Source directories may live on any filesystem TensorFlow can read (``gs://`` pipeline roots on
Kubeflow), so reading goes through ``tf.io.gfile``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath

import tensorflow as tf

MANIFEST_FILENAME = "manifest.json"
_FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 20


class ManifestMismatchError(RuntimeError):
    """A model directory does not match its manifest (missing, extra or changed files)."""


@dataclasses.dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Files of a model directory keyed by POSIX path relative to the directory."""

    files: dict[str, FileEntry]

    @property
    def digest(self) -> str:
        """One sha256 over the sorted entries: a stable identity for the whole model."""
        h = hashlib.sha256()
        for path in sorted(self.files):
            entry = self.files[path]
            h.update(f"{path}\0{entry.sha256}\0{entry.size}\n".encode())
        return h.hexdigest()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": _FORMAT_VERSION,
                "digest": self.digest,
                "files": {p: dataclasses.asdict(e) for p, e in sorted(self.files.items())},
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"Unsupported manifest format_version {data.get('format_version')!r}; "
                f"this code reads version {_FORMAT_VERSION}. Re-run the Exporter."
            )
        manifest = cls({p: FileEntry(**e) for p, e in data["files"].items()})
        if manifest.digest != data["digest"]:
            raise ManifestMismatchError(
                "Manifest digest does not match its own file list; the manifest was edited "
                "or truncated. Re-run the Exporter."
            )
        return manifest

    def write(self, path: str) -> None:
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(self.to_json())

    @classmethod
    def read(cls, path: str) -> Manifest:
        with tf.io.gfile.GFile(path, "r") as f:
            return cls.from_json(f.read())

    def verify(self, model_dir: str) -> None:
        """Raises ManifestMismatchError naming every difference between the dir and the manifest."""
        actual = build_manifest(model_dir).files
        missing = sorted(set(self.files) - set(actual))
        extra = sorted(set(actual) - set(self.files))
        changed = sorted(p for p in set(self.files) & set(actual) if self.files[p] != actual[p])
        if missing or extra or changed:
            raise ManifestMismatchError(
                f"{model_dir} does not match its manifest: missing={missing} extra={extra} "
                f"changed={changed}. The model was modified after export or the copy is "
                "incomplete; re-export or re-push."
            )


def list_files(model_dir: str) -> list[str]:
    """Relative POSIX paths of all files below model_dir, sorted."""
    root = model_dir.rstrip("/")
    paths = []
    for dirname, _, filenames in tf.io.gfile.walk(root):
        rel_dir = dirname[len(root) :].lstrip("/")
        paths.extend(posixpath.join(rel_dir, name) if rel_dir else name for name in filenames)
    return sorted(paths)


def hash_file(path: str) -> FileEntry:
    h = hashlib.sha256()
    size = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
    return FileEntry(sha256=h.hexdigest(), size=size)


def build_manifest(model_dir: str) -> Manifest:
    if not tf.io.gfile.isdir(model_dir):
        raise FileNotFoundError(f"Model directory {model_dir} does not exist.")
    return Manifest({p: hash_file(posixpath.join(model_dir, p)) for p in list_files(model_dir)})


def manifest_path_for(model_dir: str) -> str:
    """Where the manifest of a model dir lives: in its parent (the artifact root for
    ``Format-Serving/`` and ``stamped_model/``), so publishing the model never publishes its
    own checksum file."""
    return posixpath.join(posixpath.dirname(model_dir.rstrip("/")), MANIFEST_FILENAME)
