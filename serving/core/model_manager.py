"""Moves one model's versions through START -> LOADING -> AVAILABLE -> UNLOADING -> END.

Requests read an immutable map of AVAILABLE versions that is swapped whole on every change
(TF Serving's RCU-style serving map), so the request path takes one short per-version lock to
count itself in-flight. Transitions preserve availability: a replaced version keeps serving
until its successor is AVAILABLE, then leaves the map and is closed only once its in-flight
requests have finished — which is what makes a swap under load drop nothing.

Beyond TF Serving: a version that failed to load is offered again when its directory changes
(a fixed copy, a finished upload), besides TF Serving's timed retries.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from types import MappingProxyType

from serving.core.version_policy import VersionPolicy, describe, select_versions
from serving.errors import Code, ServingError
from serving.storage.source import Discovery, Fingerprint, VersionCandidate

log = logging.getLogger(__name__)

# History of finished versions kept for status queries (TF Serving keeps all: issue #1488).
_MAX_ENDED_RECORDS = 10


class State(enum.IntEnum):
    """``ModelVersionStatus.State`` numbering."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class RetryPolicy:
    max_retries: int = 5
    interval_seconds: float = 60.0


@dataclass
class VersionRecord:
    version: int
    path: str
    fingerprint: Fingerprint
    state: State = State.START
    error: ServingError | None = None
    servable: object | None = None
    load_seconds: float | None = None
    loaded_at: float | None = None  # wall-clock time it became AVAILABLE (status page)
    inflight: int = 0
    closing: bool = False
    cond: threading.Condition = field(default_factory=threading.Condition, repr=False)


class VersionPin:
    """One request's pin on a version. A class rather than ``@contextmanager``: it is entered
    on every request, and a generator-based context costs several times more."""

    __slots__ = ("record",)

    def __init__(self, record: VersionRecord) -> None:
        self.record = record

    def __enter__(self) -> VersionRecord:
        return self.record

    def __exit__(self, *exc_info: object) -> None:
        record = self.record
        with record.cond:
            record.inflight -= 1
            if record.inflight == 0:
                record.cond.notify_all()


@dataclass
class _Failure:
    fingerprint: Fingerprint
    attempts: int
    retry_at: float


Loader = Callable[[str], object]
Closer = Callable[[object], None]


