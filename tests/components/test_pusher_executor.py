"""Pusher executor, in the style of TFX's pusher/executor_test.py but with real SavedModels."""

from __future__ import annotations

import logging
import os
import re

import pytest
from tfx.dsl.components.base import base_executor
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import model_store
from components.manifest import Manifest, ManifestMismatchError, build_manifest, manifest_path_for
from components.pusher import executor
from components.summary import LOGGER_NAME as SUMMARY_LOGGER


def _destination(base: str, versioning: int = pusher_pb2.Versioning.AUTO) -> str:
    return proto_utils.proto_to_json(
        pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=base, versioning=versioning
            )
        )
    )


@pytest.fixture
def env(tmp_path, trained_model_uri):
    model = standard_artifacts.Model()
    model.uri = trained_model_uri
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed_model")
    os.makedirs(pushed.uri)
    store = str(tmp_path / "store")
    ctx = base_executor.BaseExecutor.Context(tmp_dir=str(tmp_path / "tmp"), unique_id="1")
    return {
        "model": model,
        "pushed": pushed,
        "store": store,
        "executor": executor.Executor(ctx),
        "exec_properties": {"push_destination": _destination(store)},
    }


def _blessing(kind, blessed) -> standard_artifacts.ModelBlessing:
    artifact = kind()
    artifact.set_int_custom_property("blessed", blessed)
    return artifact


def _do(env, **inputs):
    env["executor"].Do(
        {"model": [env["model"]], **{k: [v] for k, v in inputs.items()}},
        {"pushed_model": [env["pushed"]]},
        env["exec_properties"],
    )
    return env["pushed"]


def test_blessed_model_is_published_with_stock_and_extra_properties(env):
    pushed = _do(
        env,
        model_blessing=_blessing(standard_artifacts.ModelBlessing, 1),
        infra_blessing=_blessing(standard_artifacts.InfraBlessing, 1),
    )

    assert pushed.get_int_custom_property("pushed") == 1
    version = pushed.get_string_custom_property("pushed_version")
    assert version.isdigit()
    destination = pushed.get_string_custom_property("pushed_destination")
    assert destination == os.path.join(env["store"], version)
    assert pushed.get_int_custom_property("pushed_at") > 0
    source = os.path.join(env["model"].uri, "Format-Serving")
    manifest = build_manifest(source)
    assert pushed.get_string_custom_property("manifest_digest") == manifest.digest
    manifest.verify(destination)
    assert Manifest.read(os.path.join(pushed.uri, "manifest.json")) == manifest
    assert os.listdir(env["store"]) == [version]


@pytest.mark.parametrize(
    "blessing",
    [
        lambda: {"model_blessing": _blessing(standard_artifacts.ModelBlessing, 0)},
        lambda: {"infra_blessing": _blessing(standard_artifacts.InfraBlessing, 0)},
    ],
)
def test_unblessed_model_is_a_successful_not_pushed_execution(env, blessing, caplog):
    with caplog.at_level(logging.INFO, logger=SUMMARY_LOGGER):
        pushed = _do(env, **blessing())

    assert pushed.get_int_custom_property("pushed") == 0
    assert not os.path.exists(env["store"])
    [line] = _summaries(caplog)
    assert re.fullmatch(
        r"Pusher: NOT PUSHED: the model was not blessed by the "
        r"(Evaluator/model validation|InfraValidator) \(.*\)",
        line,
    ), line


def test_blessing_round_tripped_as_float_on_kubeflow_is_honoured(env):
    blessing = standard_artifacts.ModelBlessing()
    # What the KFP v2 entrypoint rebuilds from ExecutorInput metadata: a JSON number.
    blessing.mlmd_artifact.custom_properties["blessed"].struct_value.update({"__value__": 1.0})

    assert _do(env, model_blessing=blessing).get_int_custom_property("pushed") == 1


