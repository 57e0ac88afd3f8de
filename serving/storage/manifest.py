"""Content manifest of a model directory: the sha256 and size of every file.

Written by the Exporter/InfraValidator next to the model, checked by the Pusher on the copy it
publishes, carried inside a bucket version's completion marker, and checked again by the
server on the copy it downloads into its cache -- so "complete" always means "byte-identical
to what was validated", on every hop. This module is the format and the local-file checks;
:mod:`components.manifest` adds reading and writing through TensorFlow's file systems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

FORMAT_VERSION = 1
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

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "digest": self.digest,
            "files": {p: dataclasses.asdict(e) for p, e in sorted(self.files.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"Unsupported manifest format_version {data.get('format_version')!r}; "
                f"this code reads version {FORMAT_VERSION}. Re-run the Exporter."
            )
        manifest = cls({p: FileEntry(**e) for p, e in data["files"].items()})
        if manifest.digest != data["digest"]:
            raise ManifestMismatchError(
                "Manifest digest does not match its own file list; the manifest was edited "
                "or truncated. Re-run the Exporter."
            )
        return manifest

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    def check(self, actual: dict[str, FileEntry], where: str) -> None:
        """Raises ManifestMismatchError naming every difference between ``actual`` and this."""
        missing = sorted(set(self.files) - set(actual))
        extra = sorted(set(actual) - set(self.files))
        changed = sorted(p for p in set(self.files) & set(actual) if self.files[p] != actual[p])
        if missing or extra or changed:
            raise ManifestMismatchError(
                f"{where} does not match its manifest: missing={missing} extra={extra} "
                f"changed={changed}. The model was modified after export or the copy is "
                "incomplete; re-export or re-push."
            )


def hash_stream(chunks) -> FileEntry:
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return FileEntry(sha256=h.hexdigest(), size=size)


def hash_local_file(path: str) -> FileEntry:
    with open(path, "rb") as f:
        return hash_stream(iter(lambda: f.read(_CHUNK_BYTES), b""))


def local_manifest_paths(model_dir: str) -> list[str]:
    """Relative '/'-separated paths of every file below a local directory."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(model_dir):
        for name in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), model_dir))
    return [p.replace(os.sep, "/") for p in found]
