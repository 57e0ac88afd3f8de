#!/usr/bin/env bash
# The project's test command: lint, then every test on the TFX 1.16 stack (.venv, Python 3.10),
# then the serving test suite again on the current serving stack (.venv-serving, Python 3.12,
# TensorFlow 2.21) — the stack the serving image ships (docs/stacks.md) — then the request-path
# tests once more on the current stack with one front-end process.
#
#   scripts/test.sh [pytest arguments]      e.g. scripts/test.sh -m "not integration" -x
#
# Pytest arguments go to every run. TEST_STACKS picks the runs (default "tfx serving frontends1"),
# e.g. TEST_STACKS=tfx scripts/test.sh tests/components/test_pusher_executor.py. The serving run
# always selects SERVING_SUITE below: what imports neither tfx nor ml-metadata. Tests that need
# TFX (components, pipelines) and the container and Kubernetes tests run once, on the TFX stack;
# the cross-stack tests among them start servers on the current stack too. The bucket serving
# tests run once, on the current stack. Test servers (tests/support/server_process.py) run in
# one process on the TFX stack, with two front-end processes around a model process in the
# serving run, and with one in the frontends1 run (FRONTENDS1_SUITE below): the request path is
# tested with --frontend_processes=0, 2 and 1. With two CPUs or more, the TFX stack's run goes
# alongside the other two (TEST_CONCURRENT=0 runs them one after another; see below).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVING_SUITE=(
  tests/unit
  tests/integration
  tests/metadata/test_feedback.py
  tests/metadata/test_metadata_routes.py
  tests/metadata/test_worker_python.py
  # The object stores as the server and the model_store CLI (rollback/retention on serving
  # hosts, in the image too) use them; the bucket pipeline tests need TFX: TFX stack only.
  tests/storage/test_object_store.py
  tests/storage/test_bucket_source.py
  tests/storage/test_bucket_serving.py
  tests/storage/test_bucket_store.py
)
# The frontends1 run: the tests whose servers answer requests in ways the process model could
# change -- REST and gRPC semantics, batching (with one front end, all concurrent calls meet in
# the process that coalesces them), hot swap and the version lifecycle, TLS and tokens, config
# reload and labels, overload and the REST connection cap (one front end holds all of it), and
# the hostile-input and fuzz tests (limits, shared memory, odd tensors through the arenas; no
# other run has them with front ends). About 4 minutes. Left to the other two runs, to keep CI
# inside its time budget: the model formats and op libraries (TF Lite, TF Text, MultiInference,
# TFX's test models), the status page, clean stop and the TF-free client, whose front-end code
# runs the same with one front end as with two.
FRONTENDS1_SUITE=(
  tests/integration/test_rest_api.py
  tests/integration/test_grpc_api.py
  tests/integration/test_batching.py
  tests/integration/test_version_lifecycle.py
  tests/integration/test_security.py
  tests/integration/test_model_config.py
  tests/integration/test_overload.py
  tests/robustness
)
read -r -a stacks <<<"${TEST_STACKS:-tfx serving frontends1}"

scripts/bootstrap.sh tfx serving
# The metadata tests start a private MariaDB server and a private PostgreSQL cluster; install
# their Debian packages when we can (root). Without them those tests skip with instructions
# (and fail under CI).
# Likewise chromium for the status page test, and podman (and its base images) for the
# container image tests; without them those tests skip with instructions (and fail under CI).
if [[ "$(id -u)" == 0 ]]; then
  scripts/ensure_mariadb.sh
  scripts/ensure_postgres.sh
  # The status page test drives /status in a headless browser.
  scripts/ensure_chromium.sh
  # A failure here (e.g. no Debian mirror) must not stop the other tests; the container tests
  # report it themselves.
  scripts/ensure_podman.sh || echo "test.sh: scripts/ensure_podman.sh failed" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .

