"""Bearer-token authentication shared by the REST and gRPC front ends.

Tokens come from a file (one per line, ``#`` comments) and/or an environment variable
(comma-separated), so they can be mounted from a Kubernetes Secret. Comparison is constant
time. Which calls need a token (health probes are exempt by default, so kubelet needs none) is
one rule for both front ends: :func:`serving.api.request_context.needs_token`.
"""

from __future__ import annotations

import hmac
import os

from serving.errors import ConfigError

AUTH_ENV = "TFX_MODEL_SERVER_AUTH_TOKENS"


class AuthConfigError(ConfigError):
    """The token source is unusable; the message names it."""


def load_tokens(token_file: str, environ: dict[str, str] | None = None) -> frozenset[bytes]:
    environ = dict(os.environ) if environ is None else environ
    tokens: set[str] = set()
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                for line in handle:
                    line = line.split("#", 1)[0].strip()
                    if line:
                        tokens.add(line)
        except OSError as exc:
            raise AuthConfigError(f"Cannot read --auth_token_file {token_file}: {exc}") from exc
        if not tokens:
            raise AuthConfigError(f"--auth_token_file {token_file} contains no token")
    tokens.update(t.strip() for t in environ.get(AUTH_ENV, "").split(",") if t.strip())
    return frozenset(t.encode() for t in tokens)


class TokenAuthenticator:
    """Checks an ``authorization`` value against the configured tokens."""

    def __init__(self, tokens: frozenset[bytes], protect_probes: bool = False) -> None:
        self._tokens = tokens
        self.protect_probes = protect_probes

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: bytes | None) -> str | None:
        """None when allowed, else the reason (the message the client gets)."""
        if not self._tokens:
            return None
        if not authorization:
            return "Missing bearer token: send 'Authorization: Bearer <token>'"
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return "Malformed Authorization header: expected 'Bearer <token>'"
        token = token.strip()
        if not any(hmac.compare_digest(token, known) for known in self._tokens):
            return "Invalid bearer token"
        return None
