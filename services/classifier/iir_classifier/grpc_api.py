"""The ClassifierService gRPC servicer."""

from __future__ import annotations

import grpc

from iir.v1 import classifier_pb2, classifier_pb2_grpc
from iir_classifier.batcher import MicroBatcher

MAX_TURN_CHARS = 20_000


class ClassifierServicer(classifier_pb2_grpc.ClassifierServiceServicer):
    def __init__(self, batcher: MicroBatcher, version: str) -> None:
        self.batcher = batcher
        self.version = version

    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        turns = [(t.role, t.content[:MAX_TURN_CHARS]) for t in request.messages if t.content.strip()]
        if not turns:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no message with text to classify")
        result = await self.batcher.classify(turns)
        return classifier_pb2.ClassifyResponse(
            category=result.category,
            category_confidence=result.category_confidence,
            complexity=result.complexity,
            complexity_score=result.complexity_score,
            language=result.language,
            language_confidence=result.language_confidence,
            model_version=self.version,
        )
