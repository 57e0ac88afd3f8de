"""All models of one server: config, polling, and resolving a request's ModelSpec to a version.

The config is TF Serving's ``ModelServerConfig`` proto, so a single ``--model_name`` and a
``--model_config_file`` with many models go through the same code. Applying a new config
replaces the old one: models that stay keep their managers (and their traffic).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from serving import protos
from serving.core.model_manager import (
    Loader,
    ModelManager,
    RetryPolicy,
    State,
    VersionPin,
    VersionRecord,
)
from serving.core.model_spec import ModelSpec
from serving.core.traffic_split import TrafficSplit
from serving.errors import Code, ServingError, failed_precondition, invalid_argument
from serving.servables.servable import Servable
from serving.storage.bucket_source import BucketVersionSource
from serving.storage.sources import Source, SourceFactory, StorageSources

log = logging.getLogger(__name__)

# TF Serving's config messages from serving.protos (no TensorFlow on the import path); the core
# only reads their fields, so the official classes' instances work the same.
ModelConfig = protos.ModelConfig
ModelServerConfig = protos.ModelServerConfig

# How often to re-list while a startup version is still settling (its copy may be finishing).
_SETTLE_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ServableHandle:
    model_name: str
    version: int
    servable: Servable


class PinnedServable:
    """``with core.handle(spec) as handle``: the handle, unpinned when the block ends."""

    __slots__ = ("_pin", "handle")

    def __init__(self, handle: ServableHandle, pin: VersionPin) -> None:
        self.handle = handle
        self._pin = pin

    def __enter__(self) -> ServableHandle:
        return self.handle

    def __exit__(self, *exc_info: object) -> None:
        self._pin.__exit__(*exc_info)


@dataclass
class _Model:
    config: ModelConfig
    source: Source
    manager: ModelManager


StateHook = Callable[[str, VersionRecord], None]


def validate_config(config: ModelServerConfig) -> None:
    """TF Serving's config checks, with its messages."""
    if config.WhichOneof("config") != "model_config_list":
        raise invalid_argument("Only model_config_list is supported in ModelServerConfig")
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise invalid_argument("ModelConfig has no name")
        if model.name in seen:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
        if "://" not in model.base_path and not os.path.isabs(model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
        if not model.model_platform and model.model_type == 0:
            raise invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                "ModelServerConfig::model_platform."
            )
        platform = model.model_platform or "tensorflow"
        if platform != "tensorflow":
            raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")


