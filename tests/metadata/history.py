"""A known TFX-shaped history written with MLMD's API (as TFX 1.16 records it, tfx.md §6)."""

from __future__ import annotations

from ml_metadata.proto import metadata_store_pb2 as pb

TRAINER = "tfx.components.trainer.component.Trainer"
PUSHER = "components.pusher.component.Pusher"


def _type_id(store, kind: str, name: str, base=None) -> int:
    if kind == "artifact":
        t = pb.ArtifactType(name=name)
        if base is not None:
            t.base_type = base
        return store.put_artifact_type(t, can_add_fields=True, can_omit_fields=True)
    if kind == "execution":
        t = pb.ExecutionType(name=name)
        if base is not None:
            t.base_type = base
        return store.put_execution_type(t, can_add_fields=True, can_omit_fields=True)
    return store.put_context_type(pb.ContextType(name=name), can_add_fields=True)


def _event(kind: int, key: str) -> pb.Event:
    event = pb.Event(type=kind)
    event.path.steps.add().key = key
    event.path.steps.add().index = 0
    return event


def seed_run(store, run_id: str, version: str, destination: str, examples_id: int | None = None):
    """Examples -> Trainer -> Model -> Pusher -> PushedModel in pipeline run ``run_id``.

    Returns (pushed_model_id, trainer_execution_id, examples_id)."""
    examples_type = store.put_artifact_type(
        _examples_type(), can_add_fields=True, can_omit_fields=True
    )
    contexts = [
        pb.Context(type_id=_type_id(store, "context", "pipeline"), name="demo-pipeline"),
        pb.Context(type_id=_type_id(store, "context", "pipeline_run"), name=run_id),
    ]
    if examples_id is None:
        examples = pb.Artifact(
            type_id=examples_type, uri=f"/pr/examples/{run_id}", state=pb.Artifact.LIVE
        )
        examples.properties["split_names"].string_value = '["train", "eval"]'
        [examples_id] = store.put_artifacts([examples])
    model = pb.Artifact(
        type_id=_type_id(store, "artifact", "Model", pb.ArtifactType.MODEL),
        uri=f"/pr/model/{run_id}",
        state=pb.Artifact.LIVE,
    )
    trainer = pb.Execution(
        type_id=_type_id(store, "execution", TRAINER, pb.ExecutionType.TRAIN),
        last_known_state=pb.Execution.COMPLETE,
    )
    [examples_artifact] = store.get_artifacts_by_id([examples_id])
    trainer_id, (_, model_id), _ = store.put_execution(
        trainer,
        [
            (examples_artifact, _event(pb.Event.INPUT, "examples")),
            (model, _event(pb.Event.OUTPUT, "model")),
        ],
        contexts,
        reuse_context_if_already_exist=True,
    )
    blessing = pb.Artifact(
        type_id=_type_id(store, "artifact", "InfraBlessing"), uri=f"/pr/blessing/{run_id}"
    )
    blessing.custom_properties["blessed"].int_value = 1
    pushed = pb.Artifact(
        type_id=_type_id(store, "artifact", "PushedModel", pb.ArtifactType.MODEL),
        uri=f"/pr/pushed/{run_id}",
        state=pb.Artifact.LIVE,
    )
    pushed.custom_properties["pushed"].int_value = 1
    pushed.custom_properties["pushed_destination"].string_value = destination
    pushed.custom_properties["pushed_version"].string_value = version
    [model_artifact] = store.get_artifacts_by_id([model_id])
    _, (_, _, pushed_id), _ = store.put_execution(
        pb.Execution(
            type_id=_type_id(store, "execution", PUSHER, pb.ExecutionType.DEPLOY),
            last_known_state=pb.Execution.COMPLETE,
        ),
        [
            (model_artifact, _event(pb.Event.INPUT, "model")),
            (blessing, _event(pb.Event.INPUT, "infra_blessing")),
            (pushed, _event(pb.Event.OUTPUT, "pushed_model")),
        ],
        contexts,
        reuse_context_if_already_exist=True,
    )
    return pushed_id, trainer_id, examples_id


def _examples_type() -> pb.ArtifactType:
    t = pb.ArtifactType(name="Examples", base_type=pb.ArtifactType.DATASET)
    t.properties["span"] = pb.INT
    t.properties["version"] = pb.INT
    t.properties["split_names"] = pb.STRING
    return t
