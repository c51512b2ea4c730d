"""The local executor: one process, the model in the calling thread, I/O and post-processing beside it.

`workers` threads load items ahead of the model (file reads, tile fetches: up to `2 * workers` items in
flight), the model runs items in input order in the calling thread, and one thread vectorises / encodes
finished items while the model works on the next. Torch releases the GIL in its kernels, so the three
overlap. Results reach `on_result` in the calling thread, in input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from samgis.batch.inputs import Item
from samgis.batch.work import ItemResult, JobConfig, StageContext, finish_stage, infer_stage, load_stage
from samgis.engine.factory import set_engine_threads


def run_local(items: Sequence[Item], engine_factory: Callable, cfg: JobConfig,
              on_result: Callable[[ItemResult], None], workers: int = 2) -> None:
    """Process `items` with one engine built by `engine_factory()`; `on_result` gets every `ItemResult`."""
    if not items:
        return
    workers = max(1, workers)
    ctx = StageContext(cfg)
    engine = engine_factory()
    threads = set_engine_threads(engine, cfg.torch_threads)
    loads: deque[Future] = deque()
    finishing: deque[Future] = deque()
    pending = iter(items)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="samgis-load") as io_pool, \
                ThreadPoolExecutor(1, thread_name_prefix="samgis-post") as post_pool:
            def refill() -> None:
                while len(loads) < 2 * workers:
                    item = next(pending, None)
                    if item is None:
                        return
                    loads.append(io_pool.submit(load_stage, item, ctx))

            def deliver_finished() -> None:
                while finishing and finishing[0].done():
                    on_result(finishing.popleft().result())

            refill()
            while loads:
                nxt = loads.popleft()
                while not nxt.done():  # report finished items while waiting for the next load
                    deliver_finished()
                    wait([nxt, *list(finishing)[:1]], return_when=FIRST_COMPLETED)
                loaded = nxt.result()
                refill()
                inferred = infer_stage(loaded, engine, ctx)
                while finishing and (finishing[0].done() or len(finishing) >= 2):
                    on_result(finishing.popleft().result())
                finishing.append(post_pool.submit(finish_stage, inferred, cfg))
            while finishing:
                on_result(finishing.popleft().result())
    finally:
        for f in loads:
            f.cancel()
        ctx.close()
        if threads is not None:
            set_engine_threads(engine, threads)
