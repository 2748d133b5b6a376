"""Follows the KV events of every ready local endpoint that publishes them, as the catalogue changes: a
subscriber starts when an endpoint becomes ready, and stops, its blocks forgotten, when it goes (removed,
not ready, draining) or its addresses or pod change (a new pod is a new cache)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import zmq.asyncio

from iir_registry.catalogue import Catalogue
from iir_registry.kv_events.index import BlockIndex
from iir_registry.kv_events.stats import KvStats
from iir_registry.kv_events.subscriber import KvSubscriber, follow

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kv_events, kv_events_replay, target)


def wanted(catalogue: Catalogue) -> dict[str, Key]:
    """The endpoints to follow: url → what identifies its event stream (one entry per url, though a base
    model and its adapters list the same endpoints)."""
    out: dict[str, Key] = {}
    for model in catalogue.models():
        if model.provider != "local":
            continue
        for e in model.endpoints:
            if e.ready and e.kv_events:
                out.setdefault(e.url, (e.kv_events, e.kv_events_replay, e.target))
    return out


class KvFollower:
    def __init__(
        self,
        catalogue: Catalogue,
        index: BlockIndex,
        stats: KvStats,
        topic: str = "",
        replay_timeout_s: float = 2.0,
    ) -> None:
        self.catalogue = catalogue
        self.index = index
        self.stats = stats
        self.topic = topic
        self.replay_timeout_s = replay_timeout_s
        self.ctx = zmq.asyncio.Context()
        self._running: dict[str, tuple[Key, asyncio.Task[None]]] = {}
        self._scheduled = False
        stats.watch_index(index.__len__, lambda: len(self._running))

    @property
    def followed(self) -> dict[str, Key]:
        return {url: key for url, (key, _) in self._running.items()}

    def start(self) -> None:
        self.catalogue.listeners.append(self.changed)
        self.reconcile()

    def changed(self) -> None:
        """The catalogue changed: reconcile once the current burst of changes is applied."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.reconcile)

    def reconcile(self) -> None:
        self._scheduled = False
        want = wanted(self.catalogue)
        for url, (key, _) in list(self._running.items()):
            if want.get(url) != key:
                self._stop(url)
        for url, key in want.items():
            if url not in self._running:
                subscriber = KvSubscriber(
                    url, key[0], key[1], self.index, self.stats, self.ctx, self.topic, self.replay_timeout_s
                )
                task = asyncio.create_task(follow(subscriber), name=f"kv-events {url}")
                self._running[url] = key, task
                log.info("following KV events", extra={"url": url, "kv_events": key[0]})

    def _stop(self, url: str) -> None:
        _, task = self._running.pop(url)
        task.cancel()  # it touches the index no more: its next step raises CancelledError
        self.index.drop(url)
        log.info("KV events no longer followed", extra={"url": url})

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.catalogue.listeners.remove(self.changed)
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        self.ctx.destroy(linger=0)
