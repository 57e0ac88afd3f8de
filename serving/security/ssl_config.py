"""``--ssl_config_file``: TF Serving's ``SSLConfig`` text proto, for both front ends.

The message comes from :mod:`serving.config_protos` (the wheel lacks ``ssl_config.proto``);
files written for ``tensorflow_model_server`` parse unchanged. TF Serving applies it to gRPC
only (its issue #1503); here REST is served over the same TLS settings.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from serving.config_protos import SSLConfig, read_text_proto
from serving.errors import ConfigError


class SSLConfigError(ConfigError):
    """The SSL config cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class TlsSettings:
    """PEM contents (as TF Serving's SSLConfig holds them, not file paths)."""

    server_key: bytes
    server_cert: bytes
    custom_ca: bytes | None
    client_verify: bool


def read_ssl_config(path: str) -> TlsSettings:
    config = read_text_proto(path, SSLConfig(), SSLConfigError)
    if not config.server_key or not config.server_cert:
        raise SSLConfigError(f"{path}: server_key and server_cert (PEM contents) are required")
    if config.client_verify and not config.custom_ca:
        raise SSLConfigError(
            f"{path}: client_verify needs custom_ca (the CA that signs client certificates)"
        )
    settings = TlsSettings(
        config.server_key.encode(),
        config.server_cert.encode(),
        config.custom_ca.encode() or None,
        config.client_verify,
    )
    check_tls(settings)
    return settings


@dataclass(frozen=True)
class PemFiles:
    key: str
    cert: str
    ca: str | None


def write_pem_files(settings: TlsSettings, directory: str) -> PemFiles:
    """The PEM contents as owner-only files, for libraries (ssl, uvicorn) that want paths."""
    os.chmod(directory, 0o700)
    paths: dict[str, str | None] = {"ca": None}
    for name, data in (
        ("key", settings.server_key),
        ("cert", settings.server_cert),
        ("ca", settings.custom_ca),
    ):
        if data:
            paths[name] = os.path.join(directory, f"{name}.pem")
            with open(os.open(paths[name], os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
                handle.write(data)
    return PemFiles(**paths)


def check_tls(settings: TlsSettings) -> None:
    """Loads key, certificate and CA once, so a bad file stops the server at startup."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="tfx-model-server-tls-") as private:
        files = write_pem_files(settings, private)
        try:
            context.load_cert_chain(files.cert, files.key)
        except ssl.SSLError as exc:
            raise SSLConfigError(f"server_key/server_cert cannot be used: {exc}") from exc
        if files.ca:
            try:
                context.load_verify_locations(files.ca)
            except ssl.SSLError as exc:
                raise SSLConfigError(f"custom_ca cannot be used: {exc}") from exc