reports="$(mktemp -d)"
concurrent=""  # the TFX stack's run while it goes alongside the others: its process group
stop_concurrent() {
  if [[ -n "$concurrent" ]] && kill -0 "$concurrent" 2>/dev/null; then
    # SIGINT, as Ctrl-C would: pytest tears its fixtures down (the servers it started) and exits.
    kill -INT -- "-$concurrent" 2>/dev/null || true
    wait "$concurrent" 2>/dev/null || true
  fi
}
trap 'stop_concurrent; rm -rf "$reports"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs one stack's pytest; its exit status goes to $reports/<stack>.status.
run_stack() {
  local stack="$1" command
  shift
  case "$stack" in
    # The bucket serving tests (real servers against fake GCS and S3, ~2 minutes) run once, on
    # the serving stack that ships in the image.
    tfx) command=(.venv/bin/python -m pytest --ignore=tests/storage/test_bucket_serving.py "$@") ;;
    # The serving suite's servers run as two front-end processes around a model process here
    # (--frontend_processes=2; tests/support/server_process.py), the TFX stack's in one process.
    serving) command=(env TFX_SERVING_TEST_FRONTENDS=2 .venv-serving/bin/python -m pytest "${SERVING_SUITE[@]}" "$@") ;;
    # The request-path tests again with one front end (--frontend_processes=1), on the current
    # stack: its servers start faster than the TFX stack's.
    frontends1) command=(env TFX_SERVING_TEST_FRONTENDS=1 .venv-serving/bin/python -m pytest "${FRONTENDS1_SUITE[@]}" "$@") ;;
  esac
  echo "test.sh: the $stack stack: ${command[*]}" >&2
  local code=0
  "${command[@]}" --junitxml="$reports/$stack.xml" || code=$?
  # 5 = nothing collected: an error for the full run, expected when arguments select a subset.
  if ((code == 5 && $# > 0)); then code=0; fi
  echo "$code" >"$reports/$stack.status"
}

for stack in "${stacks[@]}"; do
  case "$stack" in
    tfx | serving | frontends1) ;;
    *) echo "test.sh: unknown stack $stack in TEST_STACKS (tfx, serving, frontends1)" >&2; exit 2 ;;
  esac
done
# The TFX stack's run (23 of the 36 minutes the three take one after another on a 2-core
# machine) goes alongside the other two when there is a second CPU: its tests spend much of
# their time waiting on servers, pipelines, databases and containers. On that machine the whole
# run took 26-28 minutes instead of 39. Its output is held in a file and printed when it ends, so
# the logs do not interleave. TEST_CONCURRENT=0 runs the stacks one after another.
if [[ "${TEST_CONCURRENT:-1}" != 0 && "$(nproc)" -ge 2 && ${#stacks[@]} -gt 1 && " ${stacks[*]} " == *" tfx "* ]]; then
  echo "test.sh: the tfx stack runs alongside the others; its log follows theirs" >&2
  # In its own process group (job control on), where SIGINT is not ignored as it is for a
  # script's background commands: stop_concurrent stops it and the servers its tests started.
  set -m
  run_stack tfx "$@" >"$reports/tfx.log" 2>&1 &
  concurrent=$!
  set +m
fi
for stack in "${stacks[@]}"; do
  if [[ -n "$concurrent" && "$stack" == tfx ]]; then continue; fi
  run_stack "$stack" "$@"
done
if [[ -n "$concurrent" ]]; then
  wait "$concurrent" || true
  concurrent=""
  cat "$reports/tfx.log"
fi
status=0
for stack in "${stacks[@]}"; do
  code="$(cat "$reports/$stack.status" 2>/dev/null || echo 1)"
  if ((code != 0)); then
    echo "test.sh: the $stack stack failed (pytest exit status $code)" >&2
    status=1
  fi
done

# One closing line for every run, from pytest's own JUnit reports.
.venv/bin/python - "$reports" <<'EOF'
import pathlib, sys
import xml.etree.ElementTree as ET

counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for report in sorted(pathlib.Path(sys.argv[1]).glob("*.xml")):
    for suite in ET.parse(report).getroot().iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
failed = counts["failures"] + counts["errors"]
passed = counts["tests"] - failed - counts["skipped"]
print(f"total: {passed} passed, {failed} failed, {counts['skipped']} skipped")
EOF
exit "$status"
