"""End-to-end demo on embedded defaults: model -> local store -> tfx-model-server -> REST call.

Trains a tiny Keras regressor on synthetic data, publishes it atomically as a timestamped
version under ./demo-store/demo/, starts the model server on free loopback ports, sends one
TF-Serving REST predict request, prints the answer next to in-process Keras, and stops the
server with SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "demo-store"
MODEL_NAME = "demo"


def step(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def build_model(base: Path) -> tuple[Path, list[list[float]], list[list[float]]]:
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    features = rng.normal(size=(512, 4)).astype("float32")
    target = features @ np.array([[1.5], [-2.0], [0.5], [3.0]], "float32") + 0.25
    inputs = keras.Input(shape=(4,), name="features")
    outputs = keras.layers.Dense(1, name="price")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    model.fit(features, target, epochs=30, batch_size=64, verbose=0)

    version = int(time.time())
    staging = base / f".incoming-{version}"
    model.export(str(staging), verbose=False)
    final = base / str(version)
    os.replace(staging, final)  # atomic publish: the server never sees a half-written version
    sample = features[:3]
    return final, sample.tolist(), model.predict(sample, verbose=0).tolist()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    base = STORE / MODEL_NAME
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    step("training a tiny Keras model and exporting it to the store")
    started = time.perf_counter()
    version_dir, sample, expected = build_model(base)
    step(f"published {version_dir.relative_to(REPO)} in {time.perf_counter() - started:.1f} s")

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "serving",
        "--host=127.0.0.1",
        "--port=0",
        f"--rest_api_port={port}",
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={base}",
    ]
    step("starting: tfx-model-server " + " ".join(command[3:]))
    server = subprocess.Popen(command, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    status = json.load(response)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    step("the server did not come up; see its log above")
                    return 1
                time.sleep(0.2)
        step(f"GET {url} -> {json.dumps(status)}")
        body = json.dumps({"instances": sample}).encode()
        request = urllib.request.Request(url + ":predict", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        step(f"POST {url}:predict {body.decode()}")
        step(f"  -> {json.dumps(answer)}")
        step(f"in-process Keras predicts {[[round(v, 5) for v in row] for row in expected]}")
        served = [row[0] for row in answer["predictions"]]
        if max(abs(a - b[0]) for a, b in zip(served, expected, strict=True)) > 1e-4:
            step("MISMATCH between the server and in-process Keras")
            return 1
        step("server and in-process Keras agree")
        return 0
    finally:
        server.terminate()
        code = server.wait(60)
        step(f"server stopped with exit code {code}")


if __name__ == "__main__":
    sys.exit(main())
