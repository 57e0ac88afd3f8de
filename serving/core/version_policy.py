"""TF Serving's servable version policies (``latest``, ``all``, ``specific``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from serving import protos

log = logging.getLogger(__name__)

# From serving.protos, so the core imports no TensorFlow; policies are only read field by field,
# so an official ``file_system_storage_path_source_pb2`` policy works the same.
VersionPolicy = protos.message_type(
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
)


def select_versions(model_name: str, policy: VersionPolicy, candidates: Iterable[int]) -> set[int]:
    """The versions ``policy`` wants loaded out of the loadable ``candidates``."""
    available = sorted(set(candidates))
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(available)
    if choice == "specific":
        wanted = set(policy.specific.versions)
        if not wanted:
            log.warning("Model %s: version policy 'specific' lists no versions", model_name)
        return wanted & set(available)
    num = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return set(available[-num:])


def describe(policy: VersionPolicy) -> str:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all"
    if choice == "specific":
        return f"specific{sorted(policy.specific.versions)}"
    num = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return f"latest{{{num}}}"
