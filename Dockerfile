# syntax=docker/dockerfile:1.7
# One image per service: `make images` builds each target (gateway, auth, classifier, registry, operator,
# simbackend). Slim Python base; each service's virtualenv holds the common dependencies and its own
# extra only (the gateway has no onnxruntime or kopf), pinned by constraints.txt; gRPC code generated at
# build time, non-root user, a HEALTHCHECK each (Kubernetes uses the chart's probes).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt ./
RUN python -m venv /venv && /venv/bin/pip install -q -c constraints.txt .

# One virtualenv per service: the common dependencies plus the service's extra.
FROM deps AS deps-gateway
RUN /venv/bin/pip install -q -c constraints.txt ".[gateway]"
FROM deps AS deps-auth
RUN /venv/bin/pip install -q -c constraints.txt ".[auth]"
FROM deps AS deps-registry
RUN /venv/bin/pip install -q -c constraints.txt ".[registry]"
FROM deps AS deps-classifier
RUN /venv/bin/pip install -q -c constraints.txt ".[classifier]"
FROM deps AS deps-operator
RUN /venv/bin/pip install -q -c constraints.txt ".[operator]"
FROM deps AS deps-simbackend
RUN /venv/bin/pip install -q -c constraints.txt ".[simbackend]"

FROM deps AS gen
RUN /venv/bin/pip install -q -c constraints.txt grpcio-tools==1.85.1
COPY protos/ protos/
RUN mkdir gen && /venv/bin/python -m grpc_tools.protoc -Iprotos --python_out=gen --grpc_python_out=gen \
      protos/iir/v1/*.proto && touch gen/iir/__init__.py gen/iir/v1/__init__.py

# The classifier's model: MiniLM exported to int8 ONNX and the heads trained on the repo's prompts. torch
# stays in this stage; the classifier image gets only the model files.
FROM gen AS classifier-model
RUN /venv/bin/pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && /venv/bin/pip install -q -c constraints.txt ".[classifier,classifier-build]"
COPY libs/ libs/
COPY services/classifier/ services/classifier/
RUN export PYTHONPATH=/app/libs:/app/gen:/app/services/classifier \
 && /venv/bin/python -m iir_classifier.build.export_onnx /model \
 && /venv/bin/python -m iir_classifier.build.train /model

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 iir && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin iir
COPY --from=gen /app/gen /app/gen
COPY libs/ /app/libs/
ENV PATH=/venv/bin:$PATH PYTHONPATH=/app/libs:/app/gen PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001

FROM runtime AS gateway
COPY --from=deps-gateway /venv /venv
COPY services/gateway/ /app/services/gateway/
ENV PYTHONPATH=/app/libs:/app/gen:/app/services/gateway IIR_GATEWAY_HOST=0.0.0.0
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=4s CMD ["python", "-m", "iir_common.healthcheck", "http://127.0.0.1:8080/health/live"]
CMD ["python", "-m", "iir_gateway"]

FROM runtime AS auth
COPY --from=deps-auth /venv /venv
COPY services/auth/ /app/services/auth/
ENV PYTHONPATH=/app/libs:/app/gen:/app/services/auth IIR_AUTH_HOST=0.0.0.0
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=4s CMD ["python", "-m", "iir_common.healthcheck", "grpc", "50051", "iir.v1.AuthService"]
CMD ["python", "-m", "iir_auth"]

FROM runtime AS registry
COPY --from=deps-registry /venv /venv
COPY services/registry/ /app/services/registry/
ENV PYTHONPATH=/app/libs:/app/gen:/app/services/registry IIR_REGISTRY_HOST=0.0.0.0
EXPOSE 50052
HEALTHCHECK --interval=10s --timeout=4s CMD ["python", "-m", "iir_common.healthcheck", "grpc", "50052", "iir.v1.RegistryService"]
CMD ["python", "-m", "iir_registry"]

FROM runtime AS classifier
COPY --from=deps-classifier /venv /venv
COPY services/classifier/iir_classifier/ /app/services/classifier/iir_classifier/
COPY --from=classifier-model /model /app/services/classifier/model
ENV PYTHONPATH=/app/libs:/app/gen:/app/services/classifier IIR_CLASSIFIER_HOST=0.0.0.0
EXPOSE 50053
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s CMD ["python", "-m", "iir_common.healthcheck", "grpc", "50053", "iir.v1.ClassifierService"]
CMD ["python", "-m", "iir_classifier"]

FROM runtime AS operator
COPY --from=deps-operator /venv /venv
COPY operator/ /app/operator/
ENV PYTHONPATH=/app/libs:/app/gen:/app/operator
EXPOSE 8081
HEALTHCHECK --interval=20s --timeout=4s CMD ["python", "-m", "iir_common.healthcheck", "http://127.0.0.1:8081/healthz"]
CMD ["python", "-m", "iir_operator"]

FROM runtime AS simbackend
COPY --from=deps-simbackend /venv /venv
COPY services/simbackend/ /app/services/simbackend/
ENV PYTHONPATH=/app/libs:/app/gen:/app/services/simbackend IIR_SIM_HOST=0.0.0.0
EXPOSE 8100
HEALTHCHECK --interval=10s --timeout=4s CMD ["python", "-m", "iir_common.healthcheck", "http://127.0.0.1:8100/health"]
CMD ["python", "-m", "iir_simbackend"]
