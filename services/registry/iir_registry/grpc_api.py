"""The RegistryService gRPC servicer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from iir.v1 import registry_pb2, registry_pb2_grpc
from iir_registry.catalogue import Catalogue
from iir_registry.demand import DemandBook
from iir_registry.sources import ModelSource

log = logging.getLogger(__name__)


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, catalogue: Catalogue, source: ModelSource, demand: DemandBook | None = None) -> None:
        self.catalogue = catalogue
        self.source = source
        self.demand = demand or DemandBook(catalogue)

    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        return registry_pb2.ListModelsResponse(models=self.catalogue.models())

    async def Resolve(
        self, request: registry_pb2.ResolveRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ResolveResponse:
        model = self.catalogue.get(request.model)
        return registry_pb2.ResolveResponse(found=model is not None, model=model)

    async def ReportDemand(
        self, request: registry_pb2.DemandReport, context: grpc.aio.ServicerContext
    ) -> registry_pb2.DemandAck:
        if not request.gateway:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "gateway is required")
        self.demand.report(request.gateway, request.models)
        return registry_pb2.DemandAck()

    async def Watch(
        self, request: registry_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.WatchEvent]:
        first = True
        async for event in self.catalogue.watch():
            yield event
            if first and (held := self.demand.totals()):  # a new watcher learns what is held already
                yield registry_pb2.WatchEvent(
                    type=registry_pb2.WatchEvent.DEMAND,
                    demand=[registry_pb2.ModelDemand(model=m, held=n) for m, n in sorted(held.items())],
                )
            first = False

    async def Status(
        self, request: registry_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.StatusResponse:
        error = ""
        try:
            nodes = await self.source.gpu_nodes()
        except Exception as exc:  # the hardware view is best effort; the models are still reported
            log.warning("cannot list GPU nodes", extra={"error": repr(exc)[:300]})
            nodes, error = [], f"cannot list GPU nodes: {type(exc).__name__}"
        return registry_pb2.StatusResponse(
            models=self.catalogue.models(),
            source=self.source.name,
            last_refresh=int(self.source.last_refresh),
            error=error,
            nodes=[
                registry_pb2.GpuNode(
                    name=n.name, product=n.product, memory_gib=n.memory_gib, allocatable=n.allocatable, free=n.free
                )
                for n in nodes
            ],
        )

    async def Refresh(
        self, request: registry_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.StatusResponse:
        try:
            await self.source.refresh()
        except Exception as exc:
            log.warning("refresh failed", extra={"error": repr(exc)[:300]})
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"refresh failed: {type(exc).__name__}")
        log.info("catalogue refreshed", extra={"models": len(self.catalogue.models())})
        return await self.Status(registry_pb2.StatusRequest(), context)
