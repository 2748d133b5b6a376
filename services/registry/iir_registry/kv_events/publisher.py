"""The index's changes, merged per endpoint over a short window and pushed to every watcher as KV_BLOCKS,
and the whole index as the KV_BLOCKS that follow a snapshot.

Within a window a hash's last change wins (stored then removed is removed), so an update names each hash
once per tier, and a replica cleared in the window sends `cleared` with what it stored since. A window ends
`interval_s` after its first change, or at once when it holds `max_hashes`: one WatchEvent per window,
whatever the number of engine events in it. Updates are idempotent set changes applied in order, so a
watcher that gets a snapshot while changes are pending ends equal to the index once they arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from iir.v1 import registry_pb2
from iir_registry.kv_events.index import BlockIndex

Update = registry_pb2.KvBlockUpdate
Event = registry_pb2.WatchEvent
SNAPSHOT_CHUNK = 10_000  # hashes per snapshot event (~90 KB): a gateway applies one in a few ms, between requests


class _Pending:
    __slots__ = ("cleared", "cpu", "gone", "gpu")

    def __init__(self) -> None:
        self.cleared = False
        self.gone = False
        self.gpu: dict[int, bool] = {}  # hash → stored (True) or removed (False)
        self.cpu: dict[int, bool] = {}

    def update(self, url: str) -> Update:
        return Update(
            url=url,
            stored=[h for h, s in self.gpu.items() if s],
            removed=[h for h, s in self.gpu.items() if not s],
            stored_cpu=[h for h, s in self.cpu.items() if s],
            removed_cpu=[h for h, s in self.cpu.items() if not s],
            cleared=self.cleared,
            gone=self.gone,
        )


class KvPublisher:
    """The `Deltas` of a BlockIndex: `publish` gets each window's updates (the catalogue's `publish_kv`)."""

    def __init__(
        self, publish: Callable[[list[Update]], None], interval_s: float = 0.02, max_hashes: int = 5000
    ) -> None:
        self.publish = publish
        self.interval_s = interval_s
        self.max_hashes = max_hashes
        self._pending: dict[str, _Pending] = {}
        self._hashes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.pushed_updates = 0
        self.pushed_hashes = 0

    def _of(self, url: str) -> _Pending:
        pending = self._pending.get(url)
        if pending is None:
            pending = self._pending[url] = _Pending()
        return pending

    def stored(self, url: str, hashes: list[int], cpu: bool) -> None:
        self._change(url, hashes, cpu, True)

    def removed(self, url: str, hashes: list[int], cpu: bool) -> None:
        self._change(url, hashes, cpu, False)

    def _change(self, url: str, hashes: list[int], cpu: bool, stored: bool) -> None:
        pending = self._of(url)
        (pending.cpu if cpu else pending.gpu).update(dict.fromkeys(hashes, stored))
        self._hashes += len(hashes)
        self._schedule()

    def cleared(self, url: str) -> None:
        pending = self._pending[url] = _Pending()
        pending.cleared = True
        self._schedule()

    def gone(self, url: str) -> None:
        pending = self._pending[url] = _Pending()
        pending.gone = True
        self._schedule()

    def _schedule(self) -> None:
        if self._hashes >= self.max_hashes:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self.flush)

    def flush(self) -> None:
        """Pushes what changed since the last flush."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        updates = [p.update(url) for url, p in self._pending.items()]
        self.pushed_updates += 1
        self.pushed_hashes += self._hashes
        self._pending = {}
        self._hashes = 0
        self.publish(updates)


def _updates(index: BlockIndex, chunk: int) -> Iterator[Update]:
    """Each endpoint's blocks, in updates of at most `chunk` hashes, the first with cleared=true."""
    for url in index.urls():
        update, room = Update(url=url, cleared=True), chunk
        for held, field in zip(index.held(url), ("stored", "stored_cpu"), strict=True):
            values, start = list(held), 0
            while start < len(values):
                if room == 0:
                    yield update
                    update, room = Update(url=url), chunk
                getattr(update, field).extend(values[start : start + room])
                taken = min(room, len(values) - start)
                start, room = start + taken, room - taken
        yield update


def snapshot_events(index: BlockIndex, chunk: int = SNAPSHOT_CHUNK) -> list[Event]:
    """The whole index as KV_BLOCKS events of at most `chunk` hashes each: per endpoint, a first update with
    cleared=true, then (for a large replica) more of its hashes."""
    events: list[Event] = []
    batch: list[Update] = []
    size = 0
    for update in _updates(index, chunk):
        n = len(update.stored) + len(update.stored_cpu)
        if batch and size + n > chunk:
            events.append(Event(type=Event.KV_BLOCKS, kv=batch))
            batch, size = [], 0
        batch.append(update)
        size += n
    if batch:
        events.append(Event(type=Event.KV_BLOCKS, kv=batch))
    return events
