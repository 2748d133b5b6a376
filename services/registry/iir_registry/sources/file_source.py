"""Local models from a YAML file of InferenceModel and InferenceAdapter documents (spec and status), for
clusterless runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import yaml

from iir.v1 import registry_pb2
from iir_common.gpus import GpuNode
from iir_registry.catalogue import Catalogue
from iir_registry.resource_mapping import adapter_models, model_from_resource

log = logging.getLogger(__name__)

SOURCE = "file"
SETTLE_S = 0.05


def load_models_file(path: Path) -> list[registry_pb2.Model]:
    """Every InferenceModel document in `path`, and the InferenceAdapters of each; other kinds are skipped."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    created = int(path.stat().st_mtime)
    bases = [model_from_resource(d, SOURCE, created) for d in docs if d.get("kind") == "InferenceModel"]
    names = [d["metadata"]["name"] for d in docs if d.get("kind") == "InferenceModel"]
    model_names = {b.served_name for b in bases}
    models = []
    for base, name in zip(bases, names, strict=True):
        adapters = [d for d in docs if d.get("kind") == "InferenceAdapter" and d["spec"]["baseModel"] == name]
        models += [base, *adapter_models(base, adapters, model_names)]
    return models


class FileSource:
    """Keeps the catalogue equal to the file, reloading it when it changes; a bad file keeps the last good one."""

    name = SOURCE

    def __init__(self, path: Path, catalogue: Catalogue, poll_s: float = 1.0) -> None:
        self.path = path
        self.catalogue = catalogue
        self.poll_s = poll_s
        self.last_refresh = 0.0
        self._stamp: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def load(self, force: bool = False) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None or force:
                log.warning("models file missing", extra={"path": str(self.path)})
                self.catalogue.replace_source(SOURCE, [])
            self._stamp = None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp and not force:
            return
        if not force and self._stamp is not None and time.time() - st.st_mtime < SETTLE_S:
            return  # may be half-written (an editor truncates, then writes): read it at the next poll
        self._stamp = stamp
        try:
            models = load_models_file(self.path)
        except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error(
                "cannot read models file; keeping the last good one", extra={"path": str(self.path), "error": str(exc)}
            )
            return
        self.last_refresh = time.time()
        self.catalogue.replace_source(SOURCE, models)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.load()

    def start(self) -> None:
        self.load(force=True)
        self._task = asyncio.create_task(self._poll(), name="models-file")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        self.load(force=True)

    async def gpu_nodes(self) -> list[GpuNode]:
        return []
