"""A throwaway CA with server and client certificates, for TLS and mTLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pem:
    key: bytes
    cert: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool, sans=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class TestPki:
    ca: Pem
    server: Pem
    client: Pem


def make_pki() -> TestPki:
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca_cert = _cert("test-ca", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server_cert = _cert(
        "localhost",
        server_key,
        ca_name,
        ca_key,
        ca=False,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert = _cert("client", client_key, ca_name, ca_key, ca=False)

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    return TestPki(
        Pem(_key_pem(ca_key), pem(ca_cert)),
        Pem(_key_pem(server_key), pem(server_cert)),
        Pem(_key_pem(client_key), pem(client_cert)),
    )


def ssl_config_text(pki: TestPki, client_verify: bool) -> str:
    """A TF Serving SSLConfig text proto holding the PEM contents."""

    def quoted(data: bytes) -> str:
        return '"' + data.decode().replace("\n", "\\n") + '"'

    return (
        f"server_key: {quoted(pki.server.key)}\n"
        f"server_cert: {quoted(pki.server.cert)}\n"
        f"custom_ca: {quoted(pki.ca.cert)}\n"
        f"client_verify: {'true' if client_verify else 'false'}\n"
    )
