"""Lineage answers from MLMD, as JSON-ready dicts (the CLI and the REST endpoints print them).

Walks events by hand instead of ``get_lineage_subgraph``: the walk works the same on every
backend and over gRPC, stops where the answer is complete, and stays a handful of indexed
queries (well under a second on stores with thousands of records; see the report).
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import ml_metadata as mlmd
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from serving.metadata import mlmd_store as ms
from serving.metadata.mlmd_records import quote
from serving.metadata.reports import is_stale

_MAX_HOPS = 8
# Executions that turn served traffic into Examples. The upstream walk stops at them: their
# inputs are an *earlier* version's lineage, reported as "trained on feedback from versions".
FEEDBACK_EXAMPLE_GEN = "FeedbackExampleGen"
_INPUTS = (pb.Event.INPUT, pb.Event.DECLARED_INPUT)
_OUTPUTS = (pb.Event.OUTPUT, pb.Event.DECLARED_OUTPUT)


def iso(ms_value: float | int | None) -> str | None:
    if not ms_value:
        return None
    moment = datetime.datetime.fromtimestamp(ms_value / 1000, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")


def _props(node) -> dict[str, Any]:
    values = {k: ms.value_of(v) for k, v in node.properties.items()}
    values.update({k: ms.value_of(v) for k, v in node.custom_properties.items()})
    return values


class MlmdLineage:
    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self.store = store
        self._now_ms = time.time() * 1000.0
        self._artifact_types = {t.id: t.name for t in store.get_artifact_types()}
        self._execution_types = {t.id: t.name for t in store.get_execution_types()}

    def _refresh_types(self, now_ms: float | None = None) -> None:
        """Per query: types may have been added, and "now" is what staleness is judged at."""
        self._now_ms = time.time() * 1000.0 if now_ms is None else now_ms
        self._artifact_types = {t.id: t.name for t in self.store.get_artifact_types()}
        self._execution_types = {t.id: t.name for t in self.store.get_execution_types()}

    # ------------------------------------------------------------------ node views
    def _artifact(self, artifact: pb.Artifact) -> dict[str, Any]:
        return {
            "id": artifact.id,
            "type": self._artifact_types.get(artifact.type_id, "?"),
            "uri": artifact.uri,
            "created": iso(artifact.create_time_since_epoch),
            "properties": _props(artifact),
        }

    def _execution(self, execution: pb.Execution) -> dict[str, Any]:
        return {
            "id": execution.id,
            "type": self._execution_types.get(execution.type_id, "?"),
            "state": pb.Execution.State.Name(execution.last_known_state),
            "started": iso(execution.create_time_since_epoch),
            "updated": iso(execution.last_update_time_since_epoch),
            "properties": _props(execution),
        }

    def _episode(self, execution: pb.Execution) -> dict[str, Any]:
        p = _props(execution)
        last_seen = max(p.get("heartbeat_ms") or 0.0, p.get("load_time_ms") or 0.0)
        stale = None
        if execution.last_known_state == pb.Execution.RUNNING:
            stale = is_stale(last_seen, p.get("heartbeat_interval_s"), self._now_ms)
        return {
            "server_id": p.get("server_id"),
            "model": p.get("model_name"),
            "version": p.get("model_version"),
            "state": pb.Execution.State.Name(execution.last_known_state),
            "loaded": iso(p.get("load_time_ms")),
            "unloaded": iso(p.get("unload_time_ms")),
            "load_latency_ms": p.get("load_latency_ms"),
            "hostname": p.get("hostname"),
            "device": p.get("device"),
            "error": p.get("error"),
            "unload_reason": p.get("unload_reason"),
            "last_heartbeat": iso(p.get("heartbeat_ms")),
            "stale": stale,
        }

    def _is_type(self, execution: pb.Execution, class_name: str) -> bool:
        """TFX names execution types by component class path (``...trainer.component.Trainer``
        or a custom ``components.pusher.component.Pusher``); match the class name."""
        return self._execution_types.get(execution.type_id, "").rsplit(".", 1)[-1] == class_name

    def _makes_feedback(self, execution: pb.Execution) -> bool:
        return self._is_type(execution, FEEDBACK_EXAMPLE_GEN) or (
            self._execution_types.get(execution.type_id) == ms.FEEDBACK_EVALUATION
        )

    def _episodes(self, condition: str) -> list[pb.Execution]:
        query = f"type = '{ms.MODEL_SERVING}' AND {condition}"
        return list(
            self.store.get_executions(
                list_options=mlmd.ListOptions(
                    filter_query=query, order_by=mlmd.OrderByField.CREATE_TIME, is_asc=True
                )
            )
        )

    # ------------------------------------------------------------------ walks
    def _upstream(self, start: pb.Artifact) -> tuple[dict, dict, list]:
        artifacts = {start.id: start}
        executions: dict[int, pb.Execution] = {}
        edges: list[tuple[str, str, str]] = []
        frontier = [start.id]
        for _ in range(_MAX_HOPS):
            if not frontier:
                break
            producing = [
                e for e in self.store.get_events_by_artifact_ids(frontier) if e.type in _OUTPUTS
            ]
            new_exec_ids = sorted({e.execution_id for e in producing} - set(executions))
            for e in producing:
                edges.append((f"e{e.execution_id}", f"a{e.artifact_id}", _key(e)))
            if not new_exec_ids:
                break
            expand = []
            for execution in self.store.get_executions_by_id(new_exec_ids):
                executions[execution.id] = execution
                if not self._makes_feedback(execution):
                    expand.append(execution.id)
            if not expand:
                break
            consumed = [
                e for e in self.store.get_events_by_execution_ids(expand) if e.type in _INPUTS
            ]
            for e in consumed:
                edges.append((f"a{e.artifact_id}", f"e{e.execution_id}", _key(e)))
            frontier = sorted({e.artifact_id for e in consumed} - set(artifacts))
            for artifact in self.store.get_artifacts_by_id(frontier):
                artifacts[artifact.id] = artifact
        return artifacts, executions, edges

    def _consumers(self, artifact_ids: list[int]) -> tuple[list[pb.Execution], list]:
        if not artifact_ids:
            return [], []
        events = [
            e for e in self.store.get_events_by_artifact_ids(artifact_ids) if e.type in _INPUTS
        ]
        edges = [(f"a{e.artifact_id}", f"e{e.execution_id}", _key(e)) for e in events]
        ids = sorted({e.execution_id for e in events})
        return (list(self.store.get_executions_by_id(ids)) if ids else []), edges

    def _outputs(self, execution_ids: list[int]) -> tuple[list[pb.Artifact], list]:
        if not execution_ids:
            return [], []
        events = [
            e for e in self.store.get_events_by_execution_ids(execution_ids) if e.type in _OUTPUTS
        ]
        edges = [(f"e{e.execution_id}", f"a{e.artifact_id}", _key(e)) for e in events]
        ids = sorted({e.artifact_id for e in events})
        return (list(self.store.get_artifacts_by_id(ids)) if ids else []), edges

    def _run_of(self, execution_id: int) -> dict[str, str | None]:
        contexts = self.store.get_contexts_by_execution(execution_id)
        by_type = {}
        for context in contexts:
            by_type.setdefault(context.type, context.name)
        return {"pipeline": by_type.get("pipeline"), "pipeline_run": by_type.get("pipeline_run")}

    def _find_pushed(self, model: str, version: str, episodes: list[pb.Execution]):
        if episodes:
            ids = sorted(
                {
                    e.artifact_id
                    for e in self.store.get_events_by_execution_ids([episodes[-1].id])
                    if e.type in _INPUTS
                }
            )
            if ids:
                return self.store.get_artifacts_by_id(ids)[0]
        candidates = self.store.get_artifacts(
            list_options=mlmd.ListOptions(
                filter_query=f"type = '{ms.PUSHED_MODEL}' AND "
                f"custom_properties.pushed_version.string_value = '{quote(version)}'"
            )
        )
        named = [
            a
            for a in candidates
            if f"/{model}/" in a.custom_properties["pushed_destination"].string_value
        ]
        chosen = named or candidates
        return max(chosen, key=lambda a: a.id) if chosen else None

    # ------------------------------------------------------------------ queries
    def version_lineage(
        self, model: str, version: str, now_ms: float | None = None
    ) -> dict[str, Any]:
        """Everything known about one served version, upstream and downstream."""
        self._refresh_types(now_ms)
        version = str(version)
        episodes = self._episodes(
            f"properties.model_name.string_value = '{quote(model)}' AND "
            f"properties.model_version.string_value = '{quote(version)}'"
        )
        pushed = self._find_pushed(model, version, episodes)
        if pushed is None:
            raise LookupError(
                f"No record of model {model!r} version {version}: it was neither pushed by a "
                "pipeline using this metadata store nor loaded by a server reporting to it."
            )
        artifacts, executions, edges = self._upstream(pushed)
        trained_on = self._trained_on_feedback(artifacts, executions, edges)
        run: dict[str, str | None] = {"pipeline": None, "pipeline_run": None}
        pusher = next((x for x in executions.values() if self._is_type(x, "Pusher")), None)
        if pusher is not None:
            run = self._run_of(pusher.id)
        # Downstream: serving episodes, feedback exports/FeedbackExampleGen, their Examples,
        # the Trainers that read those, and the versions those runs pushed.
        consumers, more = self._consumers([pushed.id])
        edges += more
        for execution in consumers:
            executions[execution.id] = execution
        feedback = [x.id for x in consumers if self._makes_feedback(x)]
        outputs, more = self._outputs(feedback)
        edges += more
        for artifact in outputs:
            artifacts[artifact.id] = artifact
        fed_back = [a.id for a in outputs if self._artifact_types.get(a.type_id) == ms.EXAMPLES]
        next_runs, more = self._consumers(fed_back)
        edges += more
        for execution in next_runs:
            executions[execution.id] = execution

        def typed(name: str) -> list[pb.Artifact]:
            return [a for a in artifacts.values() if self._artifact_types.get(a.type_id) == name]

        from_feedback = {t["id"] for t in trained_on}
        upstream_examples = [
            a for a in typed(ms.EXAMPLES) if a.id not in fed_back and a.id not in from_feedback
        ]
        trainers = [x for x in executions.values() if self._is_type(x, "Trainer")]
        return {
            "model": model,
            "version": version,
            "pushed_model": {
                **self._artifact(pushed),
                "external": bool(_props(pushed).get("is_external")) and pusher is None,
                "pushed_at": iso((_props(pushed).get("pushed_at") or 0) * 1000)
                or (iso(pusher.last_update_time_since_epoch) if pusher else None),
            },
            **run,
            "pusher": self._execution(pusher) if pusher else None,
            "trainer": [
                self._execution(t) for t in trainers if t.id not in {n.id for n in next_runs}
            ],
            "examples": [self._artifact(a) for a in upstream_examples],
            "trained_on_feedback": trained_on,
            "blessings": [
                {**self._artifact(a), "blessed": _props(a).get("blessed")}
                for a in artifacts.values()
                if self._artifact_types.get(a.type_id, "").endswith("Blessing")
            ],
            "servers": [self._episode(x) for x in episodes],
            "live_metrics": [_props(a) for a in typed(ms.LIVE_METRICS)],
            "feedback_examples": [
                {
                    **self._artifact(a),
                    **self._feedback_summary(a),
                    "consumed_by": [
                        self._next_run(x)
                        for x in next_runs
                        if any(e[0] == f"a{a.id}" and e[1] == f"e{x.id}" for e in edges)
                    ],
                }
                for a in artifacts.values()
                if a.id in fed_back
            ],
            "graph": {
                "artifacts": [self._artifact(a) for a in artifacts.values()],
                "executions": [self._execution(x) for x in executions.values()],
                "edges": sorted(set(edges)),
            },
        }

    def _feedback_summary(self, examples: pb.Artifact) -> dict[str, Any]:
        """Span, rows and source versions of feedback Examples (FeedbackExampleGen's custom
        properties; for an export, its FeedbackEvaluation's ``model_version`` list)."""
        p = _props(examples)
        versions = p.get("feedback_versions")
        if versions is not None:
            versions = json.loads(versions)
        else:
            producers = [
                x
                for x in self.store.get_executions_by_id(
                    sorted(
                        {
                            e.execution_id
                            for e in self.store.get_events_by_artifact_ids([examples.id])
                            if e.type in _OUTPUTS
                        }
                    )
                )
                if self._makes_feedback(x)
            ]
            listed = ",".join(_props(x).get("model_version") or "" for x in producers)
            versions = sorted({v for v in listed.split(",") if v})
        return {
            "span": p.get("span"),
            "num_examples": p.get("num_examples"),
            "versions": versions,
        }

    def _trained_on_feedback(self, artifacts: dict, executions: dict, edges: list) -> list:
        """Feedback Examples in a version's upstream: made by a feedback execution."""
        makers = {f"e{x.id}" for x in executions.values() if self._makes_feedback(x)}
        made = {int(target[1:]) for source, target, _ in edges if source in makers}
        return [
            {"id": a.id, "uri": a.uri, **self._feedback_summary(a)}
            for a in artifacts.values()
            if a.id in made and self._artifact_types.get(a.type_id) == ms.EXAMPLES
        ]

    def _next_run(self, trainer: pb.Execution) -> dict[str, Any]:
        """A Trainer that read feedback, its pipeline run and the versions that run pushed."""
        run = self._run_of(trainer.id)
        pushed: list[str] = []
        if run["pipeline_run"]:
            pushed = sorted(
                a.custom_properties["pushed_version"].string_value
                for a in self.store.get_artifacts(
                    list_options=mlmd.ListOptions(
                        filter_query=f"type = '{ms.PUSHED_MODEL}' AND contexts_r.type = "
                        f"'pipeline_run' AND contexts_r.name = '{quote(run['pipeline_run'])}'"
                    )
                )
                if a.custom_properties["pushed"].int_value == 1
            )
        return {**self._execution(trainer), **run, "pushed_versions": pushed}

    def served_versions(self, model: str, now_ms: float | None = None) -> list[dict[str, Any]]:
        """Every version of ``model`` ever loaded, with servers, periods and live metrics.

        ``live_on`` lists servers with a RUNNING load that is not stale; ``stale_on`` those
        whose server stopped sending heartbeats (see ``reports.is_stale``)."""
        self._refresh_types(now_ms)
        episodes = self._episodes(f"properties.model_name.string_value = '{quote(model)}'")
        metrics = self.store.get_artifacts(
            list_options=mlmd.ListOptions(
                filter_query=f"type = '{ms.LIVE_METRICS}' AND "
                f"properties.model_name.string_value = '{quote(model)}'"
            )
        )
        versions: dict[str, dict[str, Any]] = {}
        for execution in episodes:
            view = self._episode(execution)
            entry = versions.setdefault(
                view["version"],
                {
                    "version": view["version"],
                    "first_loaded": view["loaded"],
                    "episodes": 0,
                    "servers": [],
                    "live_on": [],
                    "stale_on": [],
                    "last_unloaded": None,
                    "failed": 0,
                },
            )
            entry["episodes"] += 1
            if view["server_id"] not in entry["servers"]:
                entry["servers"].append(view["server_id"])
            if view["state"] == "RUNNING":
                where = entry["stale_on"] if view["stale"] else entry["live_on"]
                if view["server_id"] not in where:
                    where.append(view["server_id"])
            if view["state"] == "FAILED":
                entry["failed"] += 1
            entry["first_loaded"] = entry["first_loaded"] or view["loaded"]
            entry["last_unloaded"] = view["unloaded"] or entry["last_unloaded"]
        for artifact in metrics:
            p = _props(artifact)
            if p.get("model_version") in versions:
                versions[p["model_version"]].setdefault("live_metrics", []).append(p)
        return sorted(
            versions.values(), key=lambda v: int(v["version"]) if v["version"].isdigit() else 0
        )

    def server_history(self, server_id: str, now_ms: float | None = None) -> dict[str, Any]:
        """A server's loads; ``stale`` when its heartbeats stopped (died without restarting,
        or cut off from the store): its RUNNING loads are then listed under ``stale``."""
        self._refresh_types(now_ms)
        context = self.store.get_context_by_type_and_name(ms.SERVER_CONTEXT, server_id)
        if context is None:
            raise LookupError(f"No server {server_id!r} has reported to this metadata store")
        episodes = self._episodes(f"properties.server_id.string_value = '{quote(server_id)}'")
        views = [self._episode(x) for x in episodes]
        props = _props(context)
        return {
            "server_id": server_id,
            "hostname": props.get("hostname"),
            "runtime_version": props.get("runtime_version"),
            "started": iso(props.get("started_at_ms")),
            "last_heartbeat": iso(props.get("heartbeat_ms")),
            "heartbeat_interval_s": props.get("heartbeat_interval_s"),
            "stale": is_stale(
                props.get("heartbeat_ms"), props.get("heartbeat_interval_s"), self._now_ms
            ),
            "episodes": views,
            "live": [v for v in views if v["state"] == "RUNNING" and not v["stale"]],
            "stale_loads": [v for v in views if v["state"] == "RUNNING" and v["stale"]],
        }

    def version_diff(self, model: str, first: str, second: str) -> dict[str, Any]:
        a, b = self.version_lineage(model, first), self.version_lineage(model, second)

        def facts(view: dict[str, Any]) -> dict[str, Any]:
            return {
                "pipeline_run": view["pipeline_run"],
                "pushed_at": view["pushed_model"]["pushed_at"],
                "trainer": [t["id"] for t in view["trainer"]],
                "examples": sorted(e["uri"] for e in view["examples"]),
                "feedback_from": sorted(
                    {v for f in view["trained_on_feedback"] for v in f["versions"]}
                ),
                "blessings": sorted(f"{x['type']}={x['blessed']}" for x in view["blessings"]),
                "servers": sorted({s["server_id"] for s in view["servers"]}),
                "manifest_digest": view["pushed_model"]["properties"].get("manifest_digest"),
            }

        fa, fb = facts(a), facts(b)
        return {
            "model": model,
            "versions": [first, second],
            "fields": [
                {"field": k, first: fa[k], second: fb[k], "same": fa[k] == fb[k]} for k in fa
            ],
        }


def _key(event: pb.Event) -> str:
    return event.path.steps[0].key if event.path.steps else ""
