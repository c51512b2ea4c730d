"""The Ray executor: the same stages as the local executor, streamed through model actors.

Images and map areas run a streaming Ray Data pipeline of the three stages of `samgis.batch.work`:

    items ─▶ load (tasks: file reads, tile fetches) ─▶ model (actor pool, `workers` actors, the model loaded
    once per actor, a GPU each when the cluster has them) ─▶ finish (tasks) ─▶ driver writes files

Ray Data streams blocks of one item through the operators, so loading, inference and post-processing of
different items overlap, across processes and nodes. Rows carry the stage payloads pickled (images,
masks), so what reaches `on_result` is exactly what the local executor produces. Output files are written
by the driver only: workers need no access to OUTDIR (they do need the checkpoint path and the providers
file at the same paths). Ray is imported here only, when this executor is used.

Whole areas (`AoiItem`) are cut into windows, and the window is the unit of work:

    driver: plan each area (lattice, windows without a file) ─▶ windows in row-major order, at most
    PER_ACTOR in flight per model actor ─▶ model actors (`workers`, the engine built once each from the
    picklable recipe): `fetch_pixels`, `window_embedding`, `window_output`, one window fetching, one in the
    encoder and one in `generate` at a time ─▶ one reduce actor per area on the driver's node
    (`AoiReduce`): writes the window's files at once (resume works per window), stitches windows as soon as
    they are contiguous in row-major order and appends finished objects to the area's GeoPackage ─▶ the
    driver writes the outputs

Backpressure: no more windows go out while 2 x PER_ACTOR x workers window outputs wait for their reduce, or
while workers + 2 areas are open. A model actor that dies is restarted (its windows run again); a window
that fails (tiles, model) fails its area, recorded like a local failure, and the job goes on.

Window results go from model actor to reduce actor through the object store (the driver passes references
and never loads them). No process holds a whole area: the reduce holds two lattice rows of masks, the open
objects' polygons and the windows that arrived ahead of their turn (bounded by the windows in flight).
The per-window functions and the reduce are the local executor's, fed windows in the same order, so both
executors write the same objects byte for byte.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from samgis.batch.inputs import AoiItem, Item
from samgis.batch.work import (ItemResult, JobConfig, StageContext, error_text, finish_stage, infer_stage,
                               load_stage)
from samgis.engine.factory import set_engine_threads


_CONTEXTS: dict = {}


def _context(cfg: JobConfig) -> StageContext:
    """The worker process's `StageContext` for `cfg` (one tile fetcher per process, reused by its tasks)."""
    if cfg not in _CONTEXTS:
        _CONTEXTS[cfg] = StageContext(cfg)
    return _CONTEXTS[cfg]


def _load(row: dict, cfg: JobConfig) -> dict:
    """Ray Data task: stage 1."""
    return {"idx": row["idx"], "payload": pickle.dumps(load_stage(pickle.loads(row["payload"]), _context(cfg)))}


class _ModelActor:
    """Ray Data callable class: stage 2 with the model built once per actor; `threads` torch threads."""

    def __init__(self, cfg: JobConfig, engine_factory: Callable, threads: int | None):
        self.ctx = StageContext(cfg)
        self.engine = engine_factory()
        set_engine_threads(self.engine, threads)

    def __call__(self, row: dict) -> dict:
        loaded = pickle.loads(row["payload"])
        return {"idx": row["idx"], "payload": pickle.dumps(infer_stage(loaded, self.engine, self.ctx))}


def _finish(row: dict, cfg: JobConfig) -> dict:
    """Ray Data task: stage 3."""
    return {"idx": row["idx"], "payload": pickle.dumps(finish_stage(pickle.loads(row["payload"]), cfg))}


def run_ray(items: Sequence[Item], engine_factory: Callable, cfg: JobConfig,
            on_result: Callable[[ItemResult], None], workers: int = 1, address: str | None = None) -> None:
    """Process `items` on Ray: the running Ray instance if `ray.init` was called, else `address` (a cluster),
    else a new local instance (shut down at the end). `on_result` runs on the driver as results stream in."""
    if not items:
        return
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in _python_path() if p)}})
        started = True
    try:
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 1.0)), float(resources.get("GPU", 0.0))
        workers = max(1, workers)
        # Leave a quarter of the CPUs to loading and finishing; each model actor runs that many torch threads.
        model_cpus = max(0.25, min(8.0, 0.75 * cpus / workers))
        model_args = {"num_cpus": model_cpus}
        if gpus > 0:
            model_args = {"num_cpus": min(1.0, model_cpus), "num_gpus": min(1.0, gpus / workers)}
        threads = cfg.torch_threads or (None if gpus > 0 else max(1, round(model_cpus)))
        areas = [it for it in items if isinstance(it, AoiItem)]
        others = [it for it in items if not isinstance(it, AoiItem)]
        if others:
            _run_items(others, engine_factory, cfg, on_result, workers, model_args, threads)
        if areas:
            _run_areas(areas, engine_factory, cfg, on_result, workers, model_args, threads)
    finally:
        if started:
            ray.shutdown()


