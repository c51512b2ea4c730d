"""Batch executors: where a job's items run. "Engine" means the model only (`samgis.engine`).

- `local`: one process, the model in the calling thread, loading and post-processing in threads beside it.
- `ray`: a streaming Ray Data pipeline (Ray is imported there only, when it is used).

Both run the same three stages (`samgis.batch.work`) and call `on_result` on the driver for each item.
"""

EXECUTORS = ("local", "ray")