def test_two_pushes_in_one_second_create_two_versions(env):
    first = _do(env).get_string_custom_property("pushed_version")
    second = _do(env).get_string_custom_property("pushed_version")

    assert int(second) > int(first)
    assert sorted(os.listdir(env["store"])) == [first, second]


def test_exporter_manifest_is_enforced(env):
    source = os.path.join(env["model"].uri, "Format-Serving")
    build_manifest(source).write(manifest_path_for(source))
    with open(os.path.join(source, "saved_model.pb"), "ab") as f:
        f.write(b"modified after export")

    with pytest.raises(ManifestMismatchError, match=r"saved_model\.pb"):
        _do(env)
    assert os.listdir(env["store"]) == []


def test_crash_mid_push_leaves_no_partial_version_and_next_push_succeeds(env, monkeypatch):
    real_copy = model_store._copy_file
    calls = []

    def crash_on_third_file(src, dst):
        calls.append(src)
        if len(calls) == 3:
            raise RuntimeError("injected crash")
        real_copy(src, dst)

    monkeypatch.setattr(model_store, "_copy_file", crash_on_third_file)
    with pytest.raises(RuntimeError, match="injected crash"):
        _do(env)
    assert os.listdir(env["store"]) == []

    monkeypatch.setattr(model_store, "_copy_file", real_copy)
    pushed = _do(env)
    assert os.listdir(env["store"]) == [pushed.get_string_custom_property("pushed_version")]


def test_retention_keeps_last_n_versions_and_says_so(env, caplog):
    env["exec_properties"]["keep_last_versions"] = 2
    with caplog.at_level(logging.INFO, logger=SUMMARY_LOGGER):
        versions = [_do(env).get_string_custom_property("pushed_version") for _ in range(3)]

    assert sorted(os.listdir(env["store"])) == versions[1:]
    manifest = build_manifest(os.path.join(env["model"].uri, "Format-Serving"))
    size_mib = sum(e.size for e in manifest.files.values()) / (1 << 20)
    first, second, third = _summaries(caplog)
    assert first == (
        f"Pusher: pushed version {versions[0]} to {env['store']}; store holds versions "
        f"[{versions[0]}], removed nothing (keep_last_versions=2); manifest digest "
        f"{manifest.digest[:12]}, {len(manifest.files)} files, {size_mib:.1f} MiB"
    )
    assert (
        f"; store holds versions [{versions[0]}, {versions[1]}], removed nothing "
        "(keep_last_versions=2);"
    ) in second
    assert (
        f"; store holds versions [{versions[1]}, {versions[2]}], removed [{versions[0]}] "
        "(keep_last_versions=2);"
    ) in third


def _summaries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SUMMARY_LOGGER]


def test_missing_push_destination_says_what_to_write(env):
    del env["exec_properties"]["push_destination"]

    with pytest.raises(ValueError, match=r"push_destination=tfx\.proto\.PushDestination\("):
        _do(env)


def test_pushes_stamped_model_from_infra_blessing(env, make_saved_model, tmp_path):
    infra = _blessing(standard_artifacts.InfraBlessing, 1)
    infra.uri = str(tmp_path / "blessing")
    make_saved_model(os.path.join(infra.uri, "stamped_model"))
    infra.set_int_custom_property("has_model", 1)

    env["executor"].Do(
        {"infra_blessing": [infra]}, {"pushed_model": [env["pushed"]]}, env["exec_properties"]
    )

    destination = env["pushed"].get_string_custom_property("pushed_destination")
    build_manifest(os.path.join(infra.uri, "stamped_model")).verify(destination)


@pytest.mark.parametrize(
    ("push_destination", "error", "match"),
    [
        ("{}", NotImplementedError, "is not supported"),
        (_destination("/tmp/x", versioning=7), NotImplementedError, "Invalid Versioning"),
        (_destination("hdfs://namenode/m"), ValueError, "neither a POSIX path"),
    ],
)
def test_unsupported_destinations_fail_with_guidance(env, push_destination, error, match):
    env["exec_properties"]["push_destination"] = push_destination

    with pytest.raises(error, match=match):
        _do(env)
