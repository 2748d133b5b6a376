"""What a key, user or team spent in a budget window so far, from the auth service's spend log: the
seed of a budget counter Redis does not have (a new window, or Redis restarted without its data)."""

from __future__ import annotations

import grpc

from iir.v1 import auth_pb2, auth_pb2_grpc

NANO = 1_000_000_000


class SpendHistory:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 5.0) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._timeout_s = timeout_s

    async def spent_since(self, scope_kind: str, scope_id: str, since_s: int) -> tuple[int, int]:
        """(nano-USD, tokens) spent by the scope from `since_s` (Unix seconds) on; grpc.aio.AioRpcError
        when the auth service cannot answer."""
        reply = await self._stub.SpendSince(
            auth_pb2.SpendSinceRequest(scope_kind=scope_kind, scope_id=scope_id, since_ms=since_s * 1000),
            timeout=self._timeout_s,
        )
        return round(reply.cost * NANO), int(reply.tokens)
