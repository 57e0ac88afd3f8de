"""Custom op libraries: TF Text ops work out of the box when tensorflow-text is installed (it
is, through the dev lock), ``--custom_op_libraries`` loads more, and a model needing an op
nobody registered fails its load with a message naming the op and both ways to add it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow_text

from tests.support.models import write_tf_text_word_count, write_unregistered_op_model
from tests.support.server_process import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.integration

UNKNOWN_OP = "TfxServingTestUnregisteredOp"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_ops")
    write_tf_text_word_count(str(root / "words" / "1"))
    write_unregistered_op_model(str(root / "unknown" / "1"), UNKNOWN_OP)
    (root / "models.config").write_text(
        "model_config_list {\n"
        f'config {{ name: "words" base_path: "{root / "words"}" model_platform: "tensorflow" }}\n'
        f'config {{ name: "unknown" base_path: "{root / "unknown"}" '
        'model_platform: "tensorflow" }\n'
        "}\n"
    )
    return root


def _whitespace_ops_library() -> str:
    ops = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
    return os.path.join(ops, "_whitespace_tokenizer_v2.so")


def test_tf_text_model_serves_and_missing_ops_are_explained(store):
    args = [
        f"--model_config_file={store / 'models.config'}",
        "--max_num_load_retries=0",
        f"--custom_op_libraries={_whitespace_ops_library()}",  # loading it again is harmless
    ]
    with ServerProcess(args) as server:
        server.wait_for(lambda: server.available_versions("words") == [1])
        status, body = server.json(
            "POST", "/v1/models/words:predict", {"instances": ["a b c", "hello", ""]}
        )
        assert (status, body) == (200, {"predictions": [3, 1, 0]})

        def failed_status():
            _, body = server.json("GET", "/v1/models/unknown")
            versions = body.get("model_version_status", [])
            return versions[0] if versions and versions[0]["state"] == "END" else None

        version = server.wait_for(failed_status)
        assert "Op libraries loaded: tensorflow_text" in server.log()
    message = version["status"]["error_message"]
    assert f"The model uses op '{UNKNOWN_OP}'" in message
    assert "pip install 'tfx-serving-suite[text]'" in message
    assert "--custom_op_libraries=" in message
    assert version["status"]["error_code"] == "NOT_FOUND"


def test_unloadable_library_stops_the_server_with_a_clear_error(store):
    server = ServerProcess(
        [f"--model_config_file={store / 'models.config'}", "--custom_op_libraries=no_such_ops"]
    )
    with pytest.raises(RuntimeError) as exited:
        server.start()
    assert "server exited with 2" in str(exited.value)
    assert "--custom_op_libraries: cannot import Python module 'no_such_ops'" in server.log()


def test_a_shared_object_library_registers_the_ops_a_model_needs(store):
    """In a fresh process without tensorflow_text: the model fails to load until the one
    ``.so`` holding its kernel is loaded as ``--custom_op_libraries`` would."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from serving.errors import ServingError
        from serving.servables.op_libraries import load_op_library
        from serving.servables.saved_model import LoadOptions, load_saved_model

        path = {str(store / "words" / "1")!r}
        try:
            load_saved_model(path, LoadOptions())
            sys.exit("loaded without the op library")
        except ServingError as error:
            print("BEFORE:", error.message.splitlines()[0][:80])
        load_op_library({_whitespace_ops_library()!r})
        servable = load_saved_model(path, LoadOptions())
        signature = servable.signatures["serving_default"]
        text = np.array([b"one two", b"x"], dtype=object)
        print("AFTER:", servable.run(signature, {{"text": text}}, ["words"])["words"].tolist())
        assert "tensorflow_text" not in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BEFORE: The model uses op 'TFText>WhitespaceTokenizeWithOffsetsV2'" in result.stdout
    assert "AFTER: [2, 1]" in result.stdout
