"""ModelStore: atomic publish, collisions, retention, rollback and crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from components import model_store
from components.manifest import ManifestMismatchError, build_manifest
from components.model_store import ModelStore

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def model_dir(tmp_path, make_saved_model) -> str:
    return make_saved_model(str(tmp_path / "model"))


def test_publish_creates_verified_integer_version(tmp_path, model_dir):
    store = ModelStore(str(tmp_path / "store"))
    before = int(time.time())

    published = store.publish(model_dir, build_manifest(model_dir))

    assert published.version >= before
    assert store.versions() == [published.version]
    assert os.listdir(store.base) == [str(published.version)]
    build_manifest(model_dir).verify(published.path)


def test_same_second_collision_takes_next_version_instead_of_skipping(tmp_path, model_dir):
    store = ModelStore(str(tmp_path / "store"))
    manifest = build_manifest(model_dir)
    future = int(time.time()) + 1000
    os.makedirs(os.path.join(store.base, str(future), "variables"))

    published = store.publish(model_dir, manifest)

    assert published.version == future + 1
    assert store.versions() == [future, future + 1]


def test_concurrently_created_version_is_never_overwritten(tmp_path, model_dir, monkeypatch):
    store = ModelStore(str(tmp_path / "store"))
    taken = int(time.time()) + 500
    real_rename = os.rename

    def rename_racing_with_other_publisher(src, dst):
        if dst == store.version_path(taken) and not os.path.exists(dst):
            os.makedirs(os.path.join(dst, "other"))
        return real_rename(src, dst)

    monkeypatch.setattr(store, "_highest_used_version", lambda: taken - 1)
    monkeypatch.setattr(model_store.os, "rename", rename_racing_with_other_publisher)

    published = store.publish(model_dir, build_manifest(model_dir))

    assert published.version == taken + 1
    assert os.listdir(store.version_path(taken)) == ["other"]


def test_manifest_mismatch_fails_and_leaves_nothing(tmp_path, model_dir):
    store = ModelStore(str(tmp_path / "store"))
    manifest = build_manifest(model_dir)
    with open(os.path.join(model_dir, "saved_model.pb"), "ab") as f:
        f.write(b"tampered")

    with pytest.raises(ManifestMismatchError, match=r"changed=\['saved_model.pb'\]"):
        store.publish(model_dir, manifest)

    assert os.listdir(store.base) == []


def test_exception_mid_copy_leaves_no_visible_version_and_next_push_succeeds(
    tmp_path, model_dir, monkeypatch
):
    store = ModelStore(str(tmp_path / "store"))
    manifest = build_manifest(model_dir)
    real_copy = model_store._copy_file
    copied = []

    def failing_copy(src, dst):
        if len(copied) == 2:
            raise OSError("disk full (injected)")
        copied.append(src)
        real_copy(src, dst)

    monkeypatch.setattr(model_store, "_copy_file", failing_copy)
    with pytest.raises(OSError, match="injected"):
        store.publish(model_dir, manifest)
    assert os.listdir(store.base) == []

    monkeypatch.setattr(model_store, "_copy_file", real_copy)
    published = store.publish(model_dir, manifest)
    assert store.versions() == [published.version]


@pytest.mark.integration
def test_killed_publisher_leaves_only_hidden_dir_cleaned_by_next_push(tmp_path, model_dir):
    """A real SIGKILL mid-copy: no cleanup code runs, yet no integer version becomes visible."""
    base = str(tmp_path / "store")
    script = textwrap.dedent(
        f"""
        import os, signal
        from components import model_store
        from components.manifest import build_manifest
        real_copy, n = model_store._copy_file, []
        def copy_then_die(src, dst):
            if len(n) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            n.append(src)
            real_copy(src, dst)
        model_store._copy_file = copy_then_die
        model_store.ModelStore({base!r}).publish({model_dir!r}, build_manifest({model_dir!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = ModelStore(base)
    leftovers = os.listdir(base)
    assert store.versions() == []
    assert len(leftovers) == 1 and leftovers[0].startswith(model_store.INCOMING_PREFIX)

    published = store.publish(model_dir, build_manifest(model_dir), stale_incoming_seconds=0)

    assert os.listdir(base) == [str(published.version)]
    # The crashed attempt's number is never reused for different content.
    assert published.version > int(leftovers[0].split("-")[1])


def test_fresh_incoming_dir_of_a_concurrent_publisher_is_left_alone(tmp_path, model_dir):
    store = ModelStore(str(tmp_path / "store"))
    in_flight = os.path.join(store.base, ".incoming-1-abcdef")
    os.makedirs(in_flight)

    store.publish(model_dir, build_manifest(model_dir))

    assert os.path.isdir(in_flight)


def test_retain_keeps_newest_and_rollback_hides_newer(tmp_path, model_dir):
    store = ModelStore(str(tmp_path / "store"))
    manifest = build_manifest(model_dir)
    versions = [store.publish(model_dir, manifest).version for _ in range(4)]

    assert store.retain(2) == versions[:2]
    assert store.versions() == versions[2:]

    assert store.rollback() == [versions[3]]
    assert store.versions() == [versions[2]]
    hidden = [n for n in os.listdir(store.base) if not n.isdigit()]
    assert [n.rsplit("-", 1)[0] for n in hidden] == [f".rolled-back-{versions[3]}"]
    # A push after a rollback gets a fresh number above the rolled-back one.
    assert store.publish(model_dir, manifest).version > versions[3]


def test_rollback_and_retain_reject_impossible_requests(tmp_path, model_dir):
    store = ModelStore(str(tmp_path / "store"))
    store.publish(model_dir, build_manifest(model_dir))
    with pytest.raises(ValueError, match="Nothing to roll back to"):
        store.rollback()
    with pytest.raises(ValueError, match="is not in"):
        store.rollback(to_version=1)
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        store.retain(0)


def test_bucket_uri_is_routed_to_the_bucket_store_with_guidance():
    with pytest.raises(ValueError, match="open_model_store"):
        ModelStore("gs://bucket/models/m")
    with pytest.raises(ValueError, match="neither a POSIX path"):
        ModelStore("hdfs://namenode/models/m")


def test_cli_rollback_prints_remaining_versions(tmp_path, model_dir, capsys):
    store = ModelStore(str(tmp_path / "store"))
    manifest = build_manifest(model_dir)
    first, _ = (store.publish(model_dir, manifest).version for _ in range(2))

    assert model_store.main(["rollback", f"--base_directory={store.base}"]) == 0

    assert capsys.readouterr().out.split() == [str(first)]
