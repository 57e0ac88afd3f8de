"""Manifest: hashing, digest stability and tamper detection."""

from __future__ import annotations

import os

import pytest

from components.manifest import Manifest, ManifestMismatchError, build_manifest, manifest_path_for


def test_round_trip_and_verify(tmp_path, make_saved_model):
    model_dir = make_saved_model(str(tmp_path / "Format-Serving"))
    manifest = build_manifest(model_dir)
    path = manifest_path_for(model_dir)

    manifest.write(path)
    reread = Manifest.read(path)

    assert path == str(tmp_path / "manifest.json")
    assert reread == manifest and reread.digest == manifest.digest
    assert "saved_model.pb" in manifest.files
    assert any(p.startswith("variables/") for p in manifest.files)
    reread.verify(model_dir)


def test_verify_names_missing_extra_and_changed_files(tmp_path, make_saved_model):
    model_dir = make_saved_model(str(tmp_path / "m"))
    manifest = build_manifest(model_dir)
    os.remove(os.path.join(model_dir, "fingerprint.pb"))
    with open(os.path.join(model_dir, "extra.txt"), "w") as f:
        f.write("x")
    with open(os.path.join(model_dir, "saved_model.pb"), "ab") as f:
        f.write(b"x")

    with pytest.raises(ManifestMismatchError) as err:
        manifest.verify(model_dir)

    message = str(err.value)
    assert "missing=['fingerprint.pb']" in message
    assert "extra=['extra.txt']" in message
    assert "changed=['saved_model.pb']" in message


def test_edited_manifest_is_rejected(tmp_path, make_saved_model):
    model_dir = make_saved_model(str(tmp_path / "m"))
    text = build_manifest(model_dir).to_json().replace('"size": ', '"size": 1', 1)

    with pytest.raises(ManifestMismatchError, match="edited or truncated"):
        Manifest.from_json(text)
