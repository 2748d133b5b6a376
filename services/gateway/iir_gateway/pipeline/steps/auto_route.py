"""Step 4: `model: "auto"` (or `auto/<policy>`) becomes the model the classifier's policy chooses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.routing.auto_router import Route, is_auto


class Router(Protocol):
    async def choose(self, name: str, body: dict[str, Any], may_use: Callable[[str], bool]) -> Route: ...


class AutoRoute(Step):
    name = "auto_route"

    def __init__(self, router: Router) -> None:
        self.router = router

    async def before(self, ctx: RequestContext) -> Answer | None:
        if is_auto(ctx.model):
            principal = ctx.principal
            route = await self.router.choose(ctx.model, ctx.body, principal.may_use if principal else lambda _: True)
            ctx.model = route.model
            ctx.response_headers["x-iir-route"] = route.header
        return None
