"""`run_batch`: read the items, skip the finished ones, run an executor, write outputs, manifest and report."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from samgis.batch.inputs import item_digest, load_items
from samgis.batch.manifest import Manifest
from samgis.batch.outputs import write_aoi_segments, write_coco, write_item, write_segments
from samgis.batch.report import write_report
from samgis.batch.work import ItemResult, JobConfig

from samgis.batch.executors import EXECUTORS

ENGINES = EXECUTORS
"""Older name of `EXECUTORS`."""


@dataclass
class BatchSummary:
    """What a run did: counts of the job's items, this run's wall time and items/s."""

    total: int
    done: int
    failed: int
    skipped: int
    processed: int
    seconds: float
    outdir: Path
    errors: dict = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def run_batch(input_path: str | Path, outdir: str | Path, engine_factory: Callable, *,
              cfg: JobConfig = JobConfig(), executor: str = "local", workers: int = 1,
              ray_address: str | None = None, zoom: int | None = None, source: str | None = None,
              prompts_file: str | Path | None = None, model_key: str | None = None,
              progress: bool = True, everything: bool = False, engine: str | None = None,
              text: str | None = None, text_column: str | None = None) -> BatchSummary:
    """Run (or resume) the batch job of `input_path` into `outdir`.

    `engine_factory`: picklable zero-argument callable returning an `Engine` (called once per model process).
    `model_key` identifies the model in the resume digest (default: the factory's `model_key` or repr).
    `executor`: "local" or "ray" (`engine` is its older name and wins when given).
    `everything`: the input is a vector file of areas of interest, segmented whole (`samgis.batch.aoi`).
    `text`: a phrase (every instance of it, `samgis.batch.concepts`) for items without their own; for a vector
    file it implies `everything`, like `text_column` (the AOI property holding each area's phrase, default
    "text"). A model without the "text" capability fails the job when its engine is built (MissingCapability;
    with Ray the driver builds it once to check, before any cluster work).
    """
    executor = engine if engine is not None else executor
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, not {executor!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    items = load_items(input_path, zoom=zoom, source=source, prompts_file=prompts_file, everything=everything,
                       text=text, text_column=text_column)
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids repeat: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
    model_key = model_key or getattr(engine_factory, "model_key", None) or repr(engine_factory)
    options = {**cfg.output_options(), "model": model_key}
    digests = {it.item_id: item_digest(it, options) for it in items}
    if any(it.kind == "aoi" for it in items):  # window files of AOIs, per set of output options and model
        import hashlib
        import json
        from dataclasses import replace

        key = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:12]
        cfg = replace(cfg, work_dir=str((outdir / "work" / key).resolve()))
    manifest = Manifest(outdir)
    todo = [it for it in items if not manifest.finished(it.item_id, digests[it.item_id])]
    if any(getattr(it, "text", None) and not it.problem for it in todo):  # refused once, at engine build
        from samgis.batch.concepts import ConceptCheckedFactory

        engine_factory = ConceptCheckedFactory(engine_factory)
        if executor == "ray":  # a Ray actor's failed start reaches the driver as ActorDiedError: check here
            engine_factory()
    run_id = uuid.uuid4().hex[:12]
    t_start = time.time()
    manifest.write_job({"input": str(input_path), "executor": executor, "workers": workers, "model": model_key,
                        "zoom": zoom, "source": source, "prompts": None if prompts_file is None else str(prompts_file),
                        "text": text, "text_column": text_column,
                        "options": options, "items": len(items), "last_run": run_id, "started": t_start})

    from tqdm import tqdm

    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="item", desc="samgis batch",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    errors: dict[str, str] = {}

    def on_result(result: ItemResult) -> None:
        t0 = time.perf_counter()
        record = {"item_id": result.item_id, "kind": result.kind, "digest": digests[result.item_id],
                  "run": run_id, "status": "done" if result.ok else "failed"}
        if result.ok:
            try:
                record.update(write_item(result, outdir))
                record["n_segments"] = result.n_segments
            except Exception as exc:  # a write error fails the item, not the job
                from samgis.batch.work import error_text

                record.update(status="failed", error=error_text(exc), stage="write")
        else:
            record.update(error=result.error, stage=result.stage)
        if record["status"] == "failed":
            errors[result.item_id] = record["error"]
        timings = dict(result.timings)
        timings["write"] = time.perf_counter() - t0
        record["timings"] = {k: round(v, 4) for k, v in timings.items()}
        record["t_end"] = time.time()
        manifest.append(record)
        bar.update(1)
        if errors:
            bar.set_postfix(failed=len(errors), refresh=False)

    try:
        if executor == "local":
            from samgis.batch.executors.local import run_local

            run_local(todo, engine_factory, cfg, on_result, workers=workers)
        else:
            from samgis.batch.executors.ray import run_ray

            run_ray(todo, engine_factory, cfg, on_result, workers=workers, address=ray_address)
    finally:
        bar.close()
    t_end = time.time()
    records = manifest.records()
    write_segments(outdir, [it.item_id for it in items if it.kind == "map"], records)
    write_coco(outdir, [it.item_id for it in items if it.kind == "image"], records)
    write_aoi_segments(outdir, [it.item_id for it in items if it.kind == "aoi"], records)
    if any(it.kind == "aoi" for it in items):  # window files of AOIs whose GeoPackage is complete
        from samgis.batch.aoi import clean_work

        clean_work(cfg, items, records, digests)
    write_report(outdir, [(it.item_id, it.kind) for it in items], records,
                 {"run_id": run_id, "t_start": t_start, "t_end": t_end, "executor": executor, "workers": workers,
                  "model": model_key, "input": str(input_path)})
    statuses = [records.get(i, {}).get("status") for i in ids]
    return BatchSummary(total=len(items), done=statuses.count("done"), failed=statuses.count("failed"),
                        skipped=len(items) - len(todo), processed=len(todo), seconds=t_end - t_start,
                        outdir=outdir, errors={i: records[i]["error"] for i in ids
                                               if records.get(i, {}).get("status") == "failed"})
