"""Fixtures for the metadata tests: a private real MariaDB server."""

from __future__ import annotations

import os

import pytest

from tests.metadata.mariadb import MariaDB, ensure_installed


@pytest.fixture(scope="session")
def mariadb():
    binary = ensure_installed()
    if binary is None:
        message = (
            "MariaDB server not installed and not root to install it: run "
            "scripts/ensure_mariadb.sh as root (apt-get install mariadb-server)"
            + ("" if os.geteuid() == 0 else f" (uid {os.geteuid()})")
        )
        if os.environ.get("CI"):  # CI must exercise the real database, never skip it
            pytest.fail(message)
        pytest.skip(message)
    server = MariaDB(binary)
    try:
        server.start()
        server.create_user()
        yield server
    finally:
        server.destroy()
