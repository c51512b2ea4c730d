"""Bounded admission for encoder passes (cold windows, new images) of one model.

An encoder pass takes seconds on a CPU (hundreds of ms on a GPU), a decode tens of ms. Without a bound, a
burst of cold windows would pile up threads, each holding memory and waiting its turn, and would fill the
pool that also serves cached clicks. Here encoder passes run on this queue's own threads (`running` of
them, 1 by default: parallel passes only thrash), callers beyond those wait in the event loop (no thread
held), and at most `max_waiting` may wait: the next one gets `Overloaded` (HTTP 503 with `Retry-After`)
at once. Decodes, vectorizing and other work never enter this queue, so cached clicks are not starved.

Identical cold windows still compute once: callers share one computation in `EmbeddingCache` before it
asks this queue for a slot.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Awaitable
from typing import Callable, TypeVar

from samgis.errors import Overloaded

T = TypeVar("T")


class EncoderQueue:
    """At most `running` encoder passes at a time and `max_waiting` more waiting; see the module docstring.

    `estimate_s`: expected seconds per pass until one has been measured (then an exponential moving average
    of measured passes); `Retry-After` is the estimated time until the queue has room.
    """

    def __init__(self, max_waiting: int = 8, running: int = 1, estimate_s: float = 2.0, name: str = "encoder"):
        if max_waiting < 0 or running < 1:
            raise ValueError("max_waiting must be ≥ 0 and running ≥ 1")
        self.max_waiting = max_waiting
        self.running = running
        self.name = name
        self._pass_s = float(estimate_s)
        self._executor = ThreadPoolExecutor(running, thread_name_prefix=f"samgis-{name}")
        self._lock = threading.Lock()
        self._active = 0    # admitted and running
        self._waiting = 0   # admitted, waiting for a running slot
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self.rejected = 0

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._slots.get(loop)
            if sem is None:
                sem = self._slots[loop] = asyncio.Semaphore(self.running)
            return sem

    def retry_after_s(self) -> int:
        """Whole seconds until a new caller would likely be admitted (at least 1)."""
        with self._lock:
            ahead = self._waiting + self._active - self.max_waiting - self.running + 1
            return max(1, math.ceil(max(ahead, 1) * self._pass_s / self.running))

    def describe(self) -> dict:
        with self._lock:
            return {"running": self._active, "waiting": self._waiting, "max_waiting": self.max_waiting,
                    "workers": self.running, "rejected": self.rejected, "pass_s": round(self._pass_s, 3)}

    async def run(self, fn: Callable[..., T], *args, prepare: Callable[[], Awaitable] | None = None) -> T:
        """`fn(*args)` on one of this queue's threads once a slot is free; `Overloaded` at once when
        `max_waiting` callers already wait. With `prepare` (e.g. fetching the window's tiles), the caller is
        admitted first, then `await prepare()` runs while it waits and its result is `fn`'s first argument:
        a refused window costs no upstream requests. A caller cancelled while waiting gives its place up."""
        with self._lock:
            full = self._active + self._waiting >= self.running + self.max_waiting
            if full:
                self.rejected += 1
            else:
                self._waiting += 1
        if full:
            retry = self.retry_after_s()
            raise Overloaded(f"the {self.name} queue is full ({self.max_waiting} waiting, {self.running} "
                             f"running); retry in about {retry} s", retry_after_s=retry)
        sem = self._slot()
        try:
            if prepare is not None:
                args = (await prepare(), *args)
            await sem.acquire()
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise
        with self._lock:
            self._waiting -= 1
            self._active += 1
        t0 = time.perf_counter()
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

        def done(_f) -> None:  # when the pass has really ended, even if the caller stopped waiting
            with self._lock:
                self._active -= 1
                self._pass_s = 0.7 * self._pass_s + 0.3 * (time.perf_counter() - t0)
            sem.release()

        fut.add_done_callback(done)
        return await asyncio.shield(fut)
