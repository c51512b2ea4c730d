"""Models side by side on this machine: cold window, cached click, embedding bytes, IoU vs the torch reference.

Rows: sam_vit_b (torch), sam2.1_hiera_tiny and _small (torch), and the ONNX fp32 and uint8 pairs exported
from the fastest torch model. Random weights of the real architectures (no weights can be downloaded here),
so the timings are real and the masks are not: IoU compares a pair with the torch model it was exported from.

- cold window: the window's 16 tiles read from a local tile folder (what a warm tile cache costs) and
  mosaicked, plus the encoder (p50 over `--windows` windows);
- cached click: one include point decoded against a cached embedding, as the server does (p50 of `--clicks`);
- embedding bytes: what the embedding cache counts for one 1024 px window.

`--baseline`: also run the paths these backends had before the issue-9 work (rebuilt here, in the bench
only: SAM 2's package `MaskDecoder` and `forward_image` + `_prepare_backbone_features`, the ONNX pair's
full `decoder.onnx` without the per-window constants, torch's bilinear upscaling of the masks on the torch
thread), interleaved with the current ones window by window and click by click, and print the ratios
current / baseline — the figure that means something on a shared machine. SAM 1 has no baseline here.

Run: `.venv/bin/python bench/bench_models.py` (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samgis.engine.protocol import Prompts  # noqa: E402
from samgis.engine.registry import get_model_spec  # noqa: E402
from samgis.engine.threads import in_fresh_thread, on_torch_thread  # noqa: E402
from samgis.geo.fetch import TileFetcher  # noqa: E402
from samgis.geo.sources import SourceRegistry  # noqa: E402
from samgis.geo.tiles import Window  # noqa: E402

Z, X0, Y0 = 17, 68000, 46000


def textured_tile(seed: int) -> np.ndarray:
    """(256, 256, 3) uint8 RGB: blobs and noise, so the encoder sees texture."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256]
    img = np.zeros((256, 256, 3))
    for _ in range(4):
        cy, cx, rad = r.uniform(0, 256, 2).tolist() + [r.uniform(20, 90)]
        img += r.uniform(0, 255, 3) * (np.hypot(yy - cy, xx - cx) < rad)[..., None]
    return np.clip(img * 0.5 + r.normal(0, 12, img.shape) + 60, 0, 255).astype(np.uint8)


def write_tiles(folder: Path, windows: int) -> None:
    for w in range(windows):
        for dx in range(4):
            for dy in range(4):
                x, y = X0 + 4 * w + dx, Y0 + dy
                path = folder / str(Z) / str(x) / f"{y}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(textured_tile(x * 7 + y)).save(path)


def window(i: int) -> Window:
    """Window i: 4 × 4 tiles at zoom Z, side by side along x."""
    return Window(z=Z, x=X0 + 4 * i, y=Y0)


def read_window(fetcher: TileFetcher, source, i: int) -> np.ndarray:
    return asyncio.run(fetcher.fetch_window(source, window(i)))


def p50(values: list[float]) -> float:
    return statistics.median(values)


