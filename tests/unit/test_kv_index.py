"""The gateway's KvIndex: the registry's KV_BLOCKS applied, and a request's cached prefix per replica."""

from __future__ import annotations

import random

from iir.v1 import registry_pb2
from iir_gateway.picking.kv_index import KvIndex

Update = registry_pb2.KvBlockUpdate


def test_leading_blocks_held_per_replica_on_each_tier() -> None:
    index = KvIndex()
    index.apply(
        [
            Update(url="a", cleared=True, stored=[1, 2, 3, 4]),
            Update(url="b", cleared=True, stored=[1, 2], stored_cpu=[3, 4]),
            Update(url="c", cleared=True),
        ]
    )
    request = [1, 2, 3, 4, 5]
    assert index.match_lengths(request, ["a", "b", "c", "unknown"]) == [4, 2, 0, 0]
    assert index.match_lengths(request, ["a", "b"], cpu=True) == [4, 4]
    assert index.match_lengths([9, 1, 2], ["a", "b"]) == [0, 0]  # leading blocks only
    assert index.match_lengths([], ["a"]) == [0]
    assert [index.publishing(u) for u in ("a", "c", "unknown")] == [True, True, False]
    index.apply([Update(url="a", removed=[2]), Update(url="b", removed_cpu=[3])])
    assert index.match_lengths(request, ["a", "b"], cpu=True) == [1, 2]
    index.apply([Update(url="a", cleared=True, stored=[7])])  # cleared first, then stored
    assert index.match_lengths([7, 1], ["a", "b"]) == [1, 0]
    assert len(index) == 4  # 7, 1, 2 and (off the GPU) 4


def test_a_forgotten_replica_frees_its_blocks_and_its_bit() -> None:
    index = KvIndex()
    index.apply([Update(url="a", stored=[1, 2]), Update(url="b", stored=[1])])
    index.apply([Update(url="a", gone=True)])
    assert not index.publishing("a") and len(index) == 1
    index.apply([Update(url="c", stored=[2])])  # takes a's bit: nothing of a's may show through
    assert index.match_lengths([1, 2], ["b", "c", "a"]) == [1, 0, 0]
    assert index.match_lengths([2], ["c"]) == [1]
    index.reset()
    assert len(index) == 0 and not index.publishing("b")


def test_it_agrees_with_a_plain_reading_on_random_caches() -> None:
    """Against sets per replica, over requests long enough to cross the lookup's growing chunks."""
    rng = random.Random(7)
    urls = [f"http://10.0.0.{i}:8000" for i in range(6)]
    chains = [[rng.getrandbits(64) for _ in range(700)] for _ in range(4)]
    index, plain = KvIndex(), {u: set[int]() for u in urls}
    matched = 0
    for _ in range(300):
        url, chain = rng.choice(urls), rng.choice(chains)
        begin = 0 if rng.random() < 0.5 else rng.randrange(len(chain))
        part = chain[begin : begin + rng.randrange(1, 400)]
        if rng.random() < 0.6:
            index.apply([Update(url=url, stored=part)])
            plain[url].update(part)
        elif rng.random() < 0.9:
            index.apply([Update(url=url, removed=part)])
            plain[url].difference_update(part)
        else:
            index.apply([Update(url=url, cleared=True, stored=part)])
            plain[url] = set(part)
        request = rng.choice(chains)[: rng.randrange(700)]
        expected = []
        for u in urls:
            n = 0
            while n < len(request) and request[n] in plain[u]:
                n += 1
            expected.append(n)
        assert index.match_lengths(request, urls) == expected
        matched += any(expected)
    assert matched > 100  # the case tested is mostly a prefix some replica holds
