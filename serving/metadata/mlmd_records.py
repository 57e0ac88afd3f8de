"""The MLMD implementation of :class:`serving.metadata.records.ServingRecords`.

Each record is one ``put_execution`` transaction keyed by an ``external_id`` built from the
report's ids, so a replayed report finds its own earlier write and changes nothing.
"""

from __future__ import annotations

import logging
import os
import time

import ml_metadata as mlmd
from ml_metadata import errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from serving.metadata import mlmd_store as ms
from serving.metadata.records import Payload, RetryLater

log = logging.getLogger(__name__)

# A version number this close to the report time is a Pusher timestamp: its PushedModel may
# still be on its way into MLMD (TFX publishes it after the executor returns), so wait for it.
PUSHED_MODEL_GRACE_SECONDS = 120.0


def quote(text: str) -> str:
    """Escapes ``text`` for a string literal in an MLMD ``filter_query``."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


class MlmdRecords:
    def __init__(
        self, store: metadata_store.MetadataStore, grace_seconds: float = PUSHED_MODEL_GRACE_SECONDS
    ) -> None:
        self.store = store
        self.types = ms.register_types(store)
        self._grace = grace_seconds

    # ------------------------------------------------------------------ helpers
    def _execution(self, external_id: str) -> pb.Execution | None:
        try:  # MLMD raises NotFound instead of returning an empty list
            return self.store.get_executions_by_external_ids([external_id])[0]
        except errors.NotFoundError:
            return None

    def _artifact(self, external_id: str) -> pb.Artifact | None:
        try:
            return self.store.get_artifacts_by_external_ids([external_id])[0]
        except errors.NotFoundError:
            return None

    def _context(self, type_name: str, name: str, props: dict) -> pb.Context:
        context = pb.Context(type_id=self.types[type_name], name=name)
        ms.set_properties(context, type_name, props)
        return context

    def _contexts(self, payload: Payload) -> list[pb.Context]:
        """The server and deployment contexts (reused if they exist, created otherwise)."""
        return [
            self._context(ms.SERVER_CONTEXT, payload["server_id"], {}),
            self._context(
                ms.DEPLOYMENT_CONTEXT,
                payload["model_name"],
                {"model_name": payload["model_name"], "base_dir": payload.get("base_path")},
            ),
        ]

    def find_pushed_model(self, path: str, version: str) -> pb.Artifact | None:
        """The PushedModel that published ``path``: by exact destination, else by version and
        the store's directory name (the pipeline and the server may mount the store at
        different paths, e.g. a PVC in two pods)."""
        exact = self.store.get_artifacts(
            list_options=mlmd.ListOptions(
                filter_query=f"type = '{ms.PUSHED_MODEL}' AND "
                f"custom_properties.pushed_destination.string_value = '{quote(path)}'"
            )
        )
        if exact:
            return max(exact, key=lambda a: a.id)
        suffix = "/" + "/".join(path.rstrip("/").split("/")[-2:])
        candidates = [
            a
            for a in self.store.get_artifacts(
                list_options=mlmd.ListOptions(
                    filter_query=f"type = '{ms.PUSHED_MODEL}' AND "
                    f"custom_properties.pushed_version.string_value = '{quote(version)}'"
                )
            )
            if a.custom_properties["pushed_destination"].string_value.endswith(suffix)
            and a.custom_properties["pushed"].int_value == 1
        ]
        return max(candidates, key=lambda a: a.id) if candidates else None

    def _pushed_model_or_external(self, payload: Payload) -> pb.Artifact:
        path, version = payload["path"], str(payload["model_version"])
        found = self.find_pushed_model(path, version)
        if found is not None:
            return found
        version_time = int(version) if version.isdigit() else 0
        reported = payload["load_started_ms"] / 1000
        if abs(reported - version_time) < self._grace and time.time() - reported < self._grace:
            raise RetryLater(f"PushedModel for {path} not in MLMD yet")
        external_id = f"external:{path}"
        existing = self._artifact(external_id)
        if existing is not None:
            return existing
        artifact = pb.Artifact(
            type_id=self.types[ms.PUSHED_MODEL],
            uri=path,
            external_id=external_id,
            state=pb.Artifact.LIVE,
        )
        artifact.custom_properties["pushed"].int_value = 1
        artifact.custom_properties["pushed_destination"].string_value = path
        artifact.custom_properties["pushed_version"].string_value = version
        artifact.custom_properties["is_external"].int_value = 1
        artifact.id = self.store.put_artifacts([artifact])[0]
        log.info("Version %s was not pushed by a pipeline; recorded as external", path)
        return artifact

    # ------------------------------------------------------------------ records
    def record_server_started(self, payload: Payload) -> None:
        """Upserts the server context and cancels its episodes a crash left RUNNING."""
        server_id = payload["server_id"]
        context = self.store.get_context_by_type_and_name(ms.SERVER_CONTEXT, server_id)
        if context is None:
            context = self._context(ms.SERVER_CONTEXT, server_id, {})
        ms.set_properties(context, ms.SERVER_CONTEXT, payload)
        self.store.put_contexts([context])
        stale = self.store.get_executions(
            list_options=mlmd.ListOptions(
                filter_query=f"type = '{ms.MODEL_SERVING}' AND last_known_state = RUNNING AND "
                f"properties.server_id.string_value = '{quote(server_id)}' AND "
                f"properties.load_time_ms.double_value < {float(payload['started_at_ms'])}"
            )
        )
        for execution in stale:
            execution.last_known_state = pb.Execution.CANCELED
            execution.properties["unload_reason"].string_value = "server restarted"
        if stale:
            self.store.put_executions(stale)
            log.info("Marked %d episodes of %s CANCELED (server restarted)", len(stale), server_id)

    def record_heartbeat(self, payload: Payload) -> None:
        """Stamps the server context and each load it has RUNNING with the beat's time (the
        loads carry it so one filter query finds stale ones: ``last_known_state = RUNNING AND
        properties.heartbeat_ms.double_value < <now - 3 intervals>``)."""
        server_id = payload["server_id"]
        context = self.store.get_context_by_type_and_name(ms.SERVER_CONTEXT, server_id)
        if context is None:
            context = self._context(ms.SERVER_CONTEXT, server_id, {})
        ms.set_properties(context, ms.SERVER_CONTEXT, payload)
        self.store.put_contexts([context])
        running = self.store.get_executions(
            list_options=mlmd.ListOptions(
                filter_query=f"type = '{ms.MODEL_SERVING}' AND last_known_state = RUNNING AND "
                f"properties.server_id.string_value = '{quote(server_id)}'"
            )
        )
        for execution in running:
            ms.set_properties(execution, ms.MODEL_SERVING, payload)
        if running:
            self.store.put_executions(
                running,
                field_mask_paths=["properties.heartbeat_ms", "properties.heartbeat_interval_s"],
            )

    def _record_episode(self, payload: Payload, state: int) -> None:
        if self._execution(payload["episode_id"]) is not None:
            return
        pushed = self._pushed_model_or_external(payload)
        execution = pb.Execution(
            type_id=self.types[ms.MODEL_SERVING],
            name=payload["episode_id"],
            external_id=payload["episode_id"],
            last_known_state=state,
        )
        ms.set_properties(execution, ms.MODEL_SERVING, payload)
        self.store.put_execution(
            execution,
            [(pushed, ms.event(pb.Event.INPUT, "pushed_model", payload["load_started_ms"]))],
            self._contexts(payload),
            reuse_context_if_already_exist=True,
        )

    def record_version_loaded(self, payload: Payload) -> None:
        self._record_episode(payload, pb.Execution.RUNNING)

    def record_version_load_failed(self, payload: Payload) -> None:
        self._record_episode(payload, pb.Execution.FAILED)

    def record_version_unloaded(self, payload: Payload) -> None:
        execution = self._execution(payload["episode_id"])
        if execution is None:
            log.warning("Unload of unknown episode %s ignored", payload["episode_id"])
            return
        if execution.last_known_state != pb.Execution.RUNNING:
            return
        execution.last_known_state = pb.Execution.COMPLETE
        ms.set_properties(execution, ms.MODEL_SERVING, payload)
        self.store.put_executions([execution])

    def record_prediction_log(self, payload: Payload) -> None:
        if self._artifact(payload["shard_id"]) is not None:
            return
        artifact = pb.Artifact(
            type_id=self.types[ms.PREDICTION_LOG],
            uri=payload["uri"],
            external_id=payload["shard_id"],
            state=pb.Artifact.LIVE,
        )
        ms.set_properties(artifact, ms.PREDICTION_LOG, {**payload, "format": "tfrecord"})
        execution = self._execution(payload.get("episode_id") or "")
        if execution is None:  # logged before its load was reported (metadata just enabled)
            self.store.put_artifacts([artifact])
            return
        self.store.put_execution(
            execution, [(artifact, ms.event(pb.Event.OUTPUT, "prediction_log"))], []
        )

    def record_live_metrics(self, payload: Payload) -> None:
        """One RUNNING FeedbackEvaluation per (server, model, version) whose LiveMetrics
        output is updated in place; payloads are cumulative, so the newest wins."""
        key = f"feedback/{payload['server_id']}/{payload['model_name']}/{payload['model_version']}"
        metrics = self._artifact(key + "/metrics")
        if metrics is not None:
            ms.set_properties(metrics, ms.LIVE_METRICS, payload)
            self.store.put_artifacts([metrics])
            return
        metrics = pb.Artifact(
            type_id=self.types[ms.LIVE_METRICS],
            external_id=key + "/metrics",
            state=pb.Artifact.LIVE,
        )
        ms.set_properties(metrics, ms.LIVE_METRICS, payload)
        execution = pb.Execution(
            type_id=self.types[ms.FEEDBACK_EVALUATION],
            name=key,
            external_id=key,
            last_known_state=pb.Execution.RUNNING,
        )
        ms.set_properties(execution, ms.FEEDBACK_EVALUATION, payload)
        inputs = self._served_inputs(payload.get("episode_id") or "")
        self.store.put_execution(
            execution,
            [
                *((a, ms.event(pb.Event.INPUT, "pushed_model")) for a in inputs),
                (metrics, ms.event(pb.Event.OUTPUT, "metrics")),
            ],
            self._contexts(payload),
            reuse_context_if_already_exist=True,
        )

    def _served_inputs(self, episode_id: str) -> list[pb.Artifact]:
        execution = self._execution(episode_id) if episode_id else None
        if execution is None:
            return []
        ids = [
            e.artifact_id
            for e in self.store.get_events_by_execution_ids([execution.id])
            if e.type == pb.Event.INPUT
        ]
        return list(self.store.get_artifacts_by_id(ids))

    def feedback_sources(
        self,
        model: str,
        versions: list[str],
        episode_ids: list[str],
        shard_ids: list[str],
    ) -> list[tuple[pb.Artifact, str]]:
        """What labelled rows came from, as (artifact, event key) for INPUT events: the
        ``PushedModel`` each version was served from (through the serving episodes; for a
        version whose server reported nothing, the newest pushed one of that version in the
        model's store directory) and the prediction-log shards MLMD knows (a shard is recorded
        when the server closes it, so the newest may not be there yet)."""
        found: dict[int, tuple[pb.Artifact, str]] = {}
        covered: set[str] = set()
        for episode_id in episode_ids:
            execution = self._execution(episode_id)
            if execution is None:
                continue
            covered.add(execution.properties["model_version"].string_value)
            for artifact in self._served_inputs(episode_id):
                found.setdefault(artifact.id, (artifact, "served_model"))
        for version in versions:
            if version in covered:
                continue
            pushed = self.find_pushed_model(f"/{model}/{version}", version)
            if pushed is not None:
                found.setdefault(pushed.id, (pushed, "served_model"))
        for shard_id in shard_ids:
            shard = self._artifact(shard_id)
            if shard is not None:
                found.setdefault(shard.id, (shard, "prediction_log"))
        return list(found.values())

    def link_inputs(self, execution_id: int, sources: list[tuple[pb.Artifact, str]]) -> None:
        """Adds INPUT events (TFX's ``[key, index]`` path) from ``sources`` to an execution
        another client created, skipping those it has, so a retry adds nothing twice."""
        have = {
            e.artifact_id
            for e in self.store.get_events_by_execution_ids([execution_id])
            if e.type == pb.Event.INPUT
        }
        events = []
        counters: dict[str, int] = {}
        for artifact, key in sources:
            index = counters.get(key, 0)
            counters[key] = index + 1
            if artifact.id in have:
                continue
            event = ms.event(pb.Event.INPUT, key)
            event.path.steps[1].index = index
            event.artifact_id = artifact.id
            event.execution_id = execution_id
            events.append(event)
        if events:
            self.store.put_events(events)

    def record_feedback_examples(self, payload: Payload) -> int:
        """Exported (features, label) data as TFX ``Examples``: OUTPUT of a COMPLETE
        FeedbackEvaluation whose INPUTs are the served PushedModels and prediction-log shards,
        so a later TFX Importer of the same uri closes the loop in lineage."""
        key = payload["export_id"]
        existing = self._artifact(key + "/examples")
        if existing is not None:
            return existing.id
        uri = os.path.abspath(payload["uri"])
        examples = pb.Artifact(
            type_id=self.types[ms.EXAMPLES],
            uri=uri,
            external_id=key + "/examples",
            state=pb.Artifact.LIVE,
        )
        examples.properties["split_names"].string_value = payload["split_names"]
        examples.properties["span"].int_value = int(payload.get("span", 0))
        examples.custom_properties["file_format"].string_value = "tfrecords_gzip"
        examples.custom_properties["payload_format"].string_value = "FORMAT_TF_EXAMPLE"
        examples.custom_properties["num_examples"].int_value = int(payload["num_examples"])
        execution = pb.Execution(
            type_id=self.types[ms.FEEDBACK_EVALUATION],
            name=key,
            external_id=key,
            last_known_state=pb.Execution.COMPLETE,
        )
        ms.set_properties(execution, ms.FEEDBACK_EVALUATION, payload)
        inputs: list[tuple[pb.Artifact, pb.Event]] = []
        seen: set[int] = set()
        for episode_id in payload["episode_ids"]:
            for artifact in self._served_inputs(episode_id):
                if artifact.id not in seen:
                    seen.add(artifact.id)
                    inputs.append((artifact, ms.event(pb.Event.INPUT, "pushed_model")))
        for shard_id in payload.get("shard_ids", []):
            shard = self._artifact(shard_id)
            if shard is not None and shard.id not in seen:
                seen.add(shard.id)
                inputs.append((shard, ms.event(pb.Event.INPUT, "prediction_log")))
        contexts = [
            self._context(
                ms.DEPLOYMENT_CONTEXT, payload["model_name"], {"model_name": payload["model_name"]}
            )
        ]
        _, ids, _ = self.store.put_execution(
            execution,
            [*inputs, (examples, ms.event(pb.Event.OUTPUT, "examples"))],
            contexts,
            reuse_context_if_already_exist=True,
        )
        return ids[-1]