def clicks(n: int, seed: int = 5) -> list[Prompts]:
    r = np.random.default_rng(seed)
    return [Prompts(points=r.uniform(50, 970, (1, 2)), labels=[1]) for _ in range(n)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# --- the pre-issue-9 paths, for `--baseline` (bench only) ------------------------------------------------

def _torch_masks(low_res: np.ndarray, size) -> np.ndarray:
    """The old post-processing: torch bilinear upscaling (SAM 2 rule) and threshold, on the torch thread."""
    import torch.nn.functional as F

    def run():
        with torch.inference_mode():
            x = F.interpolate(torch.from_numpy(low_res).float(), tuple(size), mode="bilinear", align_corners=False)
            return (x > 0).numpy()

    return on_torch_thread(run)


def sam2_baseline_embed(engine, image: np.ndarray) -> None:
    """`forward_image` + `_prepare_backbone_features` + no_mem_embed, as `Sam2Engine._embed` ran them."""
    def run():
        x = engine.transforms(np.ascontiguousarray(image))[None]
        with torch.inference_mode():
            _, feats, _, _ = engine.model._prepare_backbone_features(engine.model.forward_image(x))
            feats[-1] = feats[-1] + engine.model.no_mem_embed
            return [f.permute(1, 2, 0).contiguous() for f in feats]

    in_fresh_thread(run)


def sam2_baseline_embedding(emb):
    """The embedding as the old decoder read it: NCHW high-res features, no per-window constants."""
    from types import SimpleNamespace

    f = emb.features
    return dataclasses.replace(emb, aux=None, features=SimpleNamespace(image_embed=f.image_embed,
                                                                        high_res_feats=f.high_res_feats))


def sam2_baseline_decode(engine, old_emb, prompts: Prompts) -> np.ndarray:
    """The package's `MaskDecoder` on the torch thread, then torch's upscaling: the old `Sam2Engine.decode`."""
    size = old_emb.original_size

    def run():
        coords = engine._to_model_frame(prompts.points, size)[None]
        labels = torch.as_tensor(prompts.labels, dtype=torch.int)[None]
        with torch.inference_mode():
            low, iou = engine._decode_low_res(old_emb, coords, labels, None, None, False)
            return low.float().clamp(-32, 32).numpy(), low.float().numpy()

    clamped, low = on_torch_thread(run)
    return _torch_masks(low, size)


def onnx_baseline_embed(engine, image: np.ndarray) -> None:
    """The encoder alone (the old pairs had no per-window constants)."""
    prepare, engine.prepare = engine.prepare, None
    try:
        engine.embed(image)
    finally:
        engine.prepare = prepare


def onnx_baseline_embedding(emb):
    """The embedding as the old pairs had it: the encoder's three outputs in NCHW, no per-window constants."""
    from samgis.engine.backends.onnx.engine import _high_res_nchw

    return dataclasses.replace(emb, aux=None, features={**emb.features, **_high_res_nchw(emb.aux, 64)})


def onnx_baseline_decode(engine, old_emb, prompts: Prompts) -> np.ndarray:
    """`decoder.onnx` (no per-window constants), then torch's upscaling on the torch thread."""
    size = old_emb.original_size
    pts = engine._coords(prompts.points, size)
    coords = np.concatenate([pts, [[0.0, 0.0]]])[None].astype(np.float32)
    labels = np.concatenate([prompts.labels.astype(np.float32), [-1.0]])[None].astype(np.float32)
    iou, low = engine._select(*engine._run(old_emb.features, coords, labels, None, size), False)
    np.clip(low, -32, 32)
    return _torch_masks(low, size)


def measure(name: str, engine, fetcher, source, windows: int, n_clicks: int, ref=None, baseline=None) -> dict:
    """`baseline`: (embed(image), old_embedding(emb), decode(old_emb, prompts)) of the old paths, run
    interleaved with the current ones; the row then carries the median ratios current / baseline."""
    cold, tiles, cold_ratio = [], [], []
    emb = None
    for i in range(windows):
        t0 = time.perf_counter()
        image = read_window(fetcher, source, i)
        t1 = time.perf_counter()
        emb = engine.embed(image)
        cold.append(time.perf_counter() - t0)
        tiles.append(t1 - t0)
        if baseline:
            t2 = time.perf_counter()
            baseline[0](image)
            cold_ratio.append((cold[-1] - tiles[-1]) / (time.perf_counter() - t2))
    prompts = clicks(n_clicks)
    engine.decode(emb, prompts[0])  # warm-up
    old_emb = baseline[1](emb) if baseline else None
    if baseline:
        baseline[2](old_emb, prompts[0])
    times, masks, click_ratio, agree = [], [], [], []
    for p in prompts:
        t0 = time.perf_counter()
        out = engine.decode(emb, p)
        times.append(time.perf_counter() - t0)
        masks.append(out.masks[0, 0])
        if baseline:
            t0 = time.perf_counter()
            old = baseline[2](old_emb, p)
            click_ratio.append(times[-1] / (time.perf_counter() - t0))
            agree.append(iou(old[0, 0], masks[-1]))
    row = {"model": name, "cold_s": p50(cold), "tiles_s": p50(tiles), "click_ms": 1000 * p50(times),
           "embedding_mib": emb.nbytes / 2**20, "masks": masks, "image": image, "emb": emb}
    if baseline:
        row.update(encoder_ratio=p50(cold_ratio), click_ratio=p50(click_ratio), baseline_iou=min(agree))
    if ref is not None:
        row["iou"] = [iou(m, r) for m, r in zip(masks, ref["masks"])]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--models", default="sam_vit_b,sam2.1_hiera_tiny,sam2.1_hiera_small")
    ap.add_argument("--onnx-from", default="sam2.1_hiera_tiny",
                    help="torch model exported to the ONNX rows (default: the one with the fewest FLOPs)")
    ap.add_argument("--baseline", action="store_true",
                    help="also run the pre-issue-9 SAM 2 / ONNX paths interleaved and print the ratios")
    args = ap.parse_args()
    torch.manual_seed(0)
    from samgis.engine.backends.sam1 import SamEngine, build_sam

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_tiles(tmp / "tiles", args.windows)
        providers = tmp / "providers.json"
        providers.write_text(json.dumps({"Bench": {"path": str(tmp / "tiles" / "{z}" / "{x}" / "{y}.png"),
                                                   "max_zoom": 22}}))
        sources = SourceRegistry.from_config(providers, builtins=False)
        source = sources.get("Bench")
        fetcher = TileFetcher(None)
        rows, torch_models = [], {}
        for mid in args.models.split(","):
            spec = get_model_spec(mid)
            if spec.backend == "sam1":
                model = in_fresh_thread(build_sam, spec.config)
                engine = SamEngine(model, mid, device="cpu")
            else:
                from samgis.engine.backends.sam2 import Sam2Engine, build_model

                model = in_fresh_thread(build_model, spec.config)
                engine = Sam2Engine(model, mid, device="cpu")
            torch_models[mid] = (spec, model)
            base = None
            if args.baseline and spec.backend != "sam1":
                base = (partial(sam2_baseline_embed, engine), sam2_baseline_embedding,
                        partial(sam2_baseline_decode, engine))
            rows.append(measure(f"{mid} torch fp32", engine, fetcher, source, args.windows, args.clicks,
                                baseline=base))
            print(f"{rows[-1]['model']}: cold {rows[-1]['cold_s']:.2f} s, click {rows[-1]['click_ms']:.1f} ms",
                  flush=True)
        mid = args.onnx_from
        fastest = next(r for r in rows if r["model"].split()[0] == mid)
        spec, model = torch_models[mid]
        from samgis.engine.backends.onnx import load_pair
        from samgis.engine.backends.onnx.export import export_sam1, export_sam2

        export = export_sam1 if spec.backend == "sam1" else export_sam2
        for quantize in (None, "uint8"):
            out = tmp / f"onnx-{quantize or 'fp32'}"
            t0 = time.perf_counter()
            in_fresh_thread(export, model, mid, out, quantize=quantize)
            export_s = time.perf_counter() - t0
            engine = load_pair(out, "cpu")
            base = None
            if args.baseline and engine.fast_decoder is not None:
                base = (partial(onnx_baseline_embed, engine), onnx_baseline_embedding,
                        partial(onnx_baseline_decode, engine))
            row = measure(f"{mid} onnx {quantize or 'fp32'}", engine, fetcher, source, args.windows, args.clicks,
                          ref=fastest, baseline=base)
            row["export_s"] = export_s
            rows.append(row)
            print(f"{row['model']}: cold {row['cold_s']:.2f} s, click {row['click_ms']:.1f} ms", flush=True)
        asyncio.run(fetcher.aclose())

    print()
    print("| model | cold window p50 (tiles + encoder) | cached click decode p50 | embedding per window | "
          "mask IoU vs torch fp32 (mean / min) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        ious = r.get("iou")
        q = f"{np.mean(ious):.4f} / {np.min(ious):.4f}" if ious else "reference"
        print(f"| {r['model']} | {r['cold_s']:.2f} s (tiles {r['tiles_s'] * 1000:.0f} ms) | {r['click_ms']:.1f} ms "
              f"| {r['embedding_mib']:.1f} MiB | {q} |")
    if args.baseline:
        print()
        print("| model | encoder pass, current / baseline (p50 of per-window ratios) | cached click, current / "
              "baseline (p50 of per-click ratios) | min mask IoU current vs baseline |")
        print("| --- | --- | --- | --- |")
        for r in rows:
            if "click_ratio" in r:
                print(f"| {r['model']} | {r['encoder_ratio']:.3f} | {r['click_ratio']:.3f} | {r['baseline_iou']:.4f} |")


if __name__ == "__main__":
    main()
