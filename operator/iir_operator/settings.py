"""Operator settings (`IIR_` environment variables)."""

from __future__ import annotations

from iir_common.settings import IIRSettings


class OperatorSettings(IIRSettings):
    # API server URL without TLS checks, for tests and local emulators; in-cluster or kubeconfig otherwise.
    kube_server: str | None = None
    # Namespace to watch; empty means every namespace.
    operator_namespace: str = ""
    # Memory per GPU assumed when neither the node labels nor the product table know it.
    default_gpu_memory_gib: float = 80.0
    # Liveness endpoint of the operator.
    operator_health_port: int = 8081
    # Name of the kopf peering object: replicas with the same name elect one active operator.
    peering_name: str = "iir-operator"
    # The registry (host:port): the autoscaler follows its Watch for vLLM's load and the requests gateways
    # hold. Empty: models with spec.autoscaling keep their replicas (a warning says so).
    registry_addr: str = ""
    # How often the autoscaler looks at the figures (a request held for a model at zero is acted on at once).
    autoscale_interval_s: float = 5.0
