"""Benchmark the map click path on a random-weight sam_vit_b with tiles from a local HTTP server.

Prints: cold-window latency, cached follow-up click latency (p50/p95 over N clicks, server and client side),
their ratio, the non-model share of a cached click, and our decode vs `SamPredictor.predict` on the same
inputs. Run: `make bench` (or `.venv/bin/python bench/bench_segment.py --clicks 50`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from samgis.engine.protocol import Prompts  # noqa: E402
from samgis.engine.registry import get_model_spec  # noqa: E402
from samgis.engine.sam import SamEngine, build_sam  # noqa: E402
from samgis.settings import Settings  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402
from tests.support.scene import default_scene  # noqa: E402
from tests.support.tileserver import SceneTileServer  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def click(lng: float, lat: float, z: int) -> dict:
    d = 0.02
    return {"bbox": {"ne": {"lat": lat + d, "lng": lng + d}, "sw": {"lat": lat - d, "lng": lng - d}},
            "zoom": z, "source": "Scene", "prompts": [{"type": "point", "lat": lat, "lng": lng, "label": 1}]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sam_vit_b")
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--cold", type=int, default=3)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()

    torch.manual_seed(0)
    spec = get_model_spec(args.model)
    engine = SamEngine(build_sam(spec.arch), spec.model_id, device="cpu", precision=args.precision)
    print(f"model {spec.model_id} (random weights), device cpu, precision {args.precision}, "
          f"torch threads {torch.get_num_threads()}")

    scene = default_scene()
    anchor = scene.shapes[0].polygon.representative_point()
    z = 17
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, SceneTileServer(scene) as tiles:
        settings = Settings(providers=tiles.write_providers(Path(tmp) / "p.json"), cache_dir=Path(tmp))
        with LiveServer(create_app(settings, engine=engine)) as srv, httpx.Client(base_url=srv.url, timeout=600) as c:
            cold_server, cold_client, cold_tiles = [], [], []
            for i in range(args.cold):  # distinct windows: 0.05° apart
                t = time.perf_counter()
                r = c.post("/v1/segment", json=click(anchor.x + 0.05 * i, anchor.y, z))
                cold_client.append((time.perf_counter() - t) * 1000)
                meta = r.json()["samgis"]
                assert meta["cache"] == "miss", meta
                cold_server.append(meta["timings_ms"]["total"])
                cold_tiles.append(meta["timings_ms"].get("tiles", 0.0))
            first = c.post("/v1/segment", json=click(anchor.x, anchor.y, z)).json()["samgis"]
            win = first["window"]
            import mercantile

            west, north = mercantile.ul(win["x"], win["y"], win["z"])
            east, south = mercantile.ul(win["x"] + 4, win["y"] + 4, win["z"])
            srv_ms, cli_ms, dec_ms = [], [], []
            for _ in range(args.clicks):
                lng = west + (east - west) * rng.uniform(0.2, 0.8)
                lat = south + (north - south) * rng.uniform(0.2, 0.8)
                t = time.perf_counter()
                r = c.post("/v1/segment", json=click(lng, lat, z))
                cli_ms.append((time.perf_counter() - t) * 1000)
                meta = r.json()["samgis"]
                if meta["cache"] != "hit":
                    continue
                srv_ms.append(meta["timings_ms"]["total"])
                dec_ms.append(meta["timings_ms"]["decode"])

    print(f"\ncold window (miss; tiles over local HTTP + encoder), {args.cold} windows:")
    print(f"  server p50 {pct(cold_server, 50):8.1f} ms   client p50 {pct(cold_client, 50):8.1f} ms   "
          f"tiles p50 {pct(cold_tiles, 50):6.1f} ms")
    print(f"cached follow-up click, {len(srv_ms)} clicks:")
    print(f"  server p50 {pct(srv_ms, 50):8.1f} ms   p95 {pct(srv_ms, 95):8.1f} ms")
    print(f"  client p50 {pct(cli_ms, 50):8.1f} ms   p95 {pct(cli_ms, 95):8.1f} ms   (HTTP + JSON included)")
    print(f"  decode p50 {pct(dec_ms, 50):8.1f} ms")
    print(f"ratio cold/cached (server p50): {pct(cold_server, 50) / pct(srv_ms, 50):.0f}x")
    non_model = [c_ - d for c_, d in zip(cli_ms, dec_ms)]
    print(f"non-model share of a cached click (client time − decode) / client time: "
          f"{100 * statistics.median(non_model) / statistics.median(cli_ms):.1f} %")

    # decode vs SamPredictor on identical inputs
    from segment_anything import SamPredictor

    image = np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    emb = engine.embed(image)
    pred = SamPredictor(engine.model)
    pred.features, pred.original_size, pred.input_size, pred.is_image_set = emb.features, (1024, 1024), (1024, 1024), True
    pts = rng.uniform(100, 900, (args.clicks, 2)).astype(np.float32)
    ours, ref = [], []
    for i in range(args.clicks):
        p, lab = pts[i:i + 1], np.ones(1, np.int32)
        t = time.perf_counter()
        engine.decode(emb, Prompts(points=p, labels=lab), multimask=False)
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        pred.predict(p, lab, multimask_output=False)
        ref.append((time.perf_counter() - t) * 1000)
    print(f"\ndecode, one point, {args.clicks} runs interleaved:")
    print(f"  samgis decode p50 {pct(ours, 50):6.1f} ms   SamPredictor.predict p50 {pct(ref, 50):6.1f} ms   "
          f"ratio {pct(ours, 50) / pct(ref, 50):.2f}x")


if __name__ == "__main__":
    main()
