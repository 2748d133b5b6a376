"""The ClassifierService gRPC servicer."""

from __future__ import annotations

import grpc

from iir.v1 import classifier_pb2, classifier_pb2_grpc
from iir_classifier.model import Classifier


class ClassifierServicer(classifier_pb2_grpc.ClassifierServiceServicer):
    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    async def Classify(self, request: classifier_pb2.ClassifyRequest,
                       context: grpc.aio.ServicerContext) -> classifier_pb2.ClassifyResponse:
        if not request.messages:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no messages to classify")
        result = self.classifier.classify([(t.role, t.content) for t in request.messages])
        return classifier_pb2.ClassifyResponse(
            category=result.category, category_confidence=result.category_confidence,
            complexity=result.complexity, complexity_score=result.complexity_score,
            language=result.language, language_confidence=result.language_confidence,
            model_version=self.classifier.version,
        )
