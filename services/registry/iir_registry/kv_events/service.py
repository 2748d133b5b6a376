"""The registry's KV event machinery, wired: the followed endpoints feed one block index, whose changes
reach every Watch stream in short windows, and whose whole content follows each snapshot."""

from __future__ import annotations

from iir.v1 import registry_pb2
from iir_registry.catalogue import Catalogue
from iir_registry.kv_events.follower import KvFollower
from iir_registry.kv_events.index import BlockIndex
from iir_registry.kv_events.publisher import KvPublisher, snapshot_events
from iir_registry.kv_events.stats import KvStats


class KvBlocks:
    def __init__(
        self,
        catalogue: Catalogue,
        stats: KvStats | None = None,
        topic: str = "",
        flush_interval_s: float = 0.02,
        flush_max_hashes: int = 5000,
        replay_timeout_s: float = 2.0,
    ) -> None:
        self.catalogue = catalogue
        self.stats = stats or KvStats()
        self.publisher = KvPublisher(self._push, flush_interval_s, flush_max_hashes)
        self.index = BlockIndex(self.publisher)
        self.follower = KvFollower(catalogue, self.index, self.stats, topic, replay_timeout_s)
        catalogue.kv_snapshot = lambda: snapshot_events(self.index)

    def _push(self, updates: list[registry_pb2.KvBlockUpdate]) -> None:
        self.stats.pushed += 1
        self.catalogue.publish_kv(updates)

    def start(self) -> None:
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
        self.publisher.flush()
