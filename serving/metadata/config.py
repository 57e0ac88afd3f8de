"""Metadata connection specs: one string a flag or a CLI can carry, MLMD's proto built lazily.

Accepted forms (the MLMD backend builds a ``ConnectionConfig`` from them)::

    sqlite:///abs/path/metadata.sqlite       (or a bare path ending in .sqlite/.db)
    mysql://user:password@host:3306/database?socket=/run/mysqld/mysqld.sock
    postgresql://user:password@host:5432/dbname

A string keeps serving's flags free of ``ml_metadata`` imports; passwords may instead come from
``$TFX_SERVING_METADATA_PASSWORD`` so they stay out of ``ps`` output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from serving.errors import ConfigError

PASSWORD_ENV = "TFX_SERVING_METADATA_PASSWORD"
_SCHEMES = ("sqlite", "mysql", "mariadb", "postgresql", "postgres")


class MetadataConfigError(ConfigError):
    """A connection spec that cannot work; the message shows a valid form."""


@dataclass(frozen=True)
class ConnectionSpec:
    kind: str  # sqlite | mysql | postgresql
    path: str = ""
    host: str = ""
    port: int = 0
    database: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    socket: str = ""

    def describe(self) -> str:
        """For logs and errors: never includes the password."""
        if self.kind == "sqlite":
            return f"sqlite:{self.path}"
        where = self.socket or f"{self.host}:{self.port}"
        return f"{self.kind}://{self.user}@{where}/{self.database}"

    def as_argument(self) -> str:
        """The spec as a string for the worker's command line (password via the environment)."""
        if self.kind == "sqlite":
            return f"sqlite://{self.path}"
        query = f"?socket={self.socket}" if self.socket else ""
        return f"{self.kind}://{self.user}@{self.host}:{self.port}/{self.database}{query}"


def parse_connection(text: str, environ: dict[str, str] | None = None) -> ConnectionSpec:
    environ = dict(os.environ) if environ is None else environ
    text = text.strip()
    if not text:
        raise MetadataConfigError("Empty metadata connection; e.g. sqlite:///data/mlmd.sqlite")
    if "://" not in text:
        if text.endswith((".sqlite", ".db", ".sqlite3")):
            return ConnectionSpec("sqlite", path=os.path.abspath(text))
        raise MetadataConfigError(
            f"Cannot read metadata connection {text!r}: use sqlite:///path/to/mlmd.sqlite, "
            "mysql://user:password@host:3306/db or postgresql://user:password@host:5432/db"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise MetadataConfigError(
            f"Unknown metadata backend {scheme!r} in {text!r}; use one of sqlite, mysql, "
            "mariadb, postgresql"
        )
    if scheme == "sqlite":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise MetadataConfigError("sqlite:// needs a file path: sqlite:///data/mlmd.sqlite")
        return ConnectionSpec("sqlite", path=os.path.abspath(path))
    kind = "mysql" if scheme in ("mysql", "mariadb") else "postgresql"
    query = parse_qs(parts.query)
    database = parts.path.lstrip("/")
    if not database:
        raise MetadataConfigError(f"{text!r} names no database: add /<database> after host:port")
    return ConnectionSpec(
        kind,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (3306 if kind == "mysql" else 5432),
        database=database,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or "") or environ.get(PASSWORD_ENV, ""),
        socket=query.get("socket", [""])[0],
    )
