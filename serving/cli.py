"""``tfx-model-server``: a drop-in for ``tensorflow_model_server``'s command line."""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import signal
import sys


def _configure_logging() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ chatter hides our own logs
    logging.basicConfig(
        level=os.environ.get("TFX_MODEL_SERVER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    _configure_logging()
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a hung start or stop is
    # waiting on, without stopping the server (as py-spy would show, with nothing installed).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from serving.memory import configure_allocators

    configure_allocators()  # before TensorFlow is imported
    from serving.errors import ConfigError
    from serving.options import parse_options

    try:
        options, ignored = parse_options(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"tfx-model-server: error: {exc}", file=sys.stderr)
        return 2
    if options.version:
        import tensorflow as tf

        from serving.version import __version__

        print(f"TensorFlow ModelServer: tfx-model-server {__version__}")
        print(f"TensorFlow Library: {tf.__version__}")
        return 0
    log = logging.getLogger("serving")
    for name in ignored:
        log.info("--%s only tunes TF Serving's C++ runtime; ignored", name)
    from serving.server import ModelServer

    try:
        server = ModelServer(options)
        return server.run()
    except ConfigError as exc:
        print(f"tfx-model-server: error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The process entry point (``tfx-model-server``, ``python -m serving``).

    Once ``main`` returns, the server has stopped what it owns, in order (requests drained,
    versions unloaded, batch threads joined, prediction logs closed, the metadata spool handed
    to its worker and the worker stopped; a load in progress when SIGTERM came has finished).
    Of CPython's exit, the part that is ours runs: the ``atexit`` functions (temporary
    directories, logging's flush). The process then ends the way TF Serving's C++ binary
    does, without interpreter finalization: tearing down modules and objects while
    TensorFlow's native thread pools and a TF Transform graph's lookup tables are still
    registered aborted (SIGABRT) and, about once in 50 stops, hung after "Server stopped"
    (``tests/components/test_transform_model_clean_stop.py``).
    """
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
