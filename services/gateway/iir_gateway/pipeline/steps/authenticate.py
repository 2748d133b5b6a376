"""Step 1: who is calling. A job's owner was authenticated when it was queued (`ctx.principal` is set)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.principal import Principal


class KeyCheck(Protocol):
    async def authenticate(self, headers: Mapping[str, str], client_ip: str) -> Principal:
        """The key's principal; APIError 401 (or 429 past the failed-attempt limit) otherwise."""
        ...


class Authenticate(Step):
    name = "authenticate"

    def __init__(self, keys: KeyCheck) -> None:
        self.keys = keys

    async def before(self, ctx: RequestContext) -> Answer | None:
        if ctx.principal is None:
            ctx.principal = await self.keys.authenticate(ctx.headers, ctx.client_ip)
        return None
