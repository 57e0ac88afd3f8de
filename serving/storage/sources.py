"""Picks each model's version source from its base path: local directories or buckets."""

from __future__ import annotations

import atexit
import shutil
from collections.abc import Callable

from serving.storage.bucket_source import BucketVersionSource
from serving.storage.object_store import is_bucket_uri
from serving.storage.source import VersionSource
from serving.storage.version_cache import VersionCache, private_cache_dir

Source = VersionSource | BucketVersionSource
SourceFactory = Callable[[str, str], Source]


class StorageSources:
    """``(model_name, base_path) -> source``; bucket sources share one local version cache.

    ``cache_dir`` is ``--model_cache_dir``; without it the cache is a private temp directory
    removed at exit. ``accept_tflite`` is ``--prefer_tflite_model`` (a ``model.tflite`` alone
    makes a version complete). Nothing cloud-related is imported until a bucket is polled.
    """

    def __init__(self, cache_dir: str = "", metrics=None, accept_tflite: bool = False) -> None:
        self._cache_dir = cache_dir
        self._metrics = metrics
        self._accept_tflite = accept_tflite
        self._cache: VersionCache | None = None

    def __call__(self, model_name: str, base_path: str) -> Source:
        if is_bucket_uri(base_path):
            return BucketVersionSource(
                model_name, base_path, self.cache(), self._metrics, self._accept_tflite
            )
        return VersionSource(model_name, base_path, accept_tflite=self._accept_tflite)

    def cache(self) -> VersionCache:
        if self._cache is None:
            root = self._cache_dir or private_cache_dir()
            self._cache = VersionCache(root)
            self._cache.clear_incoming()
            if not self._cache_dir:
                atexit.register(shutil.rmtree, root, ignore_errors=True)
        return self._cache
