"""The Estimator export shipped in the tfx wheel, served with in-process TensorFlow's numbers.

The model (TFX's Chicago-taxi testdata, a TF1 Estimator export with classify/regress/predict
signatures over serialized tf.Examples) is used as it ships; the examples are built from the
CSV next to it, typed by the model's own ParseExample spec. On the current stack, which has no
tfx, the files come from the TFX stack's environment: an Estimator export served by TF 2.21.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.support.server_process import ServerProcess
from tests.support.stacks import tfx_stack_python

pytestmark = pytest.mark.integration

_TESTDATA = "components/testdata"
_EXPORT = f"{_TESTDATA}/trainer/current/Format-Serving/export/chicago-taxi"
_CSV = f"{_TESTDATA}/external/csv/data.csv"


def _tfx_package() -> Path:
    """The installed tfx package: here, or in the TFX stack's environment (found, not imported)."""
    spec = importlib.util.find_spec("tfx")
    if spec is not None:
        return Path(spec.submodule_search_locations[0])
    code = "import importlib.util as u; print(u.find_spec('tfx').submodule_search_locations[0])"
    where = subprocess.run(
        [tfx_stack_python(), "-c", code], capture_output=True, text=True, check=True
    )
    return Path(where.stdout.strip())


def _feature_types(model_dir: Path) -> dict[str, tf.DType]:
    """Feature name -> dtype, read from the ParseExample op in the model's graph."""
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        tf.compat.v1.saved_model.load(session, ["serve"], str(model_dir))
        op = next(o for o in graph.get_operations() if o.type == "ParseExampleV2")
        keys = session.run(op.inputs[2])
        return dict(zip((k.decode() for k in keys), op.get_attr("sparse_types"), strict=True))


def _rows(csv_path: Path, count: int) -> list[dict[str, str]]:
    with open(csv_path, newline="") as handle:
        return [row for _, row in zip(range(count), csv.DictReader(handle), strict=False)]


def _typed(row: dict[str, str], types: dict[str, tf.DType]) -> dict[str, object]:
    features: dict[str, object] = {}
    for name, dtype in types.items():
        text = row.get(name, "")
        if text == "":
            continue  # a missing sparse feature
        if dtype == tf.string:
            features[name] = text
        elif dtype == tf.int64:
            features[name] = int(float(text))
        else:
            features[name] = float(text)
    return features


def _example(features: dict[str, object]) -> bytes:
    feature = {}
    for name, value in features.items():
        if isinstance(value, str):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif isinstance(value, int):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    tfx_package = _tfx_package()
    (version_dir,) = list((tfx_package / _EXPORT).iterdir())
    base = tmp_path_factory.mktemp("store") / "taxi"
    shutil.copytree(version_dir, base / version_dir.name)
    types = _feature_types(version_dir)
    features = [_typed(row, types) for row in _rows(tfx_package / _CSV, 8)]
    loaded = tf.saved_model.load(str(version_dir))
    with ServerProcess(["--model_name=taxi", f"--model_base_path={base}"]) as server:
        yield server, loaded, features, int(version_dir.name)


def test_classify_matches_in_process(estimator):
    server, loaded, features, _ = estimator
    serialized = tf.constant([_example(f) for f in features])
    expected = loaded.signatures["classification"](inputs=serialized)
    status, payload = server.json(
        "POST",
        "/v1/models/taxi:classify",
        {"signature_name": "classification", "examples": features},
    )
    assert status == 200, payload
    labels = expected["classes"].numpy()
    scores = expected["scores"].numpy()
    assert len(payload["results"]) == len(features)
    for result, row_labels, row_scores in zip(payload["results"], labels, scores, strict=True):
        assert [pair[0] for pair in result] == [label.decode() for label in row_labels]
        np.testing.assert_allclose([pair[1] for pair in result], row_scores, rtol=1e-6)


def test_regress_and_predict_match_in_process(estimator):
    server, loaded, features, version = estimator
    serialized = [_example(f) for f in features]
    expected = loaded.signatures["regression"](inputs=tf.constant(serialized))["outputs"].numpy()
    status, payload = server.json(
        "POST", "/v1/models/taxi:regress", {"signature_name": "regression", "examples": features}
    )
    assert status == 200, payload
    np.testing.assert_allclose(payload["results"], expected.reshape(-1), rtol=1e-6)

    predicted = loaded.signatures["predict"](examples=tf.constant(serialized))
    status, payload = server.json(
        "POST",
        f"/v1/models/taxi/versions/{version}:predict",
        {
            "signature_name": "predict",
            "instances": [{"b64": base64.b64encode(s).decode()} for s in serialized],
        },
    )
    assert status == 200, payload
    rows = payload["predictions"]
    np.testing.assert_allclose(
        [row["probabilities"] for row in rows], predicted["probabilities"].numpy(), rtol=1e-6
    )
    assert [row["class_ids"] for row in rows] == predicted["class_ids"].numpy().tolist()
