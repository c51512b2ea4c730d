"""Batch jobs: many map areas, areas of interest or images, on one machine (`local`) or a Ray cluster (`ray`).

    run_batch(INPUT, OUTDIR, engine_factory, executor="local" | "ray", workers=N)

- `inputs`: the job's items (map areas from prompt features, or images + prompts JSON).
- `work`: the three stages of an item (load, infer, finish), shared by both executors; `aoi`: those of a
  whole area of interest (lattice of windows, automatic masks, stitching by `samgis.vector.stitch`).
- `executors/local`, `executors/ray`: where items run; Ray is imported only by `executors.ray`, when used.
  "Engine" means the model only (`engine_factory` builds one per model process).
- `manifest`, `outputs`, `report`: resumable bookkeeping, output files, report.html / report.md.
- the command line is `samgis.cli.batch` (`samgis batch`).
"""

from samgis.batch.job import BatchSummary, run_batch
from samgis.batch.work import JobConfig

__all__ = ["BatchSummary", "JobConfig", "run_batch"]
