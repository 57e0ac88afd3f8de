#!/opt/venv/bin/python
"""The image's HEALTHCHECK: is tfx-model-server alive (liveness, not readiness)?

GET /healthz on the REST port; with REST off (--rest_api_port=0), any answer from gRPC's
grpc.health.v1.Health (SERVING or NOT_SERVING) counts. The port and scheme come from the
server's own command line (the last --rest_api_port / --port / --ssl_config_file given to the
entry point), so flags passed to the container move the check with them.
$TFX_SERVING_HEALTHCHECK_URL overrides all of that. Exit 0 = healthy, 1 = not.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import urllib.request

TIMEOUT_SECONDS = 4.0


def server_flags() -> dict[str, str]:
    """``--name=value`` / ``--name value`` flags of the running server's command line."""
    flags: dict[str, str] = {}
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any("tfx-model-server" in a or a == "serving" for a in argv):
            continue
        for i, arg in enumerate(argv):
            if not arg.startswith("--"):
                continue
            name, sep, value = arg[2:].partition("=")
            if not sep and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
            flags[name] = value
        break
    return flags


def check_rest(url: str) -> bool:
    context = None
    if url.startswith("https:"):
        # Loopback liveness probe: the server's certificate is for its public name.
        context = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:
            return response.status == 200
    except Exception as exc:  # any failure means unhealthy
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return False


def check_grpc(port: int, tls: bool) -> bool:
    target = f"127.0.0.1:{port}"
    if tls:
        # Without a client certificate a TLS handshake may be refused: an open port will do.
        try:
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS).close()
            return True
        except OSError as exc:
            print(f"healthcheck: {target}: {exc}", file=sys.stderr)
            return False
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_SECONDS)
        return True
    except grpc.RpcError as exc:
        # An answer, even NOT_SERVING or UNAUTHENTICATED, proves the process is alive.
        alive = exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        if not alive:
            print(f"healthcheck: gRPC {target}: {exc.code().name}", file=sys.stderr)
        return alive
    finally:
        channel.close()


def main() -> int:
    url = os.environ.get("TFX_SERVING_HEALTHCHECK_URL")
    if url:
        return 0 if check_rest(url) else 1
    flags = server_flags()
    tls = bool(flags.get("ssl_config_file"))
    rest_port = int(flags.get("rest_api_port") or 8501)
    if rest_port:
        scheme = "https" if tls else "http"
        return 0 if check_rest(f"{scheme}://127.0.0.1:{rest_port}/healthz") else 1
    grpc_port = int(flags.get("port") or 8500)
    return 0 if check_grpc(grpc_port, tls) else 1


if __name__ == "__main__":
    sys.exit(main())
