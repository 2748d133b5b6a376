"""`python -m iir_registry`: runs the registry gRPC server with its model source."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from iir.v1 import registry_pb2_grpc
from iir_common.grpc_server import GrpcService, run_until_signal
from iir_common.logging import setup_logging
from iir_registry.catalogue import Catalogue
from iir_registry.grpc_api import RegistryServicer
from iir_registry.settings import RegistrySettings
from iir_registry.sources.file_source import FileSource

log = logging.getLogger("iir_registry")


async def serve(settings: RegistrySettings) -> None:
    catalogue = Catalogue()
    source = FileSource(settings.models_file, catalogue, settings.models_file_poll_s)
    source.refresh(force=True)
    task = asyncio.create_task(source.run())
    servicer = RegistryServicer(catalogue)
    service = GrpcService([lambda s: registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, s)],
                          ["iir.v1.RegistryService"], settings.registry_port, settings.registry_host)

    async def stop_source() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    await run_until_signal(service, "registry", on_stop=stop_source)


def main() -> None:
    settings = RegistrySettings()
    setup_logging("registry", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
