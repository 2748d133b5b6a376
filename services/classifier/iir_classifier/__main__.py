"""`python -m iir_classifier`: runs the classifier gRPC server."""

from __future__ import annotations

import asyncio

from iir.v1 import classifier_pb2_grpc
from iir_classifier.grpc_api import ClassifierServicer
from iir_classifier.model import KeywordClassifier
from iir_classifier.settings import ClassifierSettings
from iir_common.grpc_server import GrpcService, run_until_signal
from iir_common.logging import setup_logging


async def serve(settings: ClassifierSettings) -> None:
    servicer = ClassifierServicer(KeywordClassifier())
    service = GrpcService(
        [lambda s: classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(servicer, s)],
        ["iir.v1.ClassifierService"], settings.classifier_port, settings.classifier_host)
    await run_until_signal(service, "classifier")


def main() -> None:
    settings = ClassifierSettings()
    setup_logging("classifier", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
