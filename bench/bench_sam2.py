"""Benchmark the SAM 2.1 backend on random weights of the real architectures (no checkpoint needed).

Prints per model: encoder pass p50 (1024² image), single-click decode p50 (one mask and multimask, masks at
1024²), decode ms per query of `decode_point_batch` by rows per decoder pass, and `SAM2ImagePredictor.predict`
p50 on the same click for comparison. Threads as in the service: encoder passes on a fresh thread, decodes on
the torch thread. Run: `.venv/bin/python bench/bench_sam2.py --models sam2.1_hiera_tiny sam2.1_hiera_small`.
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

from samgis.engine.backends.sam2 import MODELS, Sam2Engine, build_model  # noqa: E402
from samgis.engine.protocol import Prompts  # noqa: E402
from samgis.engine.threads import in_fresh_thread, on_torch_thread  # noqa: E402


def p50_ms(fn, n: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def image(h: int = 1024, w: int = 1024, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 RGB: smooth colour blobs plus noise (`tests.conftest.textured_image`)."""
    from tests.conftest import textured_image

    return textured_image(h, w, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["sam2.1_hiera_tiny"], choices=sorted(MODELS))
    ap.add_argument("--embeds", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script inside sam2's transforms
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    img = image()
    click = Prompts(np.array([[500.0, 400.0]], np.float32), np.array([1], np.int32))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for model_id in args.models:
        torch.manual_seed(0)
        engine = Sam2Engine(in_fresh_thread(build_model, MODELS[model_id].config), model_id, device=args.device)
        holder = {}
        embed_ms = p50_ms(lambda: holder.update(e=engine.embed(img)), args.embeds)
        emb = holder["e"]
        one = p50_ms(lambda: engine.decode(emb, click, False), args.clicks, warm=2)
        multi = p50_ms(lambda: engine.decode(emb, click, True), args.clicks, warm=2)
        print(f"{model_id}: embed p50 {embed_ms:.0f} ms; click decode p50 {one:.1f} ms (multimask {multi:.1f} ms); "
              f"embedding {emb.nbytes / 2**20:.1f} MiB")
        pts = np.random.default_rng(1).uniform(0, 1024, (16, 1, 2))
        for rows in (1, 2, 4, 8, 16):
            engine.point_batch_rows = rows
            ms = p50_ms(lambda: engine.decode_point_batch(emb, pts, np.ones((16, 1)), True), 3)
            print(f"  decode_point_batch, {rows:2d} rows per pass: {ms / 16:.1f} ms per query")
        predictor = SAM2ImagePredictor(engine.model)
        on_torch_thread(predictor.set_image, img)  # the predictor's clicks on the same thread as ours
        ref = p50_ms(lambda: on_torch_thread(predictor.predict, click.points, click.labels,
                                             multimask_output=False), args.clicks, warm=2)
        print(f"  SAM2ImagePredictor.predict p50 {ref:.1f} ms (same click, same thread)")


if __name__ == "__main__":
    main()
