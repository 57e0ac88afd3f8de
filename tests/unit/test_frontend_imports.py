"""The request path imports without TensorFlow (issue 14: front-end processes never load TF).

A front-end process only parses, checks and encodes requests: it imports the codecs, the REST
app, the gRPC services and the TF-free API messages (``serving.protos``), never TensorFlow or
the TF Serving pip package (whose ``*_pb2`` modules import TensorFlow). Each check runs in a
fresh interpreter whose import system refuses those packages outright, so an import anywhere on
the path -- module level, a re-export, a package ``__init__`` -- fails the test with the module
that asked for it, rather than passing because something happened to be cached.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BLOCKED = ("tensorflow", "tensorflow_serving", "tf_keras", "keras")

FRONTEND_MODULES = (
    "serving.protos",
    "serving.tensor_types",
    "serving.tensor_codec",
    "serving.rest.json_tensors",
    "serving.rest.json_examples",
    "serving.rest.app",
    "serving.grpc_api",
    "serving.grpc_api.server",
    "serving.grpc_api.prediction_service",
    "serving.grpc_api.model_service",
    "serving.grpc_api.health",
    "serving.grpc_api.profiler",
    "serving.api.model_info",
    "serving.api.types",
    "serving.core.model_spec",
    "serving.config_file",
    "serving.ipc.channel",
    "serving.ipc.tensors",
    "serving.rest.uvicorn_server",
    "serving.frontend_setup",
    # The processes of --frontend_processes that must stay small: the front end and the
    # supervisor (only the model process loads TensorFlow).
    "serving.multiproc.frontend",
    "serving.multiproc.remote",
    "serving.multiproc.supervisor",
)

_BLOCKING_IMPORT = textwrap.dedent(
    """
    import importlib, sys

    BLOCKED = {blocked!r}

    class RefuseTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"front ends must not import {{name}}")
            return None

    sys.meta_path.insert(0, RefuseTensorFlow())
    importlib.import_module({module!r})
    {extra}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok")
    """
)


def _run_blocked(module: str, extra: str = "") -> subprocess.CompletedProcess:
    code = _BLOCKING_IMPORT.format(blocked=BLOCKED, module=module, extra=extra)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("module", FRONTEND_MODULES)
def test_frontend_module_imports_without_tensorflow(module):
    result = _run_blocked(module)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_frontend_builds_its_services_and_codes_tensors_without_tensorflow():
    """Past importing: the REST app and the gRPC server (every service, the profiler's too)
    are built, a config file parsed, and a request tensor decoded and re-encoded from its
    wire bytes, all with TensorFlow refused."""
    extra = textwrap.dedent(
        """
        import asyncio, tempfile
        import numpy as np
        from serving import protos, tensor_codec
        from serving.config_file import read_model_config
        from serving.grpc_api.server import build_grpc_server
        from serving.options import ServerOptions
        from serving.rest.app import RestApi, RestOptions

        class NoCore:
            pass

        class NoService:
            core = NoCore()
            metrics = None

        async def build():
            options = ServerOptions(port=0, rest_api_port=0, enable_profiler=True)
            build_grpc_server(NoService(), options)
            RestApi(NoService(), RestOptions())

        asyncio.run(build())
        with tempfile.NamedTemporaryFile("w", suffix=".config") as handle:
            handle.write('model_config_list { config { name: "m" base_path: "/m" } }')
            handle.flush()
            assert read_model_config(handle.name).model_config_list.config[0].name == "m"
        request = protos.PredictRequest()
        tensor_codec.encode(np.arange(6, dtype=np.float32).reshape(2, 3), out=request.inputs["x"])
        parsed = protos.PredictRequest.FromString(request.SerializeToString())
        decoded = tensor_codec.decode(parsed.inputs["x"], "x")
        assert decoded.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], decoded
        """
    )
    result = _run_blocked("serving.grpc_api.server", extra)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_guard_refuses_tensorflow():
    """The blocking import is what makes the tests above able to fail."""
    result = _run_blocked("tensorflow_serving.apis.predict_pb2")
    assert result.returncode != 0
    assert "front ends must not import tensorflow" in result.stderr


MODEL_PROCESS_ONLY = (
    "serving.api.inference",
    "serving.core.server_core",
    "serving.core.model_manager",
    "serving.batching",
    "serving.storage",
    "serving.metadata",
    "serving.monitoring",
    "prometheus_client",
)


def test_front_end_process_leaves_the_core_and_the_metrics_registry_to_the_model_process():
    """A front end talks to a ``Dataplane``: importing the core, the batching, the stores or
    the metrics registry would only add start-up time and memory to every front end."""
    extra = textwrap.dedent(
        f"""
        owned = {MODEL_PROCESS_ONLY!r}
        found = sorted(
            m for m in sys.modules if any(m == o or m.startswith(o + ".") for o in owned)
        )
        assert not found, f"a front end imported model-process modules: {{found}}"
        """
    )
    result = _run_blocked("serving.multiproc.frontend", extra)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
