"""Batch jobs: many map areas or images, on one machine (`local`) or a Ray cluster (`ray`).

    run_batch(INPUT, OUTDIR, engine_factory, engine="local" | "ray", workers=N)

- `inputs`: the job's items (map areas from prompt features, or images + prompts JSON).
- `work`: the three stages of an item (load, infer, finish), shared by both engines.
- `local` / `ray_engine`: the engines; Ray is imported only by `ray_engine`, when it is used.
- `manifest`, `outputs`, `report`: resumable bookkeeping, output files, report.html / report.md.
- the command line is `samgis.cli.batch` (`samgis batch`).
"""

from samgis.batch.job import BatchSummary, run_batch
from samgis.batch.work import JobConfig

__all__ = ["BatchSummary", "JobConfig", "run_batch"]
