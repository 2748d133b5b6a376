"""Tells the registry how many requests this gateway holds or queues per model: at once when a cold
start begins (`kick`), then every `interval_s` while any are held, and once more when none are."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence

import grpc

from iir.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)


class DemandReporter:
    def __init__(
        self,
        stub: registry_pb2_grpc.RegistryServiceStub,
        sources: Sequence[Callable[[], dict[str, int]]],
        interval_s: float = 2.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.stub = stub
        self.sources = sources
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.gateway = f"{socket.gethostname()}:{os.getpid()}"
        self._kick = asyncio.Event()

    def kick(self) -> None:
        self._kick.set()

    def held(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for source in self.sources:
            for model, n in source().items():
                totals[model] = totals.get(model, 0) + n
        return {m: n for m, n in totals.items() if n > 0}

    async def run(self) -> None:
        sent: dict[str, int] = {}
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval_s)
            self._kick.clear()
            held = self.held()
            if not held and not sent:
                continue
            report = registry_pb2.DemandReport(
                gateway=self.gateway,
                models=[registry_pb2.ModelDemand(model=m, held=n) for m, n in sorted(held.items())],
            )
            try:
                await self.stub.ReportDemand(report, timeout=self.timeout_s)
                sent = held
            except grpc.aio.AioRpcError as exc:
                log.warning("cannot report held requests to the registry", extra={"grpc_code": exc.code().name})
