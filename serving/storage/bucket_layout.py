"""How model versions are laid out in a bucket, shared by the Pusher and the server.

TF Serving's layout, ``<base>/<integer version>/<SavedModel files>``, plus two small control
objects inside each version pushed by this project's Pusher:

* ``tfx-serving-push.json`` -- the *claim*, created first with a create-if-absent
  precondition. Whoever creates it owns that version number; a concurrent pusher gets a
  precondition failure and moves on to the next number, so two pushes never share one.
* ``tfx-serving-complete.json`` -- the *completion marker*, written last, after every model
  file (``saved_model.pb`` last of those) has been uploaded and read back against the
  manifest. It holds that manifest, so a server can check its own download too.

A version with a claim and no marker is a push in progress (or a crashed one) and is never
loaded. A version with neither was written by someone else (``gsutil cp``, the stock TFX
Pusher): it is loaded once it looks complete and its listing is unchanged across two polls,
as for local directories. TF Serving and other readers ignore both files (unknown files in a
version directory) and every non-integer prefix below the base, which is where this project
keeps hidden state: ``.rolled-back-<version>-<id>/`` (rolled-back versions, kept whole) and
``.abandoned-<version>-<id>`` (the claim of a push that failed or was killed), so version
numbers are never handed out twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from serving.storage.object_store import StoreObject
from serving.storage.source import parse_version

log = logging.getLogger(__name__)

CLAIM_FILENAME = "tfx-serving-push.json"
MARKER_FILENAME = "tfx-serving-complete.json"
CONTROL_FILENAMES = frozenset({CLAIM_FILENAME, MARKER_FILENAME})
ROLLED_BACK_PREFIX = ".rolled-back-"
ABANDONED_PREFIX = ".abandoned-"
_HIDDEN_VERSION = re.compile(
    rf"^(?:{re.escape(ROLLED_BACK_PREFIX)}|{re.escape(ABANDONED_PREFIX)})(\d+)-[0-9a-f]+$"
)
SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass
class VersionObjects:
    """The objects of one ``<base>/<name>/`` version prefix."""

    name: str
    version: int
    files: list[StoreObject] = field(default_factory=list)  # model files, keys below the dir
    claim: StoreObject | None = None
    marker: StoreObject | None = None

    def deletion_order(self) -> list[str]:
        """Every key below the version dir, in the order that deletes it safely for all
        readers: the marker first (this project's servers drop it), then ``saved_model.pb``
        (TF Serving stops seeing a loadable version), the rest, and the claim last (until it
        goes, the number stays recognisably ours)."""
        first = [MARKER_FILENAME] if self.marker else []
        model = sorted(o.key for o in self.files)
        model.sort(key=lambda k: k not in SAVED_MODEL_FILENAMES)
        return first + model + ([CLAIM_FILENAME] if self.claim else [])


@dataclass
class BaseListing:
    versions: dict[int, VersionObjects]
    hidden_numbers: set[int]  # numbers of rolled-back and abandoned versions
    hidden_prefixes: dict[str, list[StoreObject]]  # name -> objects, for rollback/cleanup

    def highest_used_version(self) -> int:
        return max([*self.versions, *self.hidden_numbers], default=0)


def group_by_version(objects: list[StoreObject]) -> BaseListing:
    """Splits one recursive listing of a base prefix into versions and hidden state."""
    versions: dict[int, VersionObjects] = {}
    hidden: dict[str, list[StoreObject]] = {}
    numbers: set[int] = set()
    for obj in objects:
        name, sep, rest = obj.key.partition("/")
        hidden_match = _HIDDEN_VERSION.match(name)
        if hidden_match:
            numbers.add(int(hidden_match.group(1)))
            hidden.setdefault(name, []).append(obj)
            continue
        version = parse_version(name)
        if version is None or not sep:
            continue  # not a version directory (or a plain object named like one)
        entry = versions.get(version)
        if entry is None:
            entry = versions[version] = VersionObjects(name, version)
        elif entry.name != name:
            log.warning(
                "Two prefixes name version %d (%s, %s); using %s", version, entry.name, name, name
            )
            entry = versions[version] = VersionObjects(name, version)
        relative = StoreObject(rest, obj.size, obj.revision, obj.mtime)
        if rest == CLAIM_FILENAME:
            entry.claim = relative
        elif rest == MARKER_FILENAME:
            entry.marker = relative
        else:
            entry.files.append(relative)
    return BaseListing(versions, numbers, hidden)