class ServerCore:
    def __init__(
        self,
        loader: Loader,
        poll_wait_seconds: float = 1.0,
        num_load_threads: int = 0,
        retry: RetryPolicy | None = None,
        on_state_change: Callable[[str, VersionRecord], None] | None = None,
        allow_labels_for_unavailable_versions: bool = False,
        source_factory: SourceFactory | None = None,
    ) -> None:
        """``loader`` turns a version's path into its :class:`Servable` (the server's is
        :class:`serving.servables.loader.ServableLoader`); ``source_factory`` makes each
        model's version source; the server's
        (:class:`StorageSources`) carries the bucket cache dir, the metrics and
        ``--prefer_tflite_model``. The default polls local directories and buckets for
        SavedModel versions."""
        self._source_factory = source_factory or StorageSources()
        self._allow_unavailable_labels = allow_labels_for_unavailable_versions
        self._splits: dict[str, TrafficSplit] = {}
        self._loader = loader
        self._poll_wait = poll_wait_seconds
        self._retry = retry or RetryPolicy()
        self._on_state_change = on_state_change
        self._listeners: tuple[Callable[[], None], ...] = ()  # replaced whole: read lock-free
        self._listeners_lock = threading.Lock()
        self._load_executor = ThreadPoolExecutor(
            max_workers=num_load_threads or max(2, os.cpu_count() or 1),
            thread_name_prefix="load",
        )
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None

    # ------------------------------------------------------------------ config
    def apply_config(self, config: ModelServerConfig) -> None:
        """Replaces the config whole, or (on a validation error) changes nothing."""
        validate_config(config)
        wanted = {m.name: m for m in config.model_config_list.config}
        try:
            with self._lock:
                for name, model_config in wanted.items():
                    current = self._models.get(name)
                    if current is not None:
                        self._check_label_moves(current, model_config)
                for name in list(self._models):
                    if name not in wanted:
                        log.info("Model %s removed from the config; unloading it", name)
                        self._models.pop(name).manager.remove()
                for name, model_config in wanted.items():
                    current = self._models.get(name)
                    if current is not None and current.config.base_path == model_config.base_path:
                        current.config = model_config
                        current.manager.policy = model_config.model_version_policy
                        continue
                    if current is not None:
                        current.manager.remove()
                    self._models[name] = self._new_model(model_config)
        finally:  # also after a failure part-way: what did change is told
            self._changed()
        self._wake.set()

    def set_traffic_splits(self, splits: dict[str, TrafficSplit]) -> None:
        """Weighted label splits per model; every label must exist in that model's config."""
        with self._lock:
            for model, split in splits.items():
                if model not in self._models:
                    raise invalid_argument(f"Traffic split names unknown model {model}")
                labels = self._models[model].config.version_labels
                missing = [label for label in split.labels if label not in labels]
                if missing:
                    raise invalid_argument(
                        f"Traffic split for model {model} uses labels {missing} that its "
                        f"config does not define (version_labels: {sorted(labels)})"
                    )
            self._splits = dict(splits)
        self._changed()

    def traffic_split(self, name: str) -> TrafficSplit | None:
        return self._splits.get(name)

    def _check_label_moves(self, current: _Model, new: ModelConfig) -> None:
        """TF Serving's label rules for a model that stays in the config.

        A label must point at an AVAILABLE version; with
        ``--allow_version_labels_for_unavailable_models`` a *new* label may point ahead at a
        version still loading, but moving an existing label still needs an AVAILABLE target
        so traffic is never pointed at nothing. Labels of models new to the config are
        accepted as given and take effect once their versions load (TF Serving would refuse
        them, which makes labelled configs unusable at startup: its issues #1230, #1608).
        """
        available = set(current.manager.available_versions())
        old_labels = current.config.version_labels
        for label, version in new.version_labels.items():
            previous = old_labels.get(label)
            if previous == version or version in available:
                continue
            if self._allow_unavailable_labels and previous is None:
                continue
            raise failed_precondition(
                f"Request to assign label to version {version} of model {new.name}, which is "
                "not currently available for inference"
            )

    # ------------------------------------------------------------------ change listeners
    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called after anything requests resolve against changes: a version's
        state (and with it the serving map), the config (models, labels, policies) or the
        traffic splits. It runs on the thread making the change, possibly under a model
        manager's lock, so it must only note the change and return (the model process's
        snapshot publisher schedules a rebuild on its event loop). Like TF Serving's event bus
        of servable states, with config changes added: labels change without a state change."""
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)

    def remove_change_listener(self, listener: Callable[[], None]) -> None:
        """Removes ``listener`` (or an equal one: a bound method of the same object)."""
        with self._listeners_lock:
            self._listeners = tuple(known for known in self._listeners if known != listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener must never fail a load, an unload or a config
                log.exception("A core change listener failed")

    def _state_changed(self, model: str, record: VersionRecord) -> None:
        if self._on_state_change is not None:
            self._on_state_change(model, record)
        self._changed()

    def _new_model(self, config: ModelConfig) -> _Model:
        source = self._source_factory(config.name, config.base_path)
        loader = self._loader
        on_state_change: StateHook = self._state_changed
        if isinstance(source, BucketVersionSource):
            loader = _fetch_then_load(source, loader)
            on_state_change = _track_cache_use(source, on_state_change)
        manager = ModelManager(
            config.name,
            config.model_version_policy,
            loader,
            _close,
            self._load_executor,
            self._retry,
            on_state_change,
        )
        return _Model(config, source, manager)

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def models_without_available_version(self) -> list[str]:
        """Configured models that cannot answer yet (what a readiness probe waits for)."""
        with self._lock:
            models = list(self._models.values())
        return sorted(m.config.name for m in models if m.manager.latest_version() is None)

    def model_config(self, name: str) -> ModelConfig:
        return self._get(name, None).config

    # ------------------------------------------------------------------ polling
    def start(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name="fs-poller", daemon=True)
        self._poller.start()

    def poll_once(self) -> None:
        """One pass over every model; a failure in one model never stops the others."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            try:
                model.manager.reconcile(model.source.poll())
            except Exception:  # keep polling the other models
                log.exception("Polling model %s failed", model.config.name)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            settling = not self.all_settled()
            if self._poll_wait > 0:
                wait = _SETTLE_POLL_SECONDS if settling else self._poll_wait
            elif settling:  # "poll once": but let half-copied versions finish first
                wait = _SETTLE_POLL_SECONDS
            else:
                self._wake.clear()
                self._wake.wait()  # until a new config arrives
                continue
            self._wake.wait(wait)
            self._wake.clear()

    def all_settled(self) -> bool:
        with self._lock:
            models = list(self._models.values())
        return all(m.manager.wait_settled(0) for m in models)

    def wait_until_settled(self, timeout: float | None = None) -> bool:
        with self._lock:
            models = list(self._models.values())
        return all(m.manager.wait_settled(timeout) for m in models)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.manager.remove()
        # A load already running finishes (TF cannot cancel one; its version is then unloaded
        # like the others); loads not started yet are dropped.
        self._load_executor.shutdown(wait=True, cancel_futures=True)
        for model in models:
            model.manager.join_unloads(timeout=30)

    # ------------------------------------------------------------------ request path
    def _get(self, name: str, version: int | None) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise ServingError(
                Code.NOT_FOUND,
                "Servable not found for request: "
                + (f"Latest({name})" if version is None else f"Specific({name}, {version})"),
            )
        return model

    def manager(self, name: str) -> ModelManager:
        return self._get(name, None).manager

    def wait_until_available(self, names: Sequence[str], deadline: float) -> None:
        """Blocks until each model settles or ``deadline`` (``time.monotonic()``) passes; then
        UNKNOWN, as TF Serving's ServerCore::WaitUntilModelsAvailable, listing the models left
        without an AVAILABLE version and why. A model removed meanwhile is not waited for."""
        problems = [problem for name in names if (problem := self._unavailable(name, deadline))]
        if problems:
            raise ServingError(
                Code.UNKNOWN,
                f"{len(problems)} model(s) did not become available: {{{', '.join(problems)}}}",
            )

    def _unavailable(self, name: str, deadline: float) -> str | None:
        """Why ``name`` has no AVAILABLE version once settled (or at the deadline), else None."""
        with self._lock:
            model = self._models.get(name)
        if model is None:
            return None  # removed again by a newer config
        manager = model.manager
        settled = manager.wait_settled(max(0.0, deadline - time.monotonic()))
        if manager.latest_version() is not None:
            return None
        rows = manager.statuses()
        errors = [
            f"{{name: {name} version: {version}}} due to error: {error.code.name}: {error.message}"
            for version, _, error in rows
            if error is not None
        ]
        if errors:
            return "{" + "; ".join(errors) + "}"
        if rows:
            states = ", ".join(f"version {version} {state.name}" for version, state, _ in rows)
            return f"{{name: {name}: {states}}}"
        if settled:
            return f"{{name: {name}: no versions found under {model.config.base_path}}}"
        return f"{{name: {name}: no version discovered before the deadline}}"

    def resolve_version(self, spec: ModelSpec) -> int | None:
        """The version number a spec names (a label resolved), or None for "latest"."""
        if spec.version is not None and spec.label:
            raise invalid_argument(
                f"Both model version ({spec.version}) and model version label ({spec.label}) "
                "cannot be supplied."
            )
        model = self._get(spec.name, spec.version)
        if spec.label:
            labels = model.config.version_labels
            if spec.label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {spec.label}")
            return labels[spec.label]
        if spec.version is None:
            split = self._splits.get(spec.name)
            if split is not None:
                version = model.config.version_labels.get(split.choose(spec.routing_key))
                if version in model.manager.available_versions():
                    return version
                # The chosen label's version is not serving: fall back to the latest.
        return spec.version

    def handle(self, spec: ModelSpec) -> PinnedServable:
        """The servable a spec resolves to, pinned until the ``with`` block using it ends."""
        version = self.resolve_version(spec)
        pin = self._get(spec.name, version).manager.handle(version)
        record = pin.record
        return PinnedServable(ServableHandle(spec.name, record.version, record.servable), pin)


def _close(servable: Servable) -> None:
    servable.close()


def _fetch_then_load(source: BucketVersionSource, loader: Loader) -> Loader:
    """Bucket versions are copied into the local cache on the load thread, then loaded from
    there: the request path never reads the bucket."""

    def load(path: str) -> object:
        return loader(source.fetch(path))

    return load


def _track_cache_use(source: BucketVersionSource, hook: StateHook | None) -> StateHook:
    """Tells the source which cached copies back live versions (kept until they END)."""

    def on_state_change(model: str, record: VersionRecord) -> None:
        if record.state == State.LOADING:
            source.on_state_change(record.path, in_use=True)
        elif record.state == State.END:
            source.on_state_change(record.path, in_use=False)
        if hook is not None:
            hook(model, record)

    return on_state_change
