"""A steady, light REST load that records every request's outcome with its time.

    python -m benchmarks.paced_load URL BODY --rate 200 --clients 4

benchmarks.frontends' restart part runs it (on the load generator's CPU) while it kills a front
end, and needs what wrk does not give: each failure with the moment it happened (on
``CLOCK_MONOTONIC``, which every process of the machine shares, so it lines up with the kill),
and a fixed pace that leaves the CPUs to the front end being restarted. Each request goes on a
new connection, so the kernel spreads each one over the front ends listening at that moment
(``SO_REUSEPORT`` picks a listener per new connection): a kill catches what is in flight on the
dead front end and what its listening socket had queued, every time. A keep-alive client's
connections would stay on the front ends they were first opened to.

Prints ``ready`` once the first answer came back, then runs until SIGTERM and prints one JSON
line: ``{"requests": [[start, end, error or null], ...]}`` (times from ``time.monotonic()``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT_S = 10.0


def one_request(host: str, port: int, path: str, body: bytes) -> str | None:
    """None if answered 200, else what went wrong (an HTTP status or the exception)."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return None if response.status == 200 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    finally:
        connection.close()


PHASES = ("before the kill", "in flight at the kill", "sent before serving", "sent after")


def phases(requests: list[list], killed: float, serving: float) -> dict:
    """Requests and failures by where they fell around a restart: answered before the kill;
    in flight at the kill (sent before it, answered after: those on the killed front end or
    queued on its listening socket are lost with it); sent between the kill and the
    replacement serving (only the other front ends listen); sent after. Each failure's error
    and time after the kill are kept, the last failure's time after the kill, and the slowest
    answer. A SIGKILLed process takes some milliseconds to go: a connection made meanwhile
    still reaches its listening socket, so a request sent just after the kill can fail too."""
    summary = {name: {"requests": 0, "failed": 0} for name in PHASES}
    failures, errors, slowest = [], {}, 0.0
    for start, end, error in requests:
        if end < killed:
            phase = PHASES[0]
        elif start < killed:
            phase = PHASES[1]
        elif start < serving:
            phase = PHASES[2]
        else:
            phase = PHASES[3]
        summary[phase]["requests"] += 1
        if error is None:
            slowest = max(slowest, end - start)
            continue
        summary[phase]["failed"] += 1
        failures.append({"phase": phase, "ms_after_kill": (end - killed) * 1000, "error": error})
        kind = error.split(":", 1)[0]
        errors[kind] = errors.get(kind, 0) + 1
    return {
        "requests": len(requests),
        "phases": summary,
        "errors": errors,
        "failures": failures,
        "last_failure_ms": max((f["ms_after_kill"] for f in failures), default=None),
        "slowest_ms": slowest * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("body", help="file holding the request body (JSON)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s, all clients")
    parser.add_argument("--clients", type=int, default=4, help="threads, one request each")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    body = Path(args.body).read_bytes()
    stop = threading.Event()
    answered = threading.Event()
    records: list[list] = []  # list.append is atomic: no lock needed
    interval = args.clients / args.rate

    def client() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            start = time.monotonic()
            error = one_request(url.hostname, url.port, url.path, body)
            records.append([start, time.monotonic(), error])
            answered.set()
            next_at = max(next_at + interval, time.monotonic())  # late: no burst to catch up
            stop.wait(next_at - time.monotonic())

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    while not answered.wait(0.1):
        if stop.is_set():
            break
    print("ready", flush=True)
    stop.wait()
    for thread in threads:
        thread.join(TIMEOUT_S + 1)
    print(json.dumps({"requests": sorted(records)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
