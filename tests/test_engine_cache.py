"""Embedding cache: byte bound, LRU order, single-flight under concurrency, errors not cached."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from samgis.engine.cache import EmbeddingCache
from samgis.engine.protocol import Embedding


def emb(nbytes: int, tag: str = "") -> Embedding:
    return Embedding(features=np.zeros(1), original_size=(1, 1), input_size=(1, 1), model_id=tag, nbytes=nbytes)


def test_byte_bound_and_lru_order():
    cache = EmbeddingCache(max_bytes=10)
    for k in "abc":
        cache.put(k, emb(4, k))
    assert cache.bytes_used <= 10 and "a" not in cache and "b" in cache and "c" in cache
    cache.get("b")            # b is now most recent
    cache.put("d", emb(4))
    assert "c" not in cache and "b" in cache and "d" in cache
    cache.put("huge", emb(11))  # larger than the bound: not cached, nothing evicted
    assert "huge" not in cache and len(cache) == 2
    assert cache.stats.evictions == 2


@pytest.mark.asyncio
async def test_single_flight_under_concurrency():
    cache = EmbeddingCache(max_bytes=100)
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return emb(1, "x")

    results = await asyncio.gather(*[cache.get_or_compute("k", compute) for _ in range(20)])
    assert calls == 1
    assert sum(hit for _, hit in results) == 0 and len({id(e) for e, _ in results}) == 1
    e, hit = await cache.get_or_compute("k", compute)
    assert hit and calls == 1
    assert cache.stats.shared == 19 and cache.stats.misses == 1 and cache.stats.hits == 1


@pytest.mark.asyncio
async def test_failure_reaches_all_waiters_and_is_not_cached():
    cache = EmbeddingCache(max_bytes=100)

    async def boom():
        await asyncio.sleep(0.02)
        raise RuntimeError("tiles down")

    results = await asyncio.gather(*[cache.get_or_compute("k", boom) for _ in range(5)], return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "k" not in cache

    async def ok():
        return emb(1)

    assert (await cache.get_or_compute("k", ok))[1] is False


@pytest.mark.asyncio
async def test_cancelled_caller_does_not_cancel_shared_computation():
    cache = EmbeddingCache(max_bytes=100)

    async def slow():
        await asyncio.sleep(0.1)
        return emb(1)

    first = asyncio.create_task(cache.get_or_compute("k", slow))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.get_or_compute("k", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    e, hit = await second
    assert not hit and "k" in cache
