"""``tfx-model-server``: a drop-in for ``tensorflow_model_server``'s command line."""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TextIO


def _prepare_process(role: str | None) -> None:
    """Logging (each process of a multi-process server names itself), the stack dump on
    SIGUSR1 and the allocator settings, which must precede TensorFlow's import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ chatter hides our own logs
    logging.basicConfig(
        level=os.environ.get("TFX_MODEL_SERVER_LOG_LEVEL", "INFO"),
        format=_log_format(role),
        stream=sys.stderr,
    )
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a hung start or stop is
    # waiting on, without stopping the server (as py-spy would show, with nothing installed).
    faulthandler.register(signal.SIGUSR1, file=_stack_dump_file(), all_threads=True)
    from serving.memory import configure_allocators

    configure_allocators()


def _stack_dump_file() -> TextIO | int:
    """stderr, or in a child of a multi-process server the pipe its supervisor relays dumps
    from (``serving.multiproc.stack_dumps``). The pipe stays this process's own: a process
    it starts would hold it open past this one's exit."""
    from serving.multiproc.protocol import STACK_DUMP_FD_ENV

    fd = os.environ.pop(STACK_DUMP_FD_ENV, None)
    if fd is None:
        return sys.stderr
    os.set_inheritable(int(fd), False)
    return int(fd)


def _log_format(role: str | None) -> str:
    where = f" [{role}]" if role else ""
    return f"%(asctime)s %(levelname).1s{where} %(name)s] %(message)s"


def set_log_role(role: str) -> None:
    """Names this process anew in its log lines: a spare front-end process starts as
    ``[frontend-spare]`` and logs as the slot it was given (``[frontend-3]``) from then on."""
    formatter = logging.Formatter(_log_format(role))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def _parse(argv: list[str]):
    """(options, ignored flags), or None after printing why the command line cannot work."""
    from serving.errors import ConfigError
    from serving.options import parse_options

    try:
        return parse_options(argv)
    except ConfigError as exc:
        print(f"tfx-model-server: error: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    _prepare_process(None)
    argv = sys.argv[1:] if argv is None else argv
    parsed = _parse(argv)
    if parsed is None:
        return 2
    options, ignored = parsed
    if options.version:
        import tensorflow as tf

        from serving.version import __version__

        print(f"TensorFlow ModelServer: tfx-model-server {__version__}")
        print(f"TensorFlow Library: {tf.__version__}")
        return 0
    log = logging.getLogger("serving")
    for name in ignored:
        log.info("--%s only tunes TF Serving's C++ runtime; ignored", name)
    frontends = options.frontend_count()
    if frontends:
        from serving.multiproc.supervisor import Supervisor

        return Supervisor(options, argv, frontends).run()
    from serving.errors import ConfigError
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
    _exit(main())


def process_entry(run_process: Callable[[Any], int], role: str) -> NoReturn:
    """The entry point of a child process of a multi-process server: the same preparation and
    command line as ``main``, ``run_process(options)``, then the same exit as ``run``."""
    _prepare_process(role)
    from serving.errors import ConfigError

    parsed = _parse(sys.argv[1:])
    if parsed is None:
        _exit(2)
    try:
        code = run_process(parsed[0])
    except ConfigError as exc:
        print(f"tfx-model-server: error: {exc}", file=sys.stderr)
        code = 2
    _exit(code)


def _exit(code: int) -> NoReturn:
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
