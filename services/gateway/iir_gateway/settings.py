"""Gateway settings (`IIR_` environment variables)."""

from __future__ import annotations

from iir_common.settings import IIRSettings


class GatewaySettings(IIRSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # Worker processes serving the gateway port; they share nothing but Redis.
    gateway_workers: int = 1
    auth_addr: str = "127.0.0.1:50051"
    registry_addr: str = "127.0.0.1:50052"
    classifier_addr: str = "127.0.0.1:50053"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Largest request body accepted; more is answered 413.
    max_body_bytes: int = 4 * 1024 * 1024
    # Deadline of a gRPC call to auth, registry or classifier.
    grpc_timeout_s: float = 2.0
    upstream_connect_timeout_s: float = 5.0
    # Longest wait for the next bytes of an upstream response (first token included).
    upstream_read_timeout_s: float = 120.0
    # Longest a non-streaming upstream call may take in all.
    upstream_total_timeout_s: float = 600.0
    # Endpoint picking policy among a local model's ready replicas.
    endpoint_picker: str = "round_robin"
    access_log: bool = True
