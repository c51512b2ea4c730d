"""Which OS threads run the engine's torch work.

On CPU, torch parallelises each op with OpenMP (libgomp). libgomp gives every thread that starts a parallel
region its own team of worker threads, kept until that thread exits. Once the process holds more such
threads than it has CPUs, libgomp shortens how long idle workers spin before sleeping (from ~300 000 to
100 iterations), so every later op pays a futex wake-up per parallel region. A SAM decode is ~1 000 small
parallel ops: on the 2-core reference machine a click decode went from 22 ms to 30–50 ms as soon as a second
thread (the model loader, an encoder pass, a worker of `asyncio.to_thread`) had used torch.

So the process keeps one long-lived torch thread (`on_torch_thread`, `to_torch_thread` from the event loop)
for short model calls (decodes), and runs long ones (model loading, encoder passes, automatic masks) on a
new thread that exits when done (`in_fresh_thread`), taking its OpenMP team with it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_ident: int | None = None


def _remember_ident() -> None:
    global _ident
    _ident = threading.get_ident()


def _forget_pool() -> None:
    """In a forked child: the parent's torch thread does not exist there; start a new one when needed."""
    global _lock, _pool, _ident
    _lock, _pool, _ident = threading.Lock(), None, None


os.register_at_fork(after_in_child=_forget_pool)


def is_torch_thread() -> bool:
    """True on the process's long-lived torch thread."""
    return threading.get_ident() == _ident


def _torch_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="samgis-torch", initializer=_remember_ident)
        return _pool


def on_torch_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` on the process's one long-lived torch thread; blocks until it returns (or
    raises). Calls queue in arrival order. Called from that thread itself, runs `fn` in place."""
    if is_torch_thread():
        return fn(*args, **kwargs)
    return _torch_pool().submit(fn, *args, **kwargs).result()


async def to_torch_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`on_torch_thread` for the event loop: awaits `fn(*args, **kwargs)` on the torch thread (one thread
    hop, where `asyncio.to_thread(on_torch_thread, …)` would take two)."""
    return await asyncio.wrap_future(_torch_pool().submit(fn, *args, **kwargs))


def in_fresh_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` on a new thread that ends when `fn` does; blocks until then and returns its
    result or raises its exception. On the torch thread itself, runs `fn` in place (the work may queue calls
    for that thread, which would otherwise wait on each other)."""
    if is_torch_thread():
        return fn(*args, **kwargs)
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"samgis-{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def set_torch_threads(n: int) -> int:
    """Set torch's intra-op thread count to `n` for this process and return the previous count.

    PyTorch reads the count into each thread once, at that thread's first parallel op, so the long-lived
    torch thread is told as well (threads started later read the new count themselves)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    on_torch_thread(torch.set_num_threads, n)
    return previous