class ModelManager:
    """Owns the versions of one model. ``reconcile`` is called by the poller after each poll."""

    def __init__(
        self,
        model_name: str,
        policy: VersionPolicy,
        loader: Loader,
        closer: Closer,
        load_executor: Executor,
        retry: RetryPolicy | None = None,
        on_state_change: Callable[[str, VersionRecord], None] | None = None,
    ) -> None:
        self.name = model_name
        self.policy = policy
        self._loader = loader
        self._closer = closer
        self._load_executor = load_executor
        self._retry = retry or RetryPolicy()
        self._on_state_change = on_state_change
        self._lock = threading.RLock()
        self._records: dict[int, VersionRecord] = {}
        self._failures: dict[int, _Failure] = {}
        self._ended: list[VersionRecord] = []
        self._available: MappingProxyType[int, VersionRecord] = MappingProxyType({})
        self._latest: VersionRecord | None = None
        self._settled = threading.Event()
        self._changing = False
        self._removed = False
        self._last_discovery: Discovery | None = None
        self._unload_threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ request path
    def handle(self, version: int | None) -> VersionPin:
        """Pins an AVAILABLE version (the highest one when ``version`` is None) for a request;
        use it in a ``with`` block, which unpins."""
        return VersionPin(self._pin(version))

    def _pin(self, version: int | None) -> VersionRecord:
        while True:
            record = self._latest if version is None else self._available.get(version)
            if record is None:
                raise ServingError(Code.NOT_FOUND, self.not_found_message(version))
            with record.cond:
                if not record.closing:
                    record.inflight += 1
                    return record
            # The version was swapped out between the lookup and the pin: look again.

    def not_found_message(self, version: int | None) -> str:
        if version is None:
            return f"Servable not found for request: Latest({self.name})"
        return f"Servable not found for request: Specific({self.name}, {version})"

    def available_versions(self) -> list[int]:
        return sorted(self._available)

    def latest_version(self) -> int | None:
        latest = self._latest
        return latest.version if latest else None

    # ------------------------------------------------------------------ status
    def statuses(self) -> list[tuple[int, State, ServingError | None]]:
        with self._lock:
            rows = [(r.version, r.state, r.error) for r in self._ended]
            rows += [(r.version, r.state, r.error) for r in self._records.values()]
        latest: dict[int, tuple[int, State, ServingError | None]] = {}
        for row in rows:  # a live record wins over an older ended one of the same version
            latest[row[0]] = row
        return [latest[v] for v in sorted(latest)]

    def records(self) -> list[VersionRecord]:
        """Every version's record (as ``statuses``, a live one over an ended one), for views
        that need more than the state: load time and duration (the status page)."""
        with self._lock:
            latest = {r.version: r for r in self._ended}
            latest.update((r.version, r) for r in self._records.values())
        return [latest[v] for v in sorted(latest)]

    def wait_settled(self, timeout: float | None) -> bool:
        """Blocks until the first poll's loads have finished (successfully or not)."""
        return self._settled.wait(timeout)

    # ------------------------------------------------------------------ transitions
    def reconcile(self, discovery: Discovery) -> None:
        with self._lock:
            self._last_discovery = discovery
            self._reconcile()

    def _reconcile(self) -> None:
        """Decides loads/unloads from the last discovery; re-run after every load outcome."""
        discovery = self._last_discovery
        with self._lock:
            if self._removed or discovery is None:
                return
            self._changing = bool(discovery.changing)
            if not discovery.base_path_exists:
                self._update_settled()
                return
            candidates = {
                v: c for v, c in discovery.ready.items() if self._may_load(v, c.fingerprint)
            }
            aspired = select_versions(self.name, self.policy, candidates)
            for version in sorted(aspired, reverse=True):
                record = self._records.get(version)
                if record is None:
                    self._start_load(candidates[version])
            any_aspired_available = any(
                self._records[v].state == State.AVAILABLE for v in aspired if v in self._records
            )
            nothing_coming = not aspired and not discovery.pending and not discovery.changing
            if any_aspired_available or nothing_coming:
                for record in list(self._records.values()):
                    if record.version not in aspired and record.state == State.AVAILABLE:
                        self._start_unload(record)
            for version in list(self._failures):
                if version not in discovery.ready and version not in discovery.changing:
                    del self._failures[version]  # its directory is gone; forget the failure
            self._update_settled()

    def _may_load(self, version: int, fingerprint: Fingerprint) -> bool:
        failure = self._failures.get(version)
        if failure is None:
            return True
        if failure.fingerprint != fingerprint:
            log.info(
                "Model %s version %d changed on disk since it failed; retrying", self.name, version
            )
            del self._failures[version]
            return True
        return failure.attempts <= self._retry.max_retries and time.monotonic() >= failure.retry_at

    def _start_load(self, candidate: VersionCandidate) -> None:
        record = VersionRecord(candidate.version, candidate.path, candidate.fingerprint)
        self._records[candidate.version] = record
        self._set_state(record, State.LOADING)
        log.info(
            "Model %s: loading version %d from %s (policy %s)",
            self.name,
            record.version,
            record.path,
            describe(self.policy),
        )
        self._load_executor.submit(self._load, record)

    def _load(self, record: VersionRecord) -> None:
        started = time.perf_counter()
        try:
            servable = self._loader(record.path)
        except BaseException as exc:  # any loader failure must stay contained
            self._load_failed(record, exc, time.perf_counter() - started)
            return
        record.load_seconds = time.perf_counter() - started
        record.loaded_at = time.time()
        with self._lock:
            if self._removed or self._records.get(record.version) is not record:
                self._closer(servable)
                return
            record.servable = servable
            self._set_state(record, State.AVAILABLE)
            self._failures.pop(record.version, None)
        log.info(
            "Model %s: version %d AVAILABLE (loaded in %.2f s)",
            self.name,
            record.version,
            record.load_seconds,
        )
        self._reconcile()  # retire the versions this one replaces without waiting for a poll

    def _load_failed(self, record: VersionRecord, exc: BaseException, seconds: float) -> None:
        error = exc if isinstance(exc, ServingError) else ServingError(Code.UNKNOWN, str(exc))
        if error.code == Code.UNKNOWN and not str(exc):
            error = ServingError(Code.UNKNOWN, type(exc).__name__)
        with self._lock:
            previous = self._failures.get(record.version)
            attempts = 1 if previous is None else previous.attempts + 1
            self._failures[record.version] = _Failure(
                record.fingerprint, attempts, time.monotonic() + self._retry.interval_seconds
            )
            record.error = error
            record.load_seconds = seconds
            self._end(record)
        retry_note = (
            f"will retry in {self._retry.interval_seconds:g} s or when its directory changes"
            if attempts <= self._retry.max_retries
            else "will retry when its directory changes"
        )
        log.error(
            "Model %s: version %d failed to load after %.2f s (%s): %s",
            self.name,
            record.version,
            seconds,
            retry_note,
            error.message,
        )
        self._reconcile()  # fall back to the best version that can load

    def _start_unload(self, record: VersionRecord) -> None:
        self._set_state(record, State.UNLOADING)  # no new request can pin it from here on
        thread = threading.Thread(
            target=self._unload,
            args=(record,),
            name=f"unload-{self.name}-{record.version}",
            daemon=True,
        )
        self._unload_threads = [t for t in self._unload_threads if t.is_alive()] + [thread]
        thread.start()

    def _unload(self, record: VersionRecord) -> None:
        with record.cond:
            record.closing = True
            record.cond.wait_for(lambda: record.inflight == 0)
        try:
            if record.servable is not None:
                self._closer(record.servable)
        except Exception:  # a failing close must not stop the manager
            log.exception("Model %s: error while unloading version %d", self.name, record.version)
        record.servable = None
        with self._lock:
            self._end(record)
        log.info("Model %s: version %d unloaded", self.name, record.version)

    def _end(self, record: VersionRecord) -> None:
        if self._records.get(record.version) is record:
            del self._records[record.version]
        self._set_state(record, State.END)
        self._ended = [r for r in self._ended if r.version != record.version]
        self._ended.append(record)
        del self._ended[:-_MAX_ENDED_RECORDS]
        self._update_settled()

    def _publish(self) -> None:
        available = {v: r for v, r in self._records.items() if r.state == State.AVAILABLE}
        self._available = MappingProxyType(available)
        self._latest = available[max(available)] if available else None

    def _set_state(self, record: VersionRecord, state: State) -> None:
        """Observers hear of a change once the serving map shows it: one that reads the map
        (the model process's snapshot publisher) must never read the map of before."""
        record.state = state
        self._publish()
        if self._on_state_change is not None:
            self._on_state_change(self.name, record)

    def _update_settled(self) -> None:
        loading = any(r.state in (State.START, State.LOADING) for r in self._records.values())
        if not loading and not self._changing:
            self._settled.set()

    def remove(self) -> None:
        """Unloads every version (model dropped from the config, or shutdown)."""
        with self._lock:
            self._removed = True
            for record in list(self._records.values()):
                if record.state == State.AVAILABLE:
                    self._start_unload(record)
            self._settled.set()

    def join_unloads(self, timeout: float) -> None:
        """Waits for unloads to finish: closing a TF session while the process exits aborts it."""
        deadline = time.monotonic() + timeout
        for thread in list(self._unload_threads):
            thread.join(max(0.0, deadline - time.monotonic()))
