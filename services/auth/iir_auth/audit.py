"""Recording admin actions: the actor is the calling gateway's `iir-actor` metadata (the admin key's id)."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from iir_auth.storage.audit_store import AuditStore

log = logging.getLogger(__name__)


def actor(context: grpc.aio.ServicerContext) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == "iir-actor":
            return str(value)[:200]
    return "grpc"


class Audited:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    async def record(
        self, context: grpc.aio.ServicerContext, action: str, target: str, before: Any, after: Any
    ) -> None:
        try:
            await self.store.record(actor(context), action, target, before, after)
        except Exception as exc:  # the change is made; an audit row lost is logged, never silent
            log.error("audit entry not recorded", extra={"action": action, "target": target, "error": repr(exc)})
