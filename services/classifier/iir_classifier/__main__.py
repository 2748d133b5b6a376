"""`python -m iir_classifier`: runs the classifier gRPC server."""

from __future__ import annotations

import asyncio
import logging
import sys

from iir.v1 import classifier_pb2_grpc
from iir_classifier.batcher import MicroBatcher
from iir_classifier.grpc_api import ClassifierServicer
from iir_classifier.model import EmbeddingClassifier, ModelMissing
from iir_classifier.settings import ClassifierSettings
from iir_common.grpc_server import GrpcService, run_until_signal
from iir_common.logging import setup_logging
from iir_common.tracing import setup_tracing

log = logging.getLogger("iir_classifier")


async def serve(settings: ClassifierSettings, classifier: EmbeddingClassifier) -> None:
    batcher = MicroBatcher(classifier, settings.classifier_max_batch, settings.classifier_batch_wait_ms / 1000)
    batcher.start()
    servicer = ClassifierServicer(batcher, classifier.version)
    service = GrpcService(
        [lambda s: classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(servicer, s)],
        ["iir.v1.ClassifierService"],
        settings.classifier_port,
        settings.classifier_host,
    )
    try:
        await run_until_signal(service, "classifier")
    finally:
        await batcher.stop()


def main() -> None:
    settings = ClassifierSettings()
    setup_logging("classifier", settings.log_level)
    setup_tracing("classifier")
    try:
        classifier = EmbeddingClassifier.load(settings.classifier_model_dir, settings.classifier_threads)
    except ModelMissing as exc:
        sys.exit(f"iir-classifier: {exc}")
    classifier.classify_batch([[("user", "warm up")]])  # first inference allocates; not on a request
    log.info("classifier model loaded", extra={"model_version": classifier.version})
    asyncio.run(serve(settings, classifier))


if __name__ == "__main__":
    main()
