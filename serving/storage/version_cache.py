"""Local copies of bucket versions, so loading and serving never read the bucket.

TF Serving loads ``gs://``/``s3://`` SavedModels through TensorFlow's remote file systems, so
every load (and every restart) reads the bucket file by file, unchecked. Here a version is
downloaded once into ``<cache>/<model>/<version>-<identity>/`` and loaded from local disk: the
download goes into a hidden ``.incoming-*`` sibling and is renamed into place only after it
has been checked, so an entry that exists is always complete and a restarted server reuses
it without downloading.
``identity`` is derived from the store's object revisions, so a rewritten version never
reuses a stale copy.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

_INCOMING = ".incoming-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class VersionCache:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)

    def _model_dir(self, model: str) -> str:
        return os.path.join(self.root, _UNSAFE.sub("_", model))

    def entry(self, model: str, version: int, identity: str) -> str:
        return os.path.join(self._model_dir(model), f"{version}-{identity}")

    def materialize(
        self, model: str, version: int, identity: str, fill: Callable[[str], None]
    ) -> tuple[str, bool]:
        """The entry's path and whether it was already there; otherwise ``fill`` writes a
        fresh directory, which becomes the entry when ``fill`` returns without an error."""
        final = self.entry(model, version, identity)
        if os.path.isdir(final):
            return final, True
        parent = self._model_dir(model)
        os.makedirs(parent, exist_ok=True)
        incoming = tempfile.mkdtemp(prefix=f"{_INCOMING}{version}-", dir=parent)
        try:
            fill(incoming)
            try:
                os.rename(incoming, final)
            except OSError:  # another load of the same version finished first
                if not os.path.isdir(final):
                    raise
                shutil.rmtree(incoming, ignore_errors=True)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        return final, False

    def evict(self, model: str, keep: Iterable[str]) -> list[str]:
        """Deletes every entry of ``model`` not in ``keep`` (and abandoned downloads)."""
        parent = self._model_dir(model)
        if not os.path.isdir(parent):
            return []
        keep = {os.path.abspath(p) for p in keep}
        removed = []
        for name in os.listdir(parent):
            path = os.path.join(parent, name)
            if path in keep or name.startswith(_INCOMING):
                continue  # a download in progress is removed by its own loader on failure
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        if removed:
            log.info("Model %s: removed %d cached version(s): %s", model, len(removed), removed)
        return removed

    def clear_incoming(self) -> None:
        """Removes downloads a previous process left half done (called at startup)."""
        for model in os.listdir(self.root):
            parent = os.path.join(self.root, model)
            if os.path.isdir(parent):
                for name in os.listdir(parent):
                    if name.startswith(_INCOMING):
                        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def private_cache_dir() -> str:
    """A per-process cache when ``--model_cache_dir`` is not given (removed at exit)."""
    return os.path.join(tempfile.gettempdir(), f"tfx-model-server-cache-{uuid.uuid4().hex[:12]}")
