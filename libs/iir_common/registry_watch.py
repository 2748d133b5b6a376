"""Following the registry's Watch stream for ever: a snapshot, then each change, handed to `apply`; a
lost stream is opened again after a backoff. The gateway's catalogue and the operator's autoscaler
both read the registry this way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from iir.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)


class RegistryWatch:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        apply: Callable[[registry_pb2.WatchEvent], None],
        on_lost: Callable[[], None] | None = None,
        max_backoff_s: float = 2.0,
    ) -> None:
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._apply = apply
        self._on_lost = on_lost
        self.max_backoff_s = max_backoff_s
        self.connected = False  # whether the stream is live now

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async for event in self._stub.Watch(registry_pb2.WatchRequest()):
                    if not self.connected:
                        log.info("registry watch connected")
                    self.connected = True
                    backoff = 0.1
                    self._apply(event)
            except grpc.aio.AioRpcError as exc:
                if self.connected:
                    log.warning("registry watch lost", extra={"grpc_code": exc.code().name})
            self.connected = False
            if self._on_lost is not None:
                self._on_lost()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
