"""Step 5: the model's name is one IIR serves, and the key may use it. An `auto` name is checked once a
model is chosen for it: by AutoRoute, before this step, or when a queued job runs. The name is parsed
here, once: the later steps read `ctx.served`."""

from __future__ import annotations

from typing import Protocol

from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.principal import Principal
from iir_gateway.providers.directory import ServedModel
from iir_gateway.routing.auto_router import is_auto


class AccessPolicy(Protocol):
    def check_access(self, model: str, principal: Principal) -> ServedModel:
        """The model, parsed; APIError 404 for a name no provider serves, 403 when the key may not use it."""
        ...


class Access(Step):
    name = "access"

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy

    async def before(self, ctx: RequestContext) -> Answer | None:
        assert ctx.principal is not None
        if not is_auto(ctx.model):
            ctx.served = self.policy.check_access(ctx.model, ctx.principal)
        return None
