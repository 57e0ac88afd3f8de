"""Poll cost and push-to-AVAILABLE time for gs:// and s3:// model stores vs. a local directory.

``.venv/bin/python -m benchmarks.object_store [--pushes 5] [--out benchmarks/results/object-store]``

For each store -- a local directory (the baseline: atomic-rename publish, file-system polling),
fake-gcs-server (GCS JSON API) and moto (S3), both on loopback -- a real ``tfx-model-server``
polls the store every second (TF Serving's default), and the Pusher's publish path
(:class:`ModelStore` / :class:`BucketModelStore`) pushes new versions of two models: a tiny
TF1 graph and a ~32 MiB Keras Dense layer. Measured per push: the publish call (upload, read
back, marker), then the time from the publish returning to the version being AVAILABLE (one
poll interval at most, plus download into the cache, load and warm-up), read from the server's
status API every 20 ms. Poll cost is counted at the emulator (its access log) and by the
server's ``:tfx_serving:storage:*`` metrics over idle polls. Emulators on loopback have no
network latency: on a real bucket add a round trip per request.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from components.bucket_store import BucketModelStore
from components.manifest import build_manifest
from components.model_store import ModelStore
from tests.support.emulators import apply_env, start_emulator
from tests.support.models import write_half_plus_two, write_keras_dense
from tests.support.server_process import ServerProcess

POLL_SECONDS = 1


def _states(server: ServerProcess, model: str) -> dict[int, str]:
    status, payload = server.json("GET", f"/v1/models/{model}")
    if status != 200:
        return {}
    return {int(v["version"]): v["state"] for v in payload["model_version_status"]}


def _wait_available(server: ServerProcess, model: str, version: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _states(server, model).get(version) == "AVAILABLE":
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"{model} version {version} not AVAILABLE:\n{server.log()[-3000:]}")


def _metric(server: ServerProcess, name: str, model: str) -> float:
    _, body = server.request("GET", "/monitoring/prometheus/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(f":tfx_serving:storage:{name}{{") and f'model_name="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _size_mib(path: str) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / (1 << 20)


def measure(store_kind: str, base: str, source: str, pushes: int, workdir: Path, emulator):
    monitoring = workdir / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    store = ModelStore(base) if store_kind == "local" else BucketModelStore(base)
    manifest = build_manifest(source)
    first = store.publish(source, manifest).version
    args = [
        "--model_name=m",
        f"--model_base_path={base}",
        f"--model_cache_dir={workdir / 'cache'}",
        f"--file_system_poll_wait_seconds={POLL_SECONDS}",
        f"--monitoring_config_file={monitoring}",
        "--rest_api_num_threads=2",
    ]
    rows = []
    server = ServerProcess(args)
    try:
        server.start(timeout=600)  # TF's import alone takes minutes on a busy machine
        _wait_available(server, "m", first)
        for _ in range(pushes):
            started = time.monotonic()
            version = store.publish(source, manifest).version
            published = time.monotonic()
            available = _wait_available(server, "m", version)
            rows.append((published - started, available - published))
            # The next push starts with one version loaded (the replaced one has unloaded).
            server.wait_for(
                lambda v=version: all(
                    state == "END" for k, state in _states(server, "m").items() if k != v
                )
            )
        poll_cost = None
        if emulator is not None:
            polls0 = _metric(server, "polls", "m")
            log0 = len(emulator.request_lines())
            time.sleep(10 * POLL_SECONDS + 0.5)
            polls = _metric(server, "polls", "m") - polls0
            requests = len(emulator.request_lines()) - log0
            poll_cost = {
                "polls": polls,
                "emulator_requests": requests,
                "last_poll_requests_metric": _metric(server, "last_poll_requests", "m"),
            }
    finally:
        server.__exit__(None, None, None)
    return rows, poll_cost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/object-store")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workroot = Path(tempfile.mkdtemp(prefix="object-store-bench-"))
    models = {
        "tiny TF1 graph": write_half_plus_two(str(workroot / "models" / "tiny")),
        "Keras Dense 2048x4096": write_keras_dense(
            str(workroot / "models" / "dense"), units=2048, features=4096
        ),
    }
    emulators = {s: start_emulator(s, workroot / f"{s}-emulator") for s in ("gs", "s3")}
    for emulator in emulators.values():
        apply_env(emulator)
    results = []
    try:
        for model_name, source in models.items():
            for kind in ("local", "gs", "s3"):
                run = uuid.uuid4().hex[:8]
                workdir = workroot / f"{kind}-{run}"
                workdir.mkdir()
                base = (
                    str(workdir / "store" / "m")
                    if kind == "local"
                    else emulators[kind].uri(f"bench-{run}", "m")
                )
                load = os.getloadavg()[0]
                rows, poll_cost = measure(
                    kind, base, source, args.pushes, workdir, emulators.get(kind)
                )
                results.append(
                    {
                        "model": model_name,
                        "size_mib": round(_size_mib(source), 2),
                        "store": kind,
                        "push_seconds": [round(r[0], 3) for r in rows],
                        "push_to_available_seconds": [round(r[1], 3) for r in rows],
                        "poll_cost": poll_cost,
                        "load_average_before": round(load, 2),
                    }
                )
                print(json.dumps(results[-1]), flush=True)
    finally:
        for emulator in emulators.values():
            emulator.stop()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(report(results, args.pushes))
    print(report(results, args.pushes))
    return 0


def report(results: list[dict], pushes: int) -> str:
    lines = [
        "# Object-store model stores: poll cost and push to AVAILABLE",
        "",
        f"`python -m benchmarks.object_store --pushes {pushes}`; medians over the pushes, "
        f"server polling every {POLL_SECONDS} s, emulators on loopback (no network latency), "
        "2 shared cores (load average before each row in the last column).",
        "",
        "| model | MiB | store | publish s | publish→AVAILABLE s (median / max) | vs local |"
        " requests per idle poll (emulator / metric) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baseline = {}
    for row in results:
        median = statistics.median(row["push_to_available_seconds"])
        if row["store"] == "local":
            baseline[row["model"]] = median
        ratio = median / baseline[row["model"]] if baseline.get(row["model"]) else float("nan")
        cost = row["poll_cost"]
        per_poll = (
            f"{cost['emulator_requests'] / cost['polls']:.2f} / "
            f"{cost['last_poll_requests_metric']:.0f}"
            if cost and cost["polls"]
            else "— (local file system)"
        )
        lines.append(
            f"| {row['model']} | {row['size_mib']} | {row['store']} "
            f"| {statistics.median(row['push_seconds']):.2f} "
            f"| {median:.2f} / {max(row['push_to_available_seconds']):.2f} "
            f"| {ratio:.2f}x | {per_poll} | {row['load_average_before']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
