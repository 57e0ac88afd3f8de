"""The main job end to end, on embedded defaults.

1. Runs the example TFX pipeline (CsvExampleGen -> Trainer -> Exporter -> InfraValidator ->
   Pusher) on LocalDagRunner with embedded SQLite MLMD, pushing a timestamped version into
   ./demo-workdir/models/demo. The terminal shows one line per component (state, time, what
   it did); TFX's, Beam's and TensorFlow's logs go to demo-workdir/logs/pipeline.log
   (``--verbose`` streams them too), and a failing step shows its error and the log's tail.
2. Starts tfx-model-server on that store (free loopback ports; log in logs/server.log) — on the
   current serving stack when scripts/demo.sh runs it (docs/stacks.md).
3. Sends the same rows as REST and gRPC Predict and Classify requests and prints the answers.
4. Stops the server with SIGTERM and prints the served version's lineage from MLMD (the
   pipeline run, trainer, examples, blessings and push behind it, and the server's load),
   and draws it into demo-workdir/lineage.svg.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's packages, whatever is installed

from pipelines import local_run, quiet  # noqa: E402

MODEL_NAME = "demo"
# The server's interpreter: scripts/demo.sh passes the current serving stack's (.venv-serving);
# the pipeline, the lineage CLI and the server's MLMD worker stay on this (TFX) one.
SERVER_PYTHON = os.environ.get("TFX_SERVING_SERVER_PYTHON") or sys.executable
ROWS = [{"x1": -0.705, "x2": -1.397}, {"x1": 0.144, "x2": -0.537}]
SERVER_LOG_TAIL_LINES = 20


def shown(path: Path | str) -> str:
    """A path as short as it can be written from here."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: Path, workdir: Path, rest_port: int, grpc_port: int) -> subprocess.Popen:
    """tfx-model-server on the demo's store, reporting its loads to the pipeline's MLMD
    (through a background worker, never inline). Output is read by the caller."""
    command = [
        SERVER_PYTHON,
        "-m",
        "serving",
        "--host=127.0.0.1",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={store}",
        f"--metadata_connection=sqlite://{workdir / 'metadata.sqlite'}",
        f"--metadata_spool_dir={workdir / 'spool'}",
    ]
    return subprocess.Popen(
        command,
        cwd=REPO,
        # The MLMD worker runs on this (TFX stack) interpreter, which has ml-metadata.
        env={**os.environ, "TFX_SERVING_METADATA_PYTHON": sys.executable},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def copy_output(server: subprocess.Popen, log: TextIO, echo: bool) -> threading.Thread:
    """Writes the server's output to its log file (and the terminal with ``--verbose``)."""

    def pump() -> None:
        assert server.stdout is not None
        for raw in server.stdout:
            line = raw.decode("utf-8", "replace")
            log.write(line)
            log.flush()
            if echo and not quiet.is_noise(line):
                sys.stdout.write(line)
                sys.stdout.flush()

    thread = threading.Thread(target=pump, name="server-log", daemon=True)
    thread.start()
    return thread


def wait_until_serving(port: int, server: subprocess.Popen, timeout: float = 180) -> dict:
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with code {server.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{MODEL_NAME} was not served within {timeout} s") from None
            time.sleep(0.2)


def rest(port: int, verb: str, body: dict) -> dict:
    path = f"/v1/models/{MODEL_NAME}:{verb}"
    data = json.dumps(body)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    print(f"REST  POST {path}  {data}")
    print(f"   -> {json.dumps(answer)}")
    return answer


def grpc_answers(port: int) -> tuple[list[float], list[list[tuple[str, float]]]]:
    """gRPC Predict (typed tensors) and Classify (tf.Examples) for the same rows."""
    import grpc

    with quiet.native_stderr_filtered():  # TF's import-time C++ notices, see pipelines/quiet
        import tensorflow as tf
        from tensorflow_serving.apis import (
            classification_pb2,
            predict_pb2,
            prediction_service_pb2_grpc,
        )

    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL_NAME
    for feature in ("x1", "x2"):
        values = [[row[feature]] for row in ROWS]
        predict.inputs[feature].CopyFrom(tf.make_tensor_proto(values, dtype=tf.float32))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL_NAME
    classify.model_spec.signature_name = "classification"
    for row in ROWS:
        example = classify.input.example_list.examples.add()
        for feature, value in row.items():
            example.features.feature[feature].float_list.value.append(value)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        predicted = stub.Predict(predict, timeout=30)
        classified = stub.Classify(classify, timeout=30)
    (output,) = predicted.outputs.values()
    scores = tf.make_ndarray(output).reshape(-1).tolist()
    classes = [
        [(c.label, c.score) for c in row.classes] for row in classified.result.classifications
    ]
    print(f"gRPC  PredictionService/Predict   -> {[round(v, 6) for v in scores]}")
    print(
        "gRPC  PredictionService/Classify  -> "
        + str([[(label, round(score, 6)) for label, score in row] for row in classes])
    )
    return scores, classes


def query_server(rest_port: int, grpc_port: int) -> bool:
    """Both APIs, both protocols; True when REST and gRPC give the same answers."""
    rest_scores = [
        row[0]
        for row in rest(
            rest_port, "predict", {"instances": [{k: [v] for k, v in r.items()} for r in ROWS]}
        )["predictions"]
    ]
    rest_classes = rest(
        rest_port, "classify", {"signature_name": "classification", "examples": ROWS}
    )["results"]
    grpc_scores, grpc_classes = grpc_answers(grpc_port)
    same = max(abs(a - b) for a, b in zip(rest_scores, grpc_scores, strict=True)) < 1e-6 and all(
        [label for label, _ in a] == [label for label, _ in b]
        and max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) < 1e-6
        for a, b in zip(rest_classes, grpc_classes, strict=True)
    )
    print("REST and gRPC agree." if same else "MISMATCH between the REST and gRPC answers!")
    return same


def serve_and_query(workdir: Path, store: Path, version: str, verbose: bool) -> bool:
    log_path = workdir / "logs" / "server.log"
    rest_port, grpc_port = free_port(), free_port()
    with open(log_path, "w", encoding="utf-8") as log:
        server = start_server(store, workdir, rest_port, grpc_port)
        pump = copy_output(server, log, verbose)
        try:
            wait_until_serving(rest_port, server)
            print(
                f"Serving {MODEL_NAME} version {version}: REST 127.0.0.1:{rest_port}, gRPC "
                f"127.0.0.1:{grpc_port} (log: {shown(log_path)})"
            )
            agreed = query_server(rest_port, grpc_port)
        except Exception as exc:  # reported below, with the server's log tail
            print(f"The server step failed: {type(exc).__name__}: {exc}")
            agreed = False
        finally:
            server.terminate()
            code = server.wait(60)
            pump.join(10)
        print(f"Server stopped (exit code {code}).")
    if not agreed or code != 0:
        tail = local_run.log_tail(str(log_path), SERVER_LOG_TAIL_LINES)
        print(f"Last {len(tail)} lines of {shown(log_path)}:")
        print("\n".join(f"  | {line}" for line in tail))
        return False
    return True


def show_lineage(workdir: Path, version: str) -> None:
    from serving.metadata import lineage

    argv = [
        f"--metadata_connection=sqlite://{workdir / 'metadata.sqlite'}",
        "version",
        MODEL_NAME,
        version,
        "--graph",
        shown(workdir / "lineage.svg"),
    ]
    print(f"Lineage: tfx-serving-lineage {' '.join(argv)}")
    sys.stdout.flush()
    lineage.main(argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(REPO / "demo-workdir"))
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--verbose", action="store_true", help="stream the full logs as well")
    args = parser.parse_args()
    quiet.silence_python_warnings()
    workdir = Path(args.workdir).resolve()
    outcome = local_run.watch(
        local_run.demo_pipeline_command(str(workdir), args.train_steps),
        log_path=local_run.pipeline_log_path(str(workdir)),
        title=f"TFX pipeline in {shown(workdir)} (log: {shown(workdir / 'logs')}/pipeline.log)",
        verbose=args.verbose,
    )
    if not outcome.ok:
        local_run.print_failure(outcome)
        return 1
    push = outcome.result.get("push", {})
    if not push.get("pushed"):
        print("No version was pushed: the InfraValidator and Pusher lines above say why.")
        return 1
    store = Path(outcome.result["store"])
    if not serve_and_query(workdir, store, push["version"], args.verbose):
        return 1
    show_lineage(workdir, push["version"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
