"""`OUTDIR/manifest/`: what a job has finished, so that running the same command again resumes it.

- `job.json`: the job's input and options, for people (rewritten by every run).
- `items.jsonl`: one JSON record per finished or failed item, appended and fsync'ed as each item is
  written; the last record of an item wins. A line cut short by a kill is ignored on reading.

An item is skipped on a later run when its last record says "done", its digest (definition + options +
model) is unchanged and every output file it lists still exists. Failed items are tried again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DIR = "manifest"
ITEMS = "items.jsonl"
JOB = "job.json"


class Manifest:
    """The manifest folder of one OUTDIR; not thread-safe (the driver alone writes it)."""

    def __init__(self, outdir: str | Path):
        self.outdir = Path(outdir)
        self.dir = self.outdir / DIR
        self.path = self.dir / ITEMS
        self.dir.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict] | None = None

    def records(self) -> dict[str, dict]:
        """item id → its last record (a copy of the file's state plus this run's appends)."""
        if self._records is None:
            self._records = {}
            if self.path.is_file():
                with open(self.path, encoding="utf-8") as f:
                    for line in f:
                        try:
                            rec = json.loads(line)
                        except ValueError:
                            continue  # a line cut short by a kill
                        if isinstance(rec, dict) and isinstance(rec.get("item_id"), str):
                            self._records[rec["item_id"]] = rec
        return self._records

    def finished(self, item_id: str, digest: str) -> bool:
        """Whether the item is done with this digest and its output files exist."""
        rec = self.records().get(item_id)
        return (rec is not None and rec.get("status") == "done" and rec.get("digest") == digest
                and all((self.outdir / p).is_file() for p in rec.get("outputs", [])))

    def append(self, record: dict) -> None:
        """Add one record durably (flushed and fsync'ed before returning)."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() > 0 and not _ends_with_newline(self.path):
                f.write("\n")  # after a torn last line, start a fresh one
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records()[record["item_id"]] = record

    def write_job(self, job: dict) -> None:
        write_atomic(self.dir / JOB, json.dumps(job, indent=2, ensure_ascii=False, default=str).encode())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file renamed into place (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
