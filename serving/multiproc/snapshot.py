"""Model metadata the model process publishes and front ends decode against.

A front end must know a signature's input dtypes before it can read a REST request's JSON,
and it must answer ``/readyz`` without a round trip. The model process therefore pushes a
snapshot whenever what it serves changes: per model the AVAILABLE versions, their signatures
(by fingerprint, each SignatureDef sent once), the version labels and whether a traffic split
applies, the rows a front end may coalesce into one call per batched version, plus the
models still without an AVAILABLE version.

A snapshot is only a guess about the version a request will run on: the model process
resolves every request itself (labels, traffic split, the version loaded a moment ago) and
checks that the signature the front end decoded against is the one of the version it runs
(``serving.multiproc.host``). A swap between decode and run is re-decoded, never answered
from mixed versions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving import protos
from serving.core.model_spec import ModelSpec
from serving.errors import ServingError
from serving.multiproc.protocol import b64, fingerprint, unb64


class SignatureFingerprints:
    """Fingerprints of the SignatureDef objects a servable holds, computed once per object
    (serializing on every request would cost more than the rest of the check)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[object, str, bytes]] = {}

    def of(self, signature: Any) -> tuple[str, bytes]:
        entry = self._by_id.get(id(signature))
        if entry is not None and entry[0] is signature:
            return entry[1], entry[2]
        data = signature.SerializeToString(deterministic=True)
        fp = fingerprint(data)
        if len(self._by_id) > 4096:  # versions come and go; the objects of unloaded ones too
            self._by_id.clear()
        self._by_id[id(signature)] = (signature, fp, data)
        return fp, data


def build_snapshot(
    core: Any,
    fingerprints: SignatureFingerprints,
    coalescing: Callable[[Any], tuple[int, int]] = lambda servable: (0, 0),
) -> dict[str, Any]:
    """What the core serves now, as a JSON-able dict (``core``: a ``ServerCore``).

    ``coalescing(servable)``: (rows, calls) -- the most rows a front end may coalesce into one
    call to the version (its batching's max_batch_size; 0: it runs each request alone) and how
    many such calls it keeps in flight (``serving.multiproc.coalesce``); 0 turns it off."""
    models: dict[str, Any] = {}
    definitions: dict[str, str] = {}
    for name in core.model_names():
        try:
            manager = core.manager(name)
            config = core.model_config(name)
        except ServingError:  # removed by a concurrent config change
            continue
        versions: dict[str, dict[str, str]] = {}
        rows: dict[str, list[int]] = {}
        for version in manager.available_versions():
            try:
                with core.handle(ModelSpec(name, version)) as handle:
                    signatures = handle.servable.signatures
                    names = {}
                    for key, signature in signatures.items():
                        fp, data = fingerprints.of(signature)
                        names[key] = fp
                        if fp not in definitions:
                            definitions[fp] = b64(data)
                    limit = coalescing(handle.servable)
            except ServingError:  # unloaded between the listing and the pin
                continue
            versions[str(version)] = names
            if limit[0]:
                rows[str(version)] = list(limit)
        models[name] = {
            "versions": versions,
            "labels": dict(config.version_labels),
            "split": core.traffic_split(name) is not None,
            "coalesce": rows,
        }
    return {
        "models": models,
        "signatures": definitions,
        "waiting": core.models_without_available_version(),
    }


@dataclass(frozen=True)
class SignatureGuess:
    """The version a request will probably run on, and that version's signatures."""

    version: int
    signatures: Mapping[str, Any]  # key -> SignatureDef (serving.protos)
    fingerprints: Mapping[str, str]  # key -> fingerprint
    # Rows of calls to this version a front end may coalesce into one (0: send each alone),
    # and how many coalesced calls it keeps in flight (``serving.multiproc.coalesce``).
    coalesce_rows: int = 0
    coalesce_in_flight: int = 0

    def fingerprint_of(self, signature: Any) -> str:
        for key, candidate in self.signatures.items():
            if candidate is signature:
                return self.fingerprints[key]
        raise KeyError("signature not from this guess")


class SnapshotView:
    """A front end's copy of the latest snapshot, with the parsed SignatureDefs cached by
    fingerprint across snapshots (most snapshots repeat the signatures of the last)."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}
        self._waiting: list[str] = []
        self._parsed: dict[str, Any] = {}
        # (model, version) -> guess: built once per snapshot, not per request.
        self._guesses: dict[tuple[str, int], SignatureGuess] = {}
        # (model, version, label) as the request names them -> guess, for this snapshot.
        self._requested: dict[tuple[str, int | None, str | None], SignatureGuess] = {}
        self.connected = False

    def update(self, snapshot: Mapping[str, Any]) -> None:
        self.add_signatures(snapshot["signatures"])
        self._models = dict(snapshot["models"])
        self._waiting = list(snapshot["waiting"])
        self._guesses = {}
        self._requested = {}
        self.connected = True

    def disconnected(self) -> None:
        """The model process is gone: nothing is servable until it is back."""
        self.connected = False

    def add_signatures(self, definitions: Mapping[str, str]) -> None:
        for fp, data in definitions.items():
            if fp not in self._parsed:
                self._parsed[fp] = protos.SignatureDef.FromString(unb64(data))

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def models_without_available_version(self) -> list[str]:
        if not self.connected:
            return self.model_names() or ["(model process starting)"]
        return list(self._waiting)

    def guess(self, spec: ModelSpec) -> SignatureGuess | None:
        """The version ``spec`` most likely resolves to, or None when only the model process
        can tell (unknown model or label, no AVAILABLE version, both version and label).

        Cached per snapshot by what the request names (most name no version: the latest is
        then looked up once per snapshot, not computed from the versions on every request);
        only names the snapshot knows are kept, so the cache stays as small as the snapshot."""
        key = (spec.name, spec.version, spec.label)
        cached = self._requested.get(key)
        if cached is not None:
            return cached
        guess = self._guess(spec)
        if guess is not None:
            self._requested[key] = guess
        return guess

    def _guess(self, spec: ModelSpec) -> SignatureGuess | None:
        model = self._models.get(spec.name)
        if model is None or (spec.version is not None and spec.label):
            return None
        version = model["labels"].get(spec.label) if spec.label else spec.version
        versions = model["versions"]
        if version is None:
            if spec.label or not versions:
                return None
            version = max(int(v) for v in versions)  # the latest; a split is checked later
        cached = self._guesses.get((spec.name, version))
        if cached is not None:
            return cached
        names = versions.get(str(version))
        if names is None:
            return None
        # A traffic split picks a version per request: calls coalesced into one would share
        # a single pick.
        limits = None if model["split"] else model.get("coalesce", {}).get(str(version))
        guess = self.guess_from(version, names, *(limits or (0, 0)))
        if guess is not None:
            self._guesses[(spec.name, version)] = guess
        return guess

    def guess_from(
        self, version: int, names: Mapping[str, str], coalesce_rows: int = 0, in_flight: int = 0
    ) -> SignatureGuess | None:
        try:
            signatures = {key: self._parsed[fp] for key, fp in names.items()}
        except KeyError:
            return None
        return SignatureGuess(version, signatures, dict(names), coalesce_rows, in_flight)
