"""`python -m iir_operator`: runs the operator (kopf) with peering, liveness endpoint and JSON logs."""

from __future__ import annotations

import asyncio

import kopf

from iir_common.logging import setup_logging
from iir_operator.handlers import build_registry
from iir_operator.settings import OperatorSettings


def main() -> None:
    settings = OperatorSettings()
    setup_logging("operator", settings.log_level)
    registry = build_registry(settings)
    namespaces = [settings.operator_namespace] if settings.operator_namespace else []
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            peering_name=settings.peering_name,
            standalone=False,
            liveness_endpoint=f"http://0.0.0.0:{settings.operator_health_port}/healthz",
        )
    )


if __name__ == "__main__":
    main()