def _run_items(items, engine_factory, cfg, on_result, workers, model_args, threads) -> None:
    """Images and map areas: the Ray Data pipeline of the module docstring."""
    import ray.data

    tasks = max(1, min(workers, len(items)))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    if hasattr(ctx, "issue_detectors_config"):
        ctx.issue_detectors_config.detectors = []
    rows = [{"idx": i, "payload": pickle.dumps(item)} for i, item in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(_load, fn_kwargs={"cfg": cfg}, compute=ray.data.TaskPoolStrategy(size=tasks), num_cpus=0.125)
    ds = ds.map(_ModelActor, fn_constructor_kwargs={"cfg": cfg, "engine_factory": engine_factory,
                                                    "threads": threads},
                compute=ray.data.ActorPoolStrategy(size=workers), **model_args)
    ds = ds.map(_finish, fn_kwargs={"cfg": cfg}, compute=ray.data.TaskPoolStrategy(size=tasks), num_cpus=0.125)
    for row in ds.iter_rows():
        on_result(pickle.loads(row["payload"]))


# --- whole areas: windows through model actors, the stitch as a reduce ---------------------------------------

PER_ACTOR = 3
"""Window calls in flight per model actor: one fetches its pixels, one is in the encoder, one in `generate`."""


class _WindowActor:
    """Ray actor: one engine built by `engine_factory()`; `run` computes one window of an area."""

    def __init__(self, cfg: JobConfig, engine_factory: Callable, threads: int | None):
        self.ctx = StageContext(cfg)
        self.engine = engine_factory()
        set_engine_threads(self.engine, threads)
        # calls run on PER_ACTOR threads: one at a time in the encoder, one at a time in `generate`
        self.encoder, self.decoder = threading.Lock(), threading.Lock()

    def run(self, plan, ij: tuple[int, int]):
        """(status, output): status {"timings": …} with the `WindowOutput` of window `ij` of `plan`, or
        {"error": text} with None (the error of the window's item)."""
        from samgis.batch.aoi import fetch_pixels, window_embedding, window_output

        try:
            t0 = time.perf_counter()
            image = fetch_pixels(plan, ij, self.ctx)
            t1 = time.perf_counter()
            with self.encoder:
                t2 = time.perf_counter()
                emb = window_embedding(plan, ij, image, self.engine, self.ctx)
                t3 = time.perf_counter()
            with self.decoder:
                out = window_output(plan, ij, image, emb, self.engine, self.ctx)
        except Exception as exc:  # one broken window fails its area, not the job
            return {"error": error_text(exc)}, None
        return {"timings": {"load": t1 - t0, "embed": t3 - t2, **out.timings}}, out


class _ReduceActor:
    """Ray actor: the `AoiReduce` of one area (on the driver's node: it writes the area's work folder)."""

    def __init__(self, plan, cfg: JobConfig):
        from samgis.batch.aoi import AoiReduce

        self.error: str | None = None
        try:
            self.reduce = AoiReduce(plan, cfg)
        except Exception as exc:
            self.error = error_text(exc)

    def add(self, out) -> str | None:
        """Take one window's output; returns the area's error so far (None when fine)."""
        if self.error is None:
            try:
                self.reduce.add(out)
            except Exception as exc:
                self.error = error_text(exc)
        return self.error

    def close(self):
        """(path, objects, overview PNG, busy seconds, seconds in close), or the error text."""
        if self.error is None:
            try:
                path, count, preview = self.reduce.close()
                return str(path), count, preview, self.reduce.busy_s, self.reduce.close_s
            except Exception as exc:
                self.error = error_text(exc)
        return self.error


@dataclass(eq=False)
class _Area:
    """Driver-side state of one area in flight."""

    plan: object  # AoiPlan
    plan_ref: object
    reducer: object
    todo: list
    timings: dict
    submitted: int = 0
    received: int = 0
    failed: bool = False
    acks: set = field(default_factory=set)


def _run_areas(items, engine_factory, cfg, on_result, workers, model_args, threads) -> None:
    """Whole areas, window by window (module docstring). Areas are taken in order; the windows of the next
    one start as soon as the last of the previous one are in flight."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from samgis.batch.aoi import todo_windows

    ctx = StageContext(cfg)  # the driver plans the areas: source registry only, no tile fetching
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    # a model actor that dies (out of memory, a lost node) is restarted and its windows run again
    model = ray.remote(_WindowActor).options(max_concurrency=PER_ACTOR, max_restarts=2, max_task_retries=2,
                                             **model_args)
    reducer = ray.remote(_ReduceActor).options(num_cpus=0.125, scheduling_strategy=here)
    actors = [model.remote(cfg, engine_factory, threads) for _ in range(workers)]
    busy = {a: 0 for a in actors}
    inflight: dict = {}  # status ref → (area, ij, actor, output ref)
    acks: dict = {}  # reduce.add ref → area
    closing: dict = {}  # reduce.close ref → area
    max_acks = PER_ACTOR * workers * 2  # window outputs waiting for a reduce: beyond this, stop feeding models
    max_open = workers + 2  # areas with a reduce actor (0.125 CPU each)
    pending = iter(items)
    open_areas: list[_Area] = []
    current: _Area | None = None
    exhausted = False

    def fail(area: _Area, stage: str, error: str) -> None:
        area.failed = True
        for ref in list(area.acks):
            acks.pop(ref, None)
        ray.kill(area.reducer)
        open_areas.remove(area)
        item = area.plan.item
        on_result(ItemResult(item.item_id, item.kind, ok=False, error=error, stage=stage,
                             timings=dict(area.timings)))

    def maybe_close(area: _Area) -> None:
        if not area.failed and area.received == len(area.todo):
            closing[area.reducer.close.remote()] = area

    def next_window():
        nonlocal current, exhausted
        while True:
            if current is not None and not current.failed and current.submitted < len(current.todo):
                current.submitted += 1
                return current, current.todo[current.submitted - 1]
            if exhausted or len(open_areas) >= max_open:
                return None
            item = next(pending, None)
            if item is None:
                exhausted = True
                return None
            plan = load_stage(item, ctx)
            if isinstance(plan, ItemResult):
                on_result(plan)
                continue
            todo = todo_windows(plan)
            timings = dict(plan.timings)
            timings.update(windows=len(plan.windows), windows_run=len(todo))
            current = _Area(plan, ray.put(plan), reducer.remote(plan, cfg), todo, timings)
            open_areas.append(current)
            maybe_close(current)  # every window done by an earlier run: straight to the stitch

    try:
        while True:
            while len(acks) < max_acks:
                actor = min(actors, key=busy.get)
                if busy[actor] >= PER_ACTOR:
                    break
                nxt = next_window()
                if nxt is None:
                    break
                area, ij = nxt
                status, out = actor.run.options(num_returns=2).remote(area.plan_ref, ij)
                inflight[status] = (area, ij, actor, out)
                busy[actor] += 1
            if not (inflight or acks or closing):
                break  # nothing in flight and nothing more to submit
            ready, _ = ray.wait([*inflight, *acks, *closing], num_returns=1)
            ref = ready[0]
            if ref in inflight:
                area, ij, actor, out = inflight.pop(ref)
                busy[actor] -= 1
                try:
                    status = ray.get(ref)
                except Exception as exc:  # the actor is gone for good: this area fails, the job goes on
                    status = {"error": error_text(exc)}
                if area.failed:
                    continue
                if "error" in status:
                    fail(area, "infer", status["error"])
                    continue
                for k, v in status["timings"].items():
                    area.timings[k] = area.timings.get(k, 0.0) + v
                ack = area.reducer.add.remote(out)
                acks[ack] = area
                area.acks.add(ack)
                area.received += 1
                maybe_close(area)
            elif ref in acks:
                area = acks.pop(ref)
                area.acks.discard(ref)
                try:
                    error = ray.get(ref)
                except Exception as exc:  # the reduce actor died
                    error = error_text(exc)
                if error is not None and not area.failed:
                    fail(area, "finish", error)
            else:
                area = closing.pop(ref)
                if area.failed:
                    continue
                try:
                    answer = ray.get(ref)
                except Exception as exc:  # the reduce actor died
                    answer = error_text(exc)
                if isinstance(answer, str):
                    fail(area, "finish", answer)
                    continue
                path, count, preview, busy_s, close_s = answer
                area.timings["post"] = area.timings.get("post", 0.0) + busy_s
                area.timings["post_close"] = area.timings.get("post_close", 0.0) + close_s
                open_areas.remove(area)
                ray.kill(area.reducer)
                item = area.plan.item
                on_result(ItemResult(item.item_id, "aoi", timings=area.timings, segments_file=path,
                                     segment_count=count, preview=preview))
    finally:
        for area in open_areas:
            ray.kill(area.reducer)
        for actor in actors:
            ray.kill(actor)
        ctx.close()


def _python_path() -> list[str]:
    """The driver's import path entries that workers need too (the working directory, PYTHONPATH)."""
    extra = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return [os.getcwd(), *extra]
