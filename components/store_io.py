"""Artifact I/O for the components when a pipeline root (or model store) is a bucket.

TFX's ``fileio`` reaches ``gs://`` only through TensorFlow's GCS plugin and ``s3://`` not at
all in TensorFlow 2.16, and the components' TensorFlow work (loading signatures, writing
warmup records, hashing) wants local files anyway. So a component that meets a ``gs://`` or
``s3://`` URI stages it: ``localized`` downloads a directory into a temp dir, ``upload_tree``
puts a finished local directory in place, and the small read/write helpers go through the
same store clients the server uses (:mod:`serving.storage.object_store`), with the same
credentials and endpoint conventions. Local paths (and anything else TensorFlow reads) keep
going through ``tf.io.gfile``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from serving.storage.manifest import FileEntry, hash_local_file
from serving.storage.object_store import (
    PUBLISHING,
    ObjectStore,
    StoreLocation,
    StoreObject,
    is_bucket_uri,
    parse_location,
)
from serving.storage.stores import open_store

__all__ = ["is_bucket_uri"]


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def gfile():
    """``tf.io.gfile``, imported on first use and only for URIs that are neither local nor
    buckets (e.g. ``hdfs://``): a push needs no TensorFlow, which keeps the Pusher and the
    tests' pusher subprocesses light."""
    import tensorflow as tf

    return tf.io.gfile


@functools.cache
def _client(scheme: str, bucket: str) -> ObjectStore:
    """One client per bucket per process: creating one resolves credentials."""
    return open_store(StoreLocation(scheme, bucket, ""), PUBLISHING)


def _store(uri: str) -> tuple[ObjectStore, StoreLocation]:
    location = parse_location(uri)
    return _client(location.scheme, location.bucket), location


def list_objects(uri: str) -> list[StoreObject]:
    store, location = _store(uri)
    return store.list(location.prefix)


def is_dir(uri: str) -> bool:
    if is_bucket_uri(uri):
        return bool(list_objects(uri))
    if is_local(uri):
        return os.path.isdir(uri.removeprefix("file://"))
    return gfile().isdir(uri)


def exists(uri: str) -> bool:
    """A file, or (on buckets) a prefix with objects below it."""
    if is_local(uri):
        return os.path.exists(uri.removeprefix("file://"))
    if not is_bucket_uri(uri):
        return gfile().exists(uri)
    store, location = _store(uri)
    try:
        store.read(location.prefix)
        return True
    except FileNotFoundError:
        return bool(store.list(location.prefix))


def read_bytes(uri: str) -> bytes:
    if is_bucket_uri(uri):
        store, location = _store(uri)
        return store.read(location.prefix)
    if is_local(uri):
        with open(uri.removeprefix("file://"), "rb") as f:
            return f.read()
    with gfile().GFile(uri, "rb") as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    if is_bucket_uri(uri):
        store, location = _store(uri)
        store.put(location.prefix, data)
        return
    if is_local(uri):
        path = uri.removeprefix("file://")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return
    gfile().makedirs(posixpath.dirname(uri) or ".")
    with gfile().GFile(uri, "wb") as f:
        f.write(data)


def download_file(uri: str, local_path: str) -> None:
    store, location = _store(uri)
    store.download(location.prefix, local_path)


def hash_object(uri: str) -> FileEntry:
    """sha256 and size of one bucket object, streamed through a temp file (models are big)."""
    store, location = _store(uri)
    with tempfile.TemporaryDirectory(prefix="hash-") as tmp:
        local = os.path.join(tmp, "object")
        store.download(location.prefix, local)
        return hash_local_file(local)


def download_tree(uri: str, local_dir: str) -> int:
    """Copies every object below the bucket prefix ``uri`` into ``local_dir`` (created);
    returns the number of files."""
    store, location = _store(uri)
    objects = store.list(location.prefix)
    os.makedirs(local_dir, exist_ok=True)
    for obj in objects:
        target = os.path.join(local_dir, *obj.key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        store.download(location.child(obj.key).prefix, target)
    return len(objects)


def upload_tree(local_dir: str, uri: str) -> None:
    """Copies a local directory to ``uri`` (a bucket prefix, or any TensorFlow path)."""
    if is_local(uri):
        shutil.copytree(local_dir, uri.removeprefix("file://"), dirs_exist_ok=True)
        return
    if not is_bucket_uri(uri):
        _copy_tree_gfile(local_dir, uri)
        return
    store, location = _store(uri)
    for dirpath, _dirnames, filenames in os.walk(local_dir):
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            key = os.path.relpath(full, local_dir).replace(os.sep, "/")
            store.upload(full, location.child(key).prefix)


def _copy_tree_gfile(local_dir: str, target: str) -> None:
    for dirpath, _dirnames, filenames in os.walk(local_dir):
        rel = os.path.relpath(dirpath, local_dir)
        folder = target if rel == "." else posixpath.join(target, *rel.split(os.sep))
        gfile().makedirs(folder)
        for name in filenames:
            gfile().copy(os.path.join(dirpath, name), posixpath.join(folder, name), True)


def serving_model_path(model_uri: str, is_old_artifact: bool) -> str:
    """``tfx.utils.path_utils.serving_model_path`` for bucket URIs: ``Format-Serving/`` (or,
    for Estimator exports, the single directory below its ``export/<name>/``)."""
    from tfx.utils import path_utils  # components only; the server never imports this module

    model_dir = path_utils.serving_model_dir(model_uri, is_old_artifact)
    export_dir = posixpath.join(model_dir, "export")
    objects = list_objects(export_dir)
    if not objects:
        return model_dir
    children = sorted({"/".join(o.key.split("/")[:2]) for o in objects if o.key.count("/") >= 2})
    if len(children) != 1:
        raise RuntimeError(f"Expected one exported model below {export_dir}, found {children}.")
    return posixpath.join(export_dir, children[0])


@contextlib.contextmanager
def localized(uri: str, prefix: str = "artifact-") -> Iterator[str]:
    """A local directory with the contents of ``uri``: the path itself when it is not a
    bucket, else a temp copy removed afterwards."""
    if not is_bucket_uri(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        local = os.path.join(tmp, posixpath.basename(uri.rstrip("/")) or "dir")
        if not download_tree(uri, local):
            raise FileNotFoundError(f"{uri} holds no objects.")
        yield local


@contextlib.contextmanager
def staged_output(uri: str, prefix: str = "output-") -> Iterator[str]:
    """A directory to write ``uri``'s contents into: ``uri`` itself when it is not a bucket,
    else a temp dir uploaded to ``uri`` when the block finishes without an error."""
    if not is_bucket_uri(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        local = os.path.join(tmp, posixpath.basename(uri.rstrip("/")) or "dir")
        os.makedirs(local)
        yield local
        upload_tree(local, uri)


@contextlib.contextmanager
def staged_artifacts(inputs: Iterable, outputs: Iterable) -> Iterator[None]:
    """Runs the block with bucket-URI artifacts swapped for local directories.

    Input artifacts are downloaded first; output artifacts get empty local directories that
    are uploaded to their bucket URIs when the block succeeds. Every URI is restored
    afterwards, so MLMD records the bucket URIs as they are. Artifacts on local or other
    TensorFlow paths are left alone. This keeps an executor's TensorFlow work on local files
    (what ``tf.saved_model`` and ``tf.data`` want) without changing its code.
    """
    inputs = [a for a in inputs if a is not None and is_bucket_uri(a.uri)]
    outputs = [a for a in outputs if a is not None and is_bucket_uri(a.uri)]
    if not inputs and not outputs:
        yield
        return
    originals = [(a, a.uri) for a in [*inputs, *outputs]]
    with tempfile.TemporaryDirectory(prefix="staged-artifacts-") as tmp:
        try:
            for number, artifact in enumerate(inputs):
                local = os.path.join(tmp, f"input-{number}")
                download_tree(artifact.uri, local)
                artifact.uri = local
            for number, artifact in enumerate(outputs):
                local = os.path.join(tmp, f"output-{number}")
                os.makedirs(local)
                artifact.uri = local
            yield
            for artifact, uri in originals[len(inputs) :]:
                upload_tree(artifact.uri, uri)
        finally:
            for artifact, uri in originals:
                artifact.uri = uri
