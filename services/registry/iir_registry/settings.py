"""Registry settings (`IIR_` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from iir_common.settings import IIRSettings


class RegistrySettings(IIRSettings):
    registry_host: str = "127.0.0.1"
    registry_port: int = 50052
    # Where local models come from: InferenceModel resources, or a file of the same shape (no cluster).
    registry_source: Literal["file", "kubernetes"] = "file"
    models_file: Path = Path("deploy/dev/models.yaml")
    # How often the file source looks for changes to the file.
    models_file_poll_s: float = 1.0
    # API server URL without TLS checks (tests, emulators); in-cluster config or kubeconfig otherwise.
    kube_server: str | None = None
    # How often each ready vLLM endpoint's /metrics is scraped for load-aware picking (0 turns it off).
    metrics_scrape_interval_s: float = 1.0
    # Namespace whose InferenceModels are served; empty means every namespace.
    registry_namespace: str = ""
    # Follow the KV-cache events of ready replicas that publish them, for precise prefix routing.
    kv_events: bool = True
    # Topic prefix subscribed to on each replica's KV event socket ("" takes every topic).
    kv_events_topic: str = ""
    # Changes to the KV block index are pushed to gateways at most this long after they happen, or at once
    # when this many hashes are waiting.
    kv_flush_interval_s: float = 0.02
    kv_flush_max_hashes: int = 5000
    # How long a replica's replay socket may stay silent before a gap counts as lost.
    kv_replay_timeout_s: float = 2.0
    # Port of the registry's Prometheus /metrics (0: not served).
    registry_metrics_port: int = 0
