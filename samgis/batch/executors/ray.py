"""The Ray executor: a streaming Ray Data pipeline of the same three stages as the local executor.

    items ─▶ load (tasks: file reads, tile fetches) ─▶ model (actor pool, `workers` actors, the model loaded
    once per actor, a GPU each when the cluster has them) ─▶ finish (tasks) ─▶ driver writes files

Ray Data streams blocks of one item through the operators, so loading, inference and post-processing of
different items overlap, across processes and nodes. Rows carry the stage payloads pickled (images,
masks), so what reaches `on_result` is exactly what the local executor produces. Output files are written
by the driver only: workers need no access to OUTDIR (they do need the checkpoint path and the providers
file at the same paths). Ray is imported here only, when this executor is used.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence

from samgis.batch.inputs import Item
from samgis.batch.work import ItemResult, JobConfig, StageContext, finish_stage, infer_stage, load_stage
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
    import ray.data

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
        ds = ds.map(_finish, fn_kwargs={"cfg": cfg}, compute=ray.data.TaskPoolStrategy(size=tasks),
                    num_cpus=0.125)
        for row in ds.iter_rows():
            on_result(pickle.loads(row["payload"]))
    finally:
        if started:
            ray.shutdown()


def _python_path() -> list[str]:
    """The driver's import path entries that workers need too (the working directory, PYTHONPATH)."""
    extra = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return [os.getcwd(), *extra]
