"""Benchmark the SAM 3 backend on weights of the real architecture (random unless --checkpoint is given).

Prints: model load (the package's builder without weight init, as the checkpoint path runs it; with
`--checkpoint sam3.pt` the whole load), set-image per window (1008² encoder pass, both necks), one concept
prompt (text encoder + detector + mask head, masks at window size), one point prompt (instance decoder), grid points
per decoder pass (`point_batch_rows`, interleaved side by side), automatic masks over a `--grid`² grid, and the
embedding's bytes per window in fp32 and in the bf16 kept on CUDA, with how many windows a cache of a given size
holds. Random weights give the real timings (same operations) but meaningless masks.
Run: `.venv/bin/python bench/bench_sam3.py [--windows 2] [--grid 8] [--checkpoint sam3.pt] [--cache-gib 1 4 16]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from samgis.engine.backends.sam3 import Sam3Engine, build_model, load_model  # noqa: E402
from samgis.engine.protocol import AmgOptions, ConceptPrompt, Prompts  # noqa: E402


def image(h: int = 1024, w: int = 1024, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 RGB: smooth colour blobs plus noise (`tests.conftest.textured_image`)."""
    from tests.conftest import textured_image

    return textured_image(h, w, seed)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=2, help="set-image passes (1024² windows)")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--grid", type=int, default=8, help="automatic masks: points per side (0: skip)")
    ap.add_argument("--no-concepts", action="store_true", help="skip the concept prompts")
    ap.add_argument("--checkpoint", type=Path, help="an official sam3.pt: time the whole load")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-gib", type=float, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # the package's autocast / jit deprecation warnings
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
          + ("" if args.checkpoint else "; random weights (timings are real, masks are not)"))

    if args.checkpoint:
        model, t = timed(lambda: load_model("sam3", args.checkpoint))
        print(f"model load (build without init + read + exact load of {args.checkpoint.name}): {t:.1f} s")
    else:
        _, t = timed(lambda: build_model(init="none"))
        del _  # one model in memory at a time (3.4 GB each)
        print(f"model load, architecture only (what a checkpoint load builds before reading it): {t:.1f} s")
        model, t = timed(lambda: build_model(seed=0, init="fast"))
        print(f"random-weight build (seeded fast init, tests and this bench): {t:.1f} s")
    engine = Sam3Engine(model, "sam3", device=args.device)

    times, emb = [], None
    for i in range(args.windows):
        emb = None  # the previous window's 127 MiB go first
        emb, t = timed(lambda: engine.embed(image(seed=i)))
        times.append(t)
    print(f"set-image per 1024² window: p50 {statistics.median(times):.1f} s over {len(times)} "
          f"(first {times[0]:.1f} s)")

    if not args.no_concepts:
        _, t_text_cold = timed(lambda: engine.find(emb, ConceptPrompt("swimming pool"), 0.5))
        found, t_text = timed(lambda: engine.find(emb, ConceptPrompt("swimming pool"), 0.5))
        box = np.array([[300, 300, 500, 460]], np.float32)
        _, t_box = timed(lambda: engine.find(emb, ConceptPrompt(boxes=box, labels=[1]), 0.5))
        print(f"concept prompt 'swimming pool': {t_text_cold:.2f} s first (text encoder), {t_text:.2f} s with the "
              f"phrase's text features cached ({len(found)} instances ≥ 0.5); one exemplar box: {t_box:.2f} s")

    clicks = []
    for j in range(args.clicks + 1):
        _, t = timed(lambda: engine.decode(emb, Prompts(points=[[200 + 100 * j, 512]], labels=[1]), multimask=True))
        clicks.append(t)
    print(f"point prompt (multimask, masks at 1024²): p50 {1000 * statistics.median(clicks[1:]):.1f} ms")

    if args.grid:
        r = np.random.default_rng(1)
        pts = (r.uniform(0, 1024, (8, 1, 2))).astype(np.float32)
        lab = np.ones((8, 1), np.int32)
        per_rows: dict[int, list[float]] = {1: [], 2: [], 4: []}
        default_rows = engine.point_batch_rows
        for _ in range(3):  # interleaved, so load on the machine hits every setting alike
            for rows in per_rows:
                engine.point_batch_rows = rows
                _, t = timed(lambda: engine.decode_point_batch(emb, pts, lab, True))
                per_rows[rows].append(1000 * t / len(pts))
        engine.point_batch_rows = default_rows
        print("grid points per decoder pass (multimask, low-res only), ms per point, p50 of 3: "
              + ", ".join(f"{rows} rows {statistics.median(v):.0f}" for rows, v in per_rows.items())
              + f" (engine default {default_rows})")
        opts = AmgOptions(points_per_side=args.grid)
        recs, t = timed(lambda: engine.generate(emb, opts))
        print(f"automatic masks, {args.grid}² grid at 1024² (default filters): {t:.1f} s, {len(recs)} masks "
              f"({1000 * t / opts.grid_points():.0f} ms per grid point)")

    fp32 = emb.nbytes
    half = emb.features.to(torch.bfloat16).nbytes
    print(f"embedding per window: {fp32:,} B = {fp32 / 2**20:.1f} MiB fp32 (CPU); {half:,} B = "
          f"{half / 2**20:.1f} MiB bf16 (CUDA)")
    for gib in args.cache_gib:
        cap = gib * 2**30
        print(f"  a {gib:g} GiB embedding cache holds {int(cap // fp32)} windows (fp32) / {int(cap // half)} (bf16)")


if __name__ == "__main__":
    main()
