"""The RegistryService gRPC servicer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from iir.v1 import registry_pb2, registry_pb2_grpc
from iir_registry.catalogue import Catalogue


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    async def ListModels(self, request: registry_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> registry_pb2.ListModelsResponse:
        return registry_pb2.ListModelsResponse(models=self.catalogue.models())

    async def Resolve(self, request: registry_pb2.ResolveRequest,
                      context: grpc.aio.ServicerContext) -> registry_pb2.ResolveResponse:
        model = self.catalogue.get(request.model)
        return registry_pb2.ResolveResponse(found=model is not None, model=model)

    async def Watch(self, request: registry_pb2.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[registry_pb2.WatchEvent]:
        async for event in self.catalogue.watch():
            yield event
