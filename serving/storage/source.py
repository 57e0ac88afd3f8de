"""Discovers the complete, settled versions under one model's base path.

TF Serving loads a version directory the moment its integer name appears, so copies still in
flight get loaded half-written (tensorflow/serving#1086). Here a version is offered only when
it is *complete* (a SavedModel file, and when ``variables/`` exists its index and every data
shard) and *settled* (its file listing, sizes and mtimes unchanged since the previous poll).
Copies made with ``cp -p``/``copytree`` keep old mtimes, so the comparison across polls, not
file age, is what proves a directory stopped changing. With ``--prefer_tflite_model`` a
``model.tflite`` alone also makes a version complete (TF Serving loads it instead of the
SavedModel when present).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from serving.storage.filesystem import FileInfo, FileSystem, filesystem_for

log = logging.getLogger(__name__)

_VERSION_NAME = re.compile(r"\d+")
_INT64_MAX = 2**63 - 1
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
TFLITE_MODEL_FILE = "model.tflite"
_DATA_SHARD = re.compile(r"variables/variables\.data-(\d+)-of-(\d+)")

Fingerprint = tuple[FileInfo, ...]


def parse_version(name: str) -> int | None:
    """The version number a child directory name stands for, or None if it is not a version."""
    if not _VERSION_NAME.fullmatch(name):
        return None
    number = int(name)
    return number if number <= _INT64_MAX else None


def incompleteness(files: Fingerprint, accept_tflite: bool = False) -> str | None:
    """Why a version directory cannot be loaded yet, or None when it looks complete.

    ``accept_tflite``: ``--prefer_tflite_model`` is on, so ``model.tflite`` is a model too.
    """
    names = {f.relative_path for f in files}
    if accept_tflite and TFLITE_MODEL_FILE in names:
        return None
    if not any(n in names for n in _SAVED_MODEL_FILES):
        if TFLITE_MODEL_FILE in names:
            return (
                "no saved_model.pb or saved_model.pbtxt yet (it has a model.tflite: start the "
                "server with --prefer_tflite_model=true to serve it)"
            )
        return "no saved_model.pb or saved_model.pbtxt yet"
    if not any(n.startswith("variables/") for n in names):
        return None
    if "variables/variables.index" not in names:
        return "variables/ has no variables.index yet"
    shards: dict[int, set[int]] = {}
    for name in names:
        match = _DATA_SHARD.fullmatch(name)
        if match:
            shards.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not shards:
        return "variables/ has an index but no data shard yet"
    for total, present in shards.items():
        missing = set(range(total)) - present
        if missing:
            return f"variables/ is missing data shard(s) {sorted(missing)} of {total}"
    return None


@dataclass(frozen=True)
class VersionCandidate:
    """A complete, settled version directory; ``fingerprint`` identifies its exact contents."""

    version: int
    path: str
    fingerprint: Fingerprint


@dataclass
class Discovery:
    """The outcome of one poll of a base path."""

    base_path_exists: bool
    ready: dict[int, VersionCandidate] = field(default_factory=dict)
    # Complete but modified since the previous poll: ready after one more quiet poll.
    changing: set[int] = field(default_factory=set)
    # Incomplete (or unreadable), with the reason; may stay so forever (an abandoned copy).
    pending: dict[int, str] = field(default_factory=dict)


class VersionSource:
    """Polls one base path; remembers the previous listing to tell settled from changing."""

    def __init__(
        self,
        model_name: str,
        base_path: str,
        fs: FileSystem | None = None,
        accept_tflite: bool = False,
    ) -> None:
        self.model_name = model_name
        self.base_path = base_path
        self._fs = fs or filesystem_for(base_path)
        self._accept_tflite = accept_tflite
        self._previous: dict[int, Fingerprint] = {}
        self._warned: set[str] = set()
        self._pending_reasons: dict[int, str] = {}

    def poll(self) -> Discovery:
        try:
            if not self._fs.is_dir(self.base_path):
                self._warn_once(
                    "missing",
                    "Could not find base path %s for servable %s; keeping what is loaded and "
                    "polling again",
                    self.base_path,
                    self.model_name,
                )
                return Discovery(base_path_exists=False)
            children = self._fs.list_children(self.base_path)
        except OSError as exc:
            self._warn_once("oserror", "Cannot list %s: %s", self.base_path, exc)
            return Discovery(base_path_exists=False)
        self._warned.discard("missing")
        self._warned.discard("oserror")

        discovery = Discovery(base_path_exists=True)
        seen: dict[int, Fingerprint] = {}
        for name in sorted(children):
            version = parse_version(name)
            if version is None:
                continue
            path = self._fs.join(self.base_path, name)
            if version in seen:
                log.warning(
                    "Model %s: two directories name version %d; using %s",
                    self.model_name,
                    version,
                    path,
                )
            try:
                if not self._fs.is_dir(path):
                    continue
                files = tuple(self._fs.walk_files(path))
            except OSError as exc:  # vanished or unreadable mid-poll
                discovery.pending[version] = f"cannot read {path}: {exc}"
                continue
            seen[version] = files
            reason = incompleteness(files, self._accept_tflite)
            if reason is not None:
                discovery.pending[version] = reason
            elif self._previous.get(version) != files:
                discovery.changing.add(version)
            else:
                discovery.ready[version] = VersionCandidate(version, path, files)
        if not seen:
            self._warn_once(
                "empty",
                "No versions of servable %s found under base path %s. Did you forget to name "
                "your leaf directory as a number (eg. '/1/')?",
                self.model_name,
                self.base_path,
            )
        else:
            self._warned.discard("empty")
        self._previous = seen
        self._log_pending(discovery.pending)
        return discovery

    def _log_pending(self, pending: dict[int, str]) -> None:
        """Says once (per reason) why a version directory is being skipped."""
        for version, reason in pending.items():
            if self._pending_reasons.get(version) != reason:
                log.warning(
                    "Model %s: version %d is not loadable yet: %s", self.model_name, version, reason
                )
        self._pending_reasons = dict(pending)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)
