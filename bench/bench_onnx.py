"""Benchmark the onnx backend against the torch SAM 1 engine it was exported from.

Builds a random-weight model (`--model sam_vit_b` by default; `test_vit_tiny` for a quick run), exports
the fp32 pair and its uint8 (dynamic quantization) copy, and reports: export and quantization time, file
sizes, load time (hash check included), embed time (torch, ONNX fp32, ONNX uint8), one-click decode time
(median of `--repeat`), and the mask IoU of each ONNX pair against torch over a set of point / box /
multimask prompts on a textured 768 x 1024 image. Random weights: IoU figures of trained weights may differ.

Run: `.venv/bin/python bench/bench_onnx.py` (a few minutes for sam_vit_b on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samgis.engine.backends.onnx import load_pair  # noqa: E402
from samgis.engine.backends.onnx.export import export_sam1, quantize_pair  # noqa: E402
from samgis.engine.protocol import Prompts  # noqa: E402
from samgis.engine.registry import get_model_spec  # noqa: E402
from samgis.engine.backends.sam1 import SamEngine, build_sam  # noqa: E402
from samgis.engine.threads import in_fresh_thread  # noqa: E402
from tests.conftest import textured_image  # noqa: E402  (also registers test_vit_tiny)

PROMPTS = [
    (Prompts(points=[[300.0, 200.0]], labels=[1]), False),
    (Prompts(points=[[700.0, 500.0], [650.0, 300.0]], labels=[1, 0]), False),
    (Prompts(boxes=[[100.0, 80.0, 600.0, 500.0], [500.0, 300.0, 1000.0, 760.0]]), False),
    (Prompts(points=[[400.0, 400.0]], labels=[1], boxes=[[200.0, 150.0, 700.0, 650.0]]), False),
    (Prompts(points=[[850.0, 120.0]], labels=[1]), True),
]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def decode_ms(engine, emb, repeat: int) -> float:
    prompts = Prompts(points=[[300.0, 200.0]], labels=[1])
    engine.decode(emb, prompts)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        engine.decode(emb, prompts)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sam_vit_b")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out", help="keep the pairs in this folder (default: a temporary one)")
    args = ap.parse_args()

    spec = get_model_spec(args.model)
    torch.manual_seed(1)
    model = in_fresh_thread(build_sam, spec.arch).eval()
    image = textured_image(768, 1024, seed=5)
    res: dict = {"model": args.model, "weights": "random", "image": [768, 1024], "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        _, res["export_s"] = timed(export_sam1, model, args.model, root / "fp32")
        _, res["quantize_s"] = timed(quantize_pair, root / "fp32", root / "uint8")
        for kind in ("fp32", "uint8"):
            res[f"{kind}_mb"] = {f.name: round(f.stat().st_size / 1e6, 1) for f in sorted((root / kind).glob("*.onnx"))}
        ref = SamEngine(model, args.model, device="cpu", precision="fp32")
        ref_emb, res["torch_embed_s"] = timed(ref.embed, image)
        res["torch_decode_ms"] = decode_ms(ref, ref_emb, args.repeat)
        refs = [ref.decode(ref_emb, p, m).masks for p, m in PROMPTS]
        for kind in ("fp32", "uint8"):
            engine, res[f"{kind}_load_s"] = timed(load_pair, root / kind, "cpu", threads=args.threads)
            engine.embed(image[:64, :64])  # first run: ORT allocations
            emb, res[f"{kind}_embed_s"] = timed(engine.embed, image)
            res[f"{kind}_decode_ms"] = decode_ms(engine, emb, args.repeat)
            ious = [iou(o[q, k], r[q, k]) for (p, m), r in zip(PROMPTS, refs)
                    for o in [engine.decode(emb, p, m).masks] for q in range(r.shape[0]) for k in range(r.shape[1])]
            res[f"{kind}_iou_vs_torch"] = {"mean": round(float(np.mean(ious)), 4), "min": round(float(np.min(ious)), 4),
                                           "masks": len(ious)}
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}, indent=2))


if __name__ == "__main__":
    main()
