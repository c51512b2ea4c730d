"""Embedding cache: an LRU bounded by bytes, with single-flight computation.

Entries stay where the engine put them (on the model device). Two requests that miss on the same key at
the same time share one computation: the second awaits the first's result (or its error). A caller that
stops waiting (its client went away, its deadline passed) cancels only its own wait, unless it was the last
one waiting: then the computation is cancelled too (it gives up its place in the encoder queue, its tile
requests stop). An encoder pass already running on its thread finishes there, unused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from cachetools import LRUCache

from samgis.engine.protocol import Embedding

DEFAULT_CACHE_BYTES = 1 << 30  # 1 GiB ≈ 256 SAM embeddings (4 MiB each)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # misses that awaited another request's computation
    evictions: int = 0
    too_large: int = 0


class _BytesLRU(LRUCache):
    def __init__(self, max_bytes: int, stats: CacheStats):
        super().__init__(maxsize=max_bytes, getsizeof=lambda e: e.nbytes)
        self._stats = stats

    def popitem(self):
        item = super().popitem()
        self._stats.evictions += 1
        return item


class EmbeddingCache:
    """LRU of `Embedding`s keyed by any hashable (see `samgis.services.map_windows.window_cache_key`)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        if max_bytes < 0:
            raise ValueError("max_bytes must be ≥ 0")
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._lru = _BytesLRU(max_bytes, self.stats)
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self._waiters: dict[Hashable, int] = {}  # callers awaiting each in-flight computation

    def get(self, key: Hashable) -> Embedding | None:
        with self._lock:
            return self._lru.get(key)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._lru

    def put(self, key: Hashable, embedding: Embedding) -> None:
        with self._lock:
            if embedding.nbytes > self.max_bytes:
                self.stats.too_large += 1
                return
            self._lru[key] = embedding

    @property
    def bytes_used(self) -> int:
        with self._lock:
            return int(self._lru.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()

    async def get_or_compute(
        self, key: Hashable, compute: Callable[[], Awaitable[Embedding]]
    ) -> tuple[Embedding, bool]:
        """Return `(embedding, hit)`; on a miss run `compute()` once for all concurrent callers."""
        found = self.get(key)
        if found is not None:
            self.stats.hits += 1
            return found, True
        pending = self._inflight.get(key)
        if pending is None:
            self.stats.misses += 1
            # An independent task: a caller that goes away cancels only its own wait (see the module docstring).
            pending = asyncio.ensure_future(self._compute_and_store(key, compute))
            pending.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._inflight[key] = pending
        else:
            self.stats.shared += 1
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            return await asyncio.shield(pending), False
        except asyncio.CancelledError:
            if self._waiters.get(key) == 1 and not pending.done():
                pending.cancel()  # nobody else wants it: stop queued work
            raise
        finally:
            left = self._waiters.get(key, 1) - 1
            if left:
                self._waiters[key] = left
            else:
                self._waiters.pop(key, None)

    async def _compute_and_store(self, key: Hashable, compute: Callable[[], Awaitable[Embedding]]) -> Embedding:
        try:
            embedding = await compute()
            self.put(key, embedding)
            return embedding
        finally:
            self._inflight.pop(key, None)

    def describe(self) -> dict:
        return {
            "entries": len(self),
            "bytes": self.bytes_used,
            "max_bytes": self.max_bytes,
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "shared": self.stats.shared,
            "evictions": self.stats.evictions,
        }
