"""The request rules both front ends share (serving.api.request_context)."""

from __future__ import annotations

import asyncio

from serving.api import request_context
from serving.security.auth import TokenAuthenticator


def test_probes_need_no_token_unless_protected_and_everything_else_does():
    open_probes = TokenAuthenticator(frozenset({b"t"}))
    protected = TokenAuthenticator(frozenset({b"t"}), protect_probes=True)
    no_tokens = TokenAuthenticator(frozenset())
    probes = ["/healthz", "/readyz", "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"]
    calls = ["/v1/models/m:predict", "/tensorflow.serving.PredictionService/Predict", "/metrics"]
    assert [request_context.needs_token(open_probes, p) for p in probes] == [False] * 4
    assert [request_context.needs_token(protected, p) for p in probes] == [True] * 4
    assert [request_context.needs_token(open_probes, c) for c in calls] == [True] * 3
    assert not any(request_context.needs_token(no_tokens, t) for t in probes + calls)


class _Latencies:
    def __init__(self) -> None:
        self.samples: list[tuple[str, str, str]] = []

    def record_request_latency(self, model: str, api: str, entrypoint: str, seconds: float):
        assert seconds >= 0
        self.samples.append((model, api, entrypoint))


def test_each_call_has_its_own_context_id_and_latency_sample():
    metrics = _Latencies()

    async def one(entrypoint: str, client_id: str | None) -> str:
        call = request_context.begin(entrypoint, client_id, metrics)
        await asyncio.sleep(0)  # the other call runs in between
        assert request_context.call() is call
        assert request_context.current.get() == call.request_id
        call.succeeded("m", "predict")
        return call.request_id

    async def both() -> list[str]:
        return await asyncio.gather(one("REST", "client-1"), one("GRPC", "bad id!"))

    client, generated = asyncio.run(both())
    assert client == "client-1"
    assert len(generated) == 32 and generated != "bad id!"
    assert sorted(metrics.samples) == [("m", "predict", "GRPC"), ("m", "predict", "REST")]
