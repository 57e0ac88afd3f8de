"""The main job end to end, on embedded defaults.

1. Runs the example TFX pipeline (CsvExampleGen -> Trainer -> Exporter -> InfraValidator ->
   Pusher) on LocalDagRunner with embedded SQLite MLMD, pushing a timestamped version into
   ./demo-workdir/models/demo.
2. Starts tfx-model-server on that store (free loopback ports).
3. Sends one REST and one gRPC predict request for the same rows and prints both answers.
4. Stops the server with SIGTERM and prints the served version's lineage from MLMD: the
   pipeline run, trainer, examples, blessings and push behind it, and the server's load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "demo"
# The server's interpreter: scripts/demo.sh passes the current serving stack's (.venv-serving);
# the pipeline, the lineage CLI and the server's MLMD worker stay on this (TFX) one.
SERVER_PYTHON = os.environ.get("TFX_SERVING_SERVER_PYTHON") or sys.executable
ROWS = [{"x1": -0.705, "x2": -1.397}, {"x1": 0.144, "x2": -0.537}]


def step(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_pipeline(workdir: Path, train_steps: int) -> Path:
    step(f"running the TFX pipeline on LocalDagRunner (workdir {workdir.relative_to(REPO)})")
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.serving_demo",
            "run",
            "--workdir",
            str(workdir),
            "--train_steps",
            str(train_steps),
        ],
        cwd=REPO,
        check=True,
    )
    step(f"pipeline done in {time.perf_counter() - started:.0f} s")
    return workdir / "models" / MODEL_NAME


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("[demo] the server did not come up; see its log above") from None
            time.sleep(0.2)


def rest_predict(port: int) -> list:
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
    body = json.dumps({"instances": [{k: [v] for k, v in row.items()} for row in ROWS]})
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    step(f"REST  POST {url}")
    step(f"      {body}")
    step(f"   -> {json.dumps(answer)}")
    return [row[0] for row in answer["predictions"]]


def grpc_predict(port: int) -> list:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    for feature in ("x1", "x2"):
        values = [[row[feature]] for row in ROWS]
        request.inputs[feature].CopyFrom(tf.make_tensor_proto(values, dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=30)
    (output,) = response.outputs.values()
    values = tf.make_ndarray(output).reshape(-1).tolist()
    step(
        f"gRPC  PredictionService/Predict on 127.0.0.1:{port} (model version "
        f"{response.model_spec.version.value}, signature {response.model_spec.signature_name})"
    )
    step(f"   -> {[round(v, 6) for v in values]}")
    return values


def show_lineage(workdir: Path, version: int) -> None:
    command = [
        sys.executable,
        "-m",
        "serving.metadata.lineage",
        f"--metadata_connection=sqlite://{workdir / 'metadata.sqlite'}",
        "version",
        MODEL_NAME,
        str(version),
    ]
    step("lineage: tfx-serving-lineage " + " ".join(command[3:]))
    subprocess.run(command, cwd=REPO, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(REPO / "demo-workdir"))
    parser.add_argument("--train_steps", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    store = run_pipeline(workdir, args.train_steps)

    rest_port, grpc_port = free_port(), free_port()
    command = [
        SERVER_PYTHON,
        "-m",
        "serving",
        "--host=127.0.0.1",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={store}",
        # Report loads to the pipeline's MLMD (through a background worker, never inline).
        f"--metadata_connection=sqlite://{workdir / 'metadata.sqlite'}",
        f"--metadata_spool_dir={workdir / 'spool'}",
    ]
    step("starting: tfx-model-server " + " ".join(command[3:]))
    server = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, "TFX_SERVING_METADATA_PYTHON": sys.executable}
    )
    try:
        status = wait_until_serving(f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}", server)
        step(f"model status: {json.dumps(status)}")
        version = int(status["model_version_status"][0]["version"])
        over_rest = rest_predict(rest_port)
        over_grpc = grpc_predict(grpc_port)
        if max(abs(a - b) for a, b in zip(over_rest, over_grpc, strict=True)) > 1e-6:
            step("MISMATCH between the REST and gRPC answers")
            return 1
        step("REST and gRPC agree")
    finally:
        server.terminate()
        step(f"server stopped with exit code {server.wait(60)}")
    show_lineage(workdir, version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
