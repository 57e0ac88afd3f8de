"""Fixtures for the metadata tests: a private real MariaDB server and PostgreSQL cluster."""

from __future__ import annotations

import os

import pytest

from tests.metadata.mariadb import MariaDB
from tests.metadata.mariadb import ensure_installed as ensure_mariadb
from tests.metadata.postgres import PostgreSQL
from tests.metadata.postgres import ensure_installed as ensure_postgres


def _missing(what: str, script: str, package: str) -> None:
    message = (
        f"{what} not installed and not root to install it: run scripts/{script} as root "
        f"(apt-get install {package})" + ("" if os.geteuid() == 0 else f" (uid {os.geteuid()})")
    )
    if os.environ.get("CI"):  # CI must exercise the real database, never skip it
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mariadb_server():
    binary = ensure_mariadb()
    if binary is None:
        _missing("MariaDB server", "ensure_mariadb.sh", "mariadb-server")
    server = MariaDB(binary)
    try:
        server.start()
        server.create_user()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgresql_server():
    """The cluster; its password reaches every client (this process, servers and workers it
    starts) through ``$TFX_SERVING_METADATA_PASSWORD`` while the session runs."""
    bin_dir = ensure_postgres()
    if bin_dir is None:
        _missing("PostgreSQL", "ensure_postgres.sh", "postgresql")
    server = PostgreSQL(bin_dir)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.environment.items():
            patch.setenv(key, value)
        try:
            server.start()
            yield server
        finally:
            server.destroy()
