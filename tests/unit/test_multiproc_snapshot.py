"""The front end's guess of the version a request runs on (``serving.multiproc.snapshot``).

The guess decides which signature a REST body is decoded against; the model process checks it
(tests/integration/test_frontend_processes.py). Here: what is guessed, and when the front end
must ask instead of guessing.
"""

from __future__ import annotations

from serving import protos
from serving.core.model_spec import ModelSpec
from serving.multiproc.protocol import b64, fingerprint
from serving.multiproc.snapshot import SignatureFingerprints, SnapshotView


def _signature(dtype: int) -> protos.SignatureDef:
    signature = protos.SignatureDef()
    signature.inputs["x"].name = "x:0"
    signature.inputs["x"].dtype = dtype
    return signature


FLOAT = _signature(protos.DT_FLOAT)
DOUBLE = _signature(protos.DT_DOUBLE)


def _snapshot() -> dict:
    fingerprints = SignatureFingerprints()
    fp_float, data_float = fingerprints.of(FLOAT)
    fp_double, data_double = fingerprints.of(DOUBLE)
    return {
        "models": {
            "m": {
                "versions": {
                    "1": {"serving_default": fp_float},
                    "2": {"serving_default": fp_double},
                },
                "labels": {"stable": 1, "gone": 7},
                "split": False,
            },
            "empty": {"versions": {}, "labels": {}, "split": False},
        },
        "signatures": {fp_float: b64(data_float), fp_double: b64(data_double)},
        "waiting": ["empty"],
    }


def test_fingerprint_follows_the_bytes_not_the_object():
    fingerprints = SignatureFingerprints()
    copy = protos.SignatureDef.FromString(FLOAT.SerializeToString())
    assert fingerprints.of(FLOAT)[0] == fingerprints.of(copy)[0]
    assert fingerprints.of(FLOAT)[0] != fingerprints.of(DOUBLE)[0]
    assert fingerprints.of(FLOAT)[0] == fingerprint(FLOAT.SerializeToString(deterministic=True))


def test_guesses_the_latest_the_named_and_the_labelled_version():
    view = SnapshotView()
    view.update(_snapshot())
    latest = view.guess(ModelSpec("m"))
    assert latest.version == 2
    assert latest.signatures["serving_default"].inputs["x"].dtype == protos.DT_DOUBLE
    assert view.guess(ModelSpec("m", version=1)).version == 1
    labelled = view.guess(ModelSpec("m", label="stable"))
    assert labelled.version == 1
    signature = labelled.signatures["serving_default"]
    assert labelled.fingerprint_of(signature) == SignatureFingerprints().of(FLOAT)[0]


def test_no_guess_where_only_the_model_process_can_answer():
    view = SnapshotView()
    view.update(_snapshot())
    assert view.guess(ModelSpec("unknown")) is None
    assert view.guess(ModelSpec("m", version=3)) is None  # not AVAILABLE (or not known yet)
    assert view.guess(ModelSpec("m", label="nope")) is None
    assert view.guess(ModelSpec("m", label="gone")) is None  # label of an unloaded version
    assert view.guess(ModelSpec("m", version=1, label="stable")) is None  # an error to report
    assert view.guess(ModelSpec("empty")) is None


def test_readiness_follows_the_snapshot_and_the_link():
    view = SnapshotView()
    assert view.models_without_available_version() == ["(model process starting)"]
    view.update(_snapshot())
    assert view.models_without_available_version() == ["empty"]
    view.disconnected()
    assert view.models_without_available_version() == ["empty", "m"]


def test_a_new_snapshot_replaces_the_cached_guesses():
    """Guesses are cached per snapshot: the next snapshot's latest version and labels win."""
    view = SnapshotView()
    view.update(_snapshot())
    assert view.guess(ModelSpec("m")).version == 2
    assert view.guess(ModelSpec("m", label="stable")).version == 1
    newer = _snapshot()
    model = newer["models"]["m"]
    model["versions"]["3"] = model["versions"]["1"]
    model["labels"]["stable"] = 2
    view.update(newer)
    assert view.guess(ModelSpec("m")).version == 3
    assert view.guess(ModelSpec("m", label="stable")).version == 2
    del newer["models"]["m"]
    view.update(newer)
    assert view.guess(ModelSpec("m")) is None
