"""Benchmark the map click path on a random-weight sam_vit_b with tiles from a local HTTP server.

Prints: cold-window latency, cached follow-up click latency (p50/p95 over N clicks, server and client side),
their ratio, the non-model share of a cached click, and our decode vs `SamPredictor.predict` on the same
inputs. Run: `make bench` (or `.venv/bin/python bench/bench_segment.py --clicks 50`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import mercantile
import numpy as np
import torch
from shapely.geometry import Point

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from samgis.engine.protocol import Prompts  # noqa: E402
from samgis.engine.registry import get_model_spec  # noqa: E402
from samgis.engine.backends.sam1 import SamEngine, build_sam  # noqa: E402
from samgis.engine.threads import in_fresh_thread, on_torch_thread  # noqa: E402
from samgis.settings import Settings  # noqa: E402
from samgis.vector.export import geojson_bytes  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402
from tests.support.colour_engine import ColourRegionEngine  # noqa: E402
from tests.support.scene import default_scene  # noqa: E402
from tests.support.tileserver import SceneTileServer  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def click(lng: float, lat: float, z: int) -> dict:
    d = 0.02
    return {"bbox": {"ne": {"lat": lat + d, "lng": lng + d}, "sw": {"lat": lat - d, "lng": lng - d}},
            "zoom": z, "source": "Scene", "prompts": [{"type": "point", "lat": lat, "lng": lng, "label": 1}]}


@dataclass
class Clicks:
    cold_server: list = field(default_factory=list)
    cold_client: list = field(default_factory=list)
    cold_tiles: list = field(default_factory=list)
    cold_embed: list = field(default_factory=list)
    server: list = field(default_factory=list)
    client: list = field(default_factory=list)
    decode: list = field(default_factory=list)
    vectorize: list = field(default_factory=list)
    validate: list = field(default_factory=list)
    serialize: list = field(default_factory=list)
    parts: list = field(default_factory=list)


def run_clicks(engine, providers: Path, cache_dir: Path, anchor, z: int, n_cold: int, n_clicks: int,
               rng: np.random.Generator, shape=None) -> Clicks:
    """Cold clicks in `n_cold` distinct windows, then `n_clicks` cache-hit clicks (inside `shape` when given,
    else in the middle of the first window), over real HTTP."""
    out = Clicks()
    settings = Settings(providers=providers, cache_dir=cache_dir)
    with LiveServer(create_app(settings, engine=engine)) as srv, httpx.Client(base_url=srv.url, timeout=600) as c:
        for i in range(n_cold):  # distinct windows: 0.05° apart
            t = time.perf_counter()
            r = c.post("/v1/segment", json=click(anchor.x + 0.05 * i, anchor.y, z))
            out.cold_client.append((time.perf_counter() - t) * 1000)
            meta = r.json()["samgis"]
            assert meta["cache"] == "miss", meta
            out.cold_server.append(meta["timings_ms"]["total"])
            out.cold_tiles.append(meta["timings_ms"].get("tiles", 0.0))
            out.cold_embed.append(meta["timings_ms"].get("embed", 0.0))
        win = c.post("/v1/segment", json=click(anchor.x, anchor.y, z)).json()["samgis"]["window"]
        west, north = mercantile.ul(win["x"], win["y"], win["z"])
        east, south = mercantile.ul(win["x"] + 4, win["y"] + 4, win["z"])
        while len(out.server) < n_clicks:
            if shape is None:
                lng = west + (east - west) * rng.uniform(0.2, 0.8)
                lat = south + (north - south) * rng.uniform(0.2, 0.8)
            else:
                x0, y0, x1, y1 = shape.bounds
                lng, lat = rng.uniform(x0, x1), rng.uniform(y0, y1)
                if not shape.contains(Point(lng, lat)):
                    continue
            t = time.perf_counter()
            r = c.post("/v1/segment", json=click(lng, lat, z))
            elapsed = (time.perf_counter() - t) * 1000
            fc = r.json()
            meta = fc["samgis"]
            if meta["cache"] != "hit":
                continue
            out.client.append(elapsed)
            out.server.append(meta["timings_ms"]["total"])
            out.decode.append(meta["timings_ms"]["decode"])
            out.vectorize.append(meta["timings_ms"]["vectorize"])
            out.validate.append(meta["timings_ms"]["validate"])
            t = time.perf_counter()
            geojson_bytes(fc)  # what the server did after `total` stopped: the same dict to JSON bytes
            out.serialize.append((time.perf_counter() - t) * 1000)
            out.parts.append(sum(1 if f["geometry"]["type"] == "Polygon" else len(f["geometry"]["coordinates"])
                                 for f in fc["features"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sam_vit_b")
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--cold", type=int, default=3)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()

    torch.manual_seed(0)
    spec = get_model_spec(args.model)
    # Built off the main thread, as the server's lifespan does (see `samgis.engine.threads`).
    model = in_fresh_thread(build_sam, spec.arch)
    engine = SamEngine(model, spec.model_id, device="cpu", precision=args.precision)
    print(f"model {spec.model_id} (random weights), device cpu, precision {args.precision}, "
          f"torch threads {torch.get_num_threads()}")

    scene = default_scene()
    anchor = scene.shapes[0].polygon.representative_point()
    z = 17
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, SceneTileServer(scene) as tiles:
        providers = tiles.write_providers(Path(tmp) / "p.json")
        vit = run_clicks(engine, providers, Path(tmp) / "a", anchor, z, args.cold, args.clicks, rng)
        # The same clicks answered by the colour-region test engine: real object outlines (a random-weight
        # model's masks are speckle, thousands of parts), so this measures the non-model path on realistic masks.
        real = run_clicks(ColourRegionEngine(), providers, Path(tmp) / "b", anchor, z, 1, args.clicks,
                          np.random.default_rng(0), shape=scene.shapes[0].polygon)

    print(f"\ncold window (miss; tiles over local HTTP + encoder), {args.cold} windows:")
    print(f"  server p50 {pct(vit.cold_server, 50):8.1f} ms   client p50 {pct(vit.cold_client, 50):8.1f} ms   "
          f"tiles p50 {pct(vit.cold_tiles, 50):6.1f} ms   embed p50 {pct(vit.cold_embed, 50):7.1f} ms")
    print(f"cached follow-up click, {len(vit.server)} clicks (random-weight masks: p50 "
          f"{pct(vit.parts, 50):.0f} polygon parts per answer):")
    print(f"  server p50 {pct(vit.server, 50):8.1f} ms   p95 {pct(vit.server, 95):8.1f} ms")
    print(f"  client p50 {pct(vit.client, 50):8.1f} ms   p95 {pct(vit.client, 95):8.1f} ms   (HTTP + JSON included)")
    print(f"  decode p50 {pct(vit.decode, 50):8.1f} ms   vectorize p50 {pct(vit.vectorize, 50):8.1f} ms")
    print(f"ratio cold/cached (server p50): {pct(vit.cold_server, 50) / pct(vit.server, 50):.0f}x")
    raw = [c_ - d for c_, d in zip(vit.client, vit.decode)]
    print(f"non-model share, random-weight masks (client − decode) / client: "
          f"{100 * statistics.median(raw) / statistics.median(vit.client):.1f} %")
    # Non-model work of a cached click, on real object outlines: server side (validate + window + cache
    # lookup + vectorize = total − decode, plus serialising the answer) and as the client sees it (+ HTTP).
    server_nm = [t - d + j for t, d, j in zip(real.server, real.decode, real.serialize)]
    client_nm = [c_ - d for c_, d in zip(real.client, real.decode)]
    snm, cnm, dec = statistics.median(server_nm), statistics.median(client_nm), pct(vit.decode, 50)
    print(f"non-model time on object masks ({pct(real.parts, 50):.0f} part, colour test engine, same server "
          f"path): server p50 {snm:.1f} ms (validate+window {pct(real.validate, 50):.1f}, vectorize "
          f"{pct(real.vectorize, 50):.1f}, JSON {pct(real.serialize, 50):.1f}); client p50 {cnm:.1f} ms (+ HTTP)")
    print(f"  → cached click = vit_b decode p50 {dec:.1f} ms + that: server {dec + snm:.1f} ms "
          f"(non-model share {100 * snm / (dec + snm):.1f} %), client {dec + cnm:.1f} ms "
          f"(non-model share {100 * cnm / (dec + cnm):.1f} %)")

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
        on_torch_thread(pred.predict, p, lab, multimask_output=False)  # the thread our decodes run on
        ref.append((time.perf_counter() - t) * 1000)
    print(f"\ndecode, one point, {args.clicks} runs interleaved:")
    print(f"  samgis decode p50 {pct(ours, 50):6.1f} ms   SamPredictor.predict p50 {pct(ref, 50):6.1f} ms   "
          f"ratio {pct(ours, 50) / pct(ref, 50):.2f}x")


if __name__ == "__main__":
    main()
