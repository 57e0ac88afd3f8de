"""Both emulators for the whole session; every test gets its own prefix in the bucket."""

from __future__ import annotations

import uuid

import pytest

from tests.support.emulators import Emulator, apply_env, restore_env, start_emulator
from tests.support.models import write_half_plus_two


@pytest.fixture(scope="session")
def emulators(tmp_path_factory) -> dict[str, Emulator]:
    started: dict[str, Emulator] = {}
    saved = []
    try:
        for scheme in ("gs", "s3"):
            started[scheme] = start_emulator(scheme, tmp_path_factory.mktemp(f"{scheme}-emulator"))
            saved.append(apply_env(started[scheme]))
        yield started
    finally:
        for previous in saved:
            restore_env(previous)
        for emulator in started.values():
            emulator.stop()


@pytest.fixture(params=["gs", "s3"])
def emulator(request, emulators) -> Emulator:
    return emulators[request.param]


@pytest.fixture
def base_uri(emulator, request) -> str:
    """A fresh model base URI (``<scheme>://models/<test>-<id>/m``) in the emulator's bucket."""
    name = request.node.name.split("[")[0].replace("_", "-")[:40]
    return emulator.uri(f"{name}-{uuid.uuid4().hex[:8]}", "m")


@pytest.fixture(scope="session")
def half_plus_two_dirs(tmp_path_factory) -> dict[float, str]:
    """Local SavedModels y = 0.5 x + b for b in (2, 3, 4): outputs tell versions apart."""
    root = tmp_path_factory.mktemp("models")
    return {b: write_half_plus_two(str(root / f"b{b:g}"), b=b) for b in (2.0, 3.0, 4.0)}


# The component tests' tiny Trainer model and ExampleGen output, for bucket pipeline roots.
from tests.components.conftest import (  # noqa: E402, F401
    examples_uri,
    make_saved_model,
    trained_model_uri,
)
