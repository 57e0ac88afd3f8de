"""BucketModelStore against real GCS/S3 wire protocols: order, verification, claims, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from components import model_store
from components.bucket_store import BucketModelStore
from components.manifest import ManifestMismatchError, build_manifest
from serving.storage.bucket_layout import (
    ABANDONED_PREFIX,
    CLAIM_FILENAME,
    MARKER_FILENAME,
    ROLLED_BACK_PREFIX,
    group_by_version,
)
from serving.storage.object_store import PUBLISHING, PreconditionFailed, parse_location
from serving.storage.stores import open_store
from tests.support.server_process import REPO_ROOT


class Recording:
    """Wraps a real store client and records the writes, in order."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.writes: list[str] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upload(self, local_path: str, key: str) -> None:
        self.writes.append(key)
        self.inner.upload(local_path, key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.writes.append(key)
        self.inner.put(key, data, if_absent=if_absent)


def _store(base_uri: str):
    return open_store(parse_location(base_uri), PUBLISHING)


def _objects(base_uri: str) -> list[str]:
    return [o.key for o in _store(base_uri).list(parse_location(base_uri).prefix)]


def test_publish_claims_uploads_saved_model_last_then_marks_complete(base_uri, half_plus_two_dirs):
    source = half_plus_two_dirs[2.0]
    manifest = build_manifest(source)
    recording = Recording(_store(base_uri))
    store = BucketModelStore(base_uri, recording)

    published = store.publish(source, manifest)

    version = str(published.version)
    names = [w.split(f"/{version}/", 1)[1] for w in recording.writes]
    assert names[0] == CLAIM_FILENAME
    assert names[-2:] == ["saved_model.pb", MARKER_FILENAME]
    assert sorted(names[1:-1]) == sorted(manifest.files)
    assert published.path == f"{base_uri}/{version}"
    assert store.versions() == [published.version]
    marker = json.loads(
        recording.inner.read(parse_location(base_uri).child(version, MARKER_FILENAME).prefix)
    )
    assert marker["manifest"]["digest"] == manifest.digest
    # The bucket copy is byte-identical to the source.
    manifest.verify(published.path)


def test_mismatching_copy_is_removed_and_its_number_never_reused(
    base_uri, half_plus_two_dirs, tmp_path
):
    import shutil

    source = str(tmp_path / "model")
    shutil.copytree(half_plus_two_dirs[2.0], source)
    manifest = build_manifest(source)
    with open(os.path.join(source, "saved_model.pb"), "ab") as f:
        f.write(b"tampered")
    store = BucketModelStore(base_uri)

    with pytest.raises(ManifestMismatchError, match=r"changed=\['saved_model.pb'\]"):
        store.publish(source, manifest)

    leftovers = _objects(base_uri)
    assert store.versions() == []
    assert len(leftovers) == 1 and leftovers[0].startswith(ABANDONED_PREFIX), leftovers
    failed = int(leftovers[0][len(ABANDONED_PREFIX) :].split("-")[0])
    good = store.publish(half_plus_two_dirs[2.0], build_manifest(half_plus_two_dirs[2.0]))
    assert good.version > failed


def test_concurrent_pushers_get_distinct_versions(base_uri, half_plus_two_dirs, monkeypatch):
    """Three pushers list the same store, compute the same number and claim at the same time."""
    sources = [half_plus_two_dirs[b] for b in (2.0, 3.0, 4.0)]
    barrier = threading.Barrier(len(sources), timeout=60)
    real_claim = BucketModelStore._claim

    def claim_together(self, version, push_id, source):
        barrier.wait()
        return real_claim(self, version, push_id, source)

    monkeypatch.setattr(BucketModelStore, "_claim", claim_together)
    monkeypatch.setattr("components.bucket_store.time.time", lambda: 1_900_000_000.0)
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def push(source: str) -> None:
        try:
            results[source] = (
                BucketModelStore(base_uri).publish(source, build_manifest(source)).version
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert not errors, errors
    assert sorted(results.values()) == [1_900_000_000, 1_900_000_001, 1_900_000_002]
    store = BucketModelStore(base_uri)
    assert store.versions() == sorted(results.values())
    for source, version in results.items():  # each number holds exactly its own pusher's model
        build_manifest(source).verify(store.version_path(version))


def test_a_claim_answered_late_is_recognised_as_our_own(base_uri, half_plus_two_dirs):
    """A create-if-absent retried after a lost response fails on our own object: still ours."""

    class LostResponse(Recording):
        def put(self, key, data, *, if_absent=False):
            super().put(key, data, if_absent=if_absent)
            if key.endswith(CLAIM_FILENAME) and len(self.writes) == 1:
                raise PreconditionFailed("injected: the write landed, the answer was lost")

    store = BucketModelStore(base_uri, LostResponse(_store(base_uri)))
    published = store.publish(half_plus_two_dirs[2.0], build_manifest(half_plus_two_dirs[2.0]))
    assert store.versions() == [published.version]


@pytest.mark.integration
def test_killed_push_leaves_no_servable_version_and_is_cleaned_later(base_uri, half_plus_two_dirs):
    """A real SIGKILL after three objects: claim and some files stay, the marker never exists."""
    source = half_plus_two_dirs[3.0]
    script = textwrap.dedent(
        f"""
        import os, signal
        from components.bucket_store import BucketModelStore
        from components.manifest import build_manifest
        store = BucketModelStore({base_uri!r})
        real_upload, done = store._store.upload, []
        def upload_then_die(local, key):
            if len(done) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            real_upload(local, key)
            done.append(key)
        store._store.upload = upload_then_die
        store.publish({source!r}, build_manifest({source!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    listing = group_by_version(_store(base_uri).list(parse_location(base_uri).prefix))
    (killed,) = listing.versions.values()
    assert killed.claim is not None and killed.marker is None and len(killed.files) == 2
    assert "saved_model.pb" not in {o.key for o in killed.files}
    store = BucketModelStore(base_uri)
    assert store.versions() == []
    # A fresh claim is left alone (it may be a push in progress) ...
    assert store.clean_stale_incoming(3600.0) == []
    # ... an old one is abandoned by the next push, whose number is higher.
    published = store.publish(source, build_manifest(source), stale_incoming_seconds=0)
    assert published.version > killed.version
    names = {key.split("/")[0] for key in _objects(base_uri)} - {str(published.version)}
    assert len(names) == 1 and names.pop().startswith(f"{ABANDONED_PREFIX}{killed.version}-")


def test_versions_written_by_others_are_kept_by_cleanup(base_uri, half_plus_two_dirs):
    """A version without a claim (gsutil cp, the stock Pusher) is someone else's: never removed."""
    from components import store_io

    store_io.upload_tree(half_plus_two_dirs[2.0], f"{base_uri}/7")
    store = BucketModelStore(base_uri)

    assert store.clean_stale_incoming(0) == []
    assert store.versions() == [7]
    assert (
        store.publish(half_plus_two_dirs[3.0], build_manifest(half_plus_two_dirs[3.0])).version > 7
    )


def test_retention_and_rollback(base_uri, half_plus_two_dirs):
    store = BucketModelStore(base_uri)
    source = half_plus_two_dirs[2.0]
    manifest = build_manifest(source)
    versions = [store.publish(source, manifest).version for _ in range(4)]

    assert store.retain(2) == versions[:2]
    assert store.versions() == versions[2:]

    assert store.rollback() == [versions[3]]
    assert store.versions() == [versions[2]]
    hidden = {k.split("/")[0] for k in _objects(base_uri) if k.startswith(ROLLED_BACK_PREFIX)}
    assert [h.rsplit("-", 1)[0] for h in hidden] == [f"{ROLLED_BACK_PREFIX}{versions[3]}"]
    # The rolled-back copy is whole (model, claim and marker) and can be restored by copying.
    (rolled,) = hidden
    manifest.check(
        {
            k: v
            for k, v in build_manifest(f"{parse_location(base_uri).uri}/{rolled}").files.items()
            if k not in (CLAIM_FILENAME, MARKER_FILENAME)
        },
        rolled,
    )
    assert store.publish(source, manifest).version > versions[3]
    with pytest.raises(ValueError, match="is not in"):
        store.rollback(to_version=1)


def test_cli_lists_and_rolls_back_a_bucket(base_uri, half_plus_two_dirs, capsys):
    store = BucketModelStore(base_uri)
    source = half_plus_two_dirs[2.0]
    first, _ = (store.publish(source, build_manifest(source)).version for _ in range(2))

    assert model_store.main(["rollback", f"--base_directory={base_uri}"]) == 0

    assert capsys.readouterr().out.split() == [str(first)]
