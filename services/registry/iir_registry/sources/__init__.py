"""Where the registry learns of local models: Kubernetes (InferenceModel resources) or a file."""

from __future__ import annotations

from typing import Protocol

from iir_common.gpus import GpuNode


class ModelSource(Protocol):
    """Keeps its models in the catalogue current, from `start()` until `stop()`."""

    name: str
    last_refresh: float

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def refresh(self) -> None:
        """Re-lists everything now."""
        ...

    async def gpu_nodes(self) -> list[GpuNode]:
        """The GPU nodes models can run on (none without a cluster)."""
        ...
