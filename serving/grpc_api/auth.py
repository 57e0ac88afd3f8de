"""Bearer-token check for every gRPC call (the REST front end checks the same tokens)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from serving.api import request_context
from serving.security.auth import TokenAuthenticator


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without a valid ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, authenticator: TokenAuthenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if request_context.needs_token(self._authenticator, details.method):
            metadata = dict(details.invocation_metadata or ())
            value = metadata.get("authorization")
            reason = self._authenticator.check(
                value.encode("latin-1") if isinstance(value, str) else value
            )
            if reason is not None:
                return _rejection(reason)
        return await continuation(details)


def _rejection(reason: str) -> grpc.RpcMethodHandler:
    async def abort(_request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    # Unary-unary covers every PredictionService/ModelService method; the request is
    # left unparsed (no deserializer), so a rejected call costs no decoding.
    return grpc.unary_unary_rpc_method_handler(abort)
