"""``--model_config_file``: parse it, and re-apply it when it changes on disk.

TF Serving re-applies the file every poll even when unchanged and, on a bad edit, can leave
the stored config half-updated; here a change is applied whole or not at all, and a file that
fails to parse or validate is logged while the previous config keeps serving.

The file parses into ``serving.protos``' ``ModelServerConfig`` (TF Serving's message, without
TensorFlow on the import path), the class the core and the gRPC ModelService use.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from serving import protos
from serving.config_protos import read_text_proto
from serving.errors import ConfigError, ServingError

if TYPE_CHECKING:
    from serving.core.server_core import ServerCore

log = logging.getLogger(__name__)

ModelServerConfig = protos.ModelServerConfig


class ConfigFileError(ConfigError):
    """The config file cannot be read or parsed; the message names the file and the problem."""


def read_model_config(path: str) -> ModelServerConfig:
    return read_text_proto(path, ModelServerConfig(), ConfigFileError)


class ConfigFileWatcher:
    """Re-reads the config file every ``period`` seconds and applies real changes."""

    def __init__(self, path: str, period: float, core: ServerCore, applied: ModelServerConfig):
        self._path = path
        self._period = period
        self._core = core
        self._applied = applied.SerializeToString(deterministic=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check_once(self) -> bool:
        """Applies the file if it changed; returns whether a new config was applied."""
        try:
            config = read_model_config(self._path)
        except ConfigFileError as exc:
            log.error("%s; keeping the current config", exc)
            return False
        serialized = config.SerializeToString(deterministic=True)
        if serialized == self._applied:
            return False
        try:
            self._core.apply_config(config)
        except ServingError as exc:
            log.error(
                "Rejected new config from %s: %s; keeping the current config",
                self._path,
                exc.message,
            )
            self._applied = serialized  # do not re-log the same rejected file every poll
            return False
        self._applied = serialized
        log.info(
            "Applied new model config from %s: models %s", self._path, self._core.model_names()
        )
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.check_once()
