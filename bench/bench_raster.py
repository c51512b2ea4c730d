"""Benchmark raster sources against XYZ tiles.

Prints, for this machine:
- window read time (p50, p95) of a 1024² px window: a local COG (textured RGB, deflate, 512 px blocks,
  overviews) at native resolution and at overview level 4, vs 4 × 4 XYZ tiles from the local scene tile server
  (no disk cache, so every tile is a PNG over HTTP and a decode);
- over real HTTP with the test colour engine (no encoder cost): cold-window click total and cached click (p50);
- the server's RSS growth after `--clicks` clicks spread over a 20000² px sparse COG with overviews.

Run: `.venv/bin/python bench/bench_raster.py` (about a minute; `--clicks 200` is the issue's figure).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from samgis.geo.fetch import TileFetcher  # noqa: E402
from samgis.geo.readers import open_reader  # noqa: E402
from samgis.geo.readers.raster import RasterWindow, raster_source  # noqa: E402
from samgis.geo.sources import SourceRegistry  # noqa: E402
from samgis.geo.tiles import Window  # noqa: E402
from samgis.settings import Settings  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402
from tests.support.colour_engine import ColourRegionEngine  # noqa: E402
from tests.support.raster import write_big_sparse_raster  # noqa: E402
from tests.support.scene import default_scene  # noqa: E402
from tests.support.tileserver import SceneTileServer  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def write_textured_cog(path: Path, side: int = 8192) -> None:
    """A `side`² RGB uint8 GeoTIFF in EPSG:32632 with smooth texture plus noise (compresses like imagery),
    512 px blocks, deflate, overviews 2..16 (average)."""
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32632",
               "transform": Affine(0.25, 0, 500000, 0, -0.25, 5000000), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate"}
    yy, xx = np.mgrid[0:1024, 0:1024]
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, side, 1024):
            for col in range(0, side, 1024):
                base = (np.sin((xx + col) / 37.0) + np.cos((yy + row) / 53.0)) * 60 + 128
                block = np.stack([base, base * 0.8, 255 - base]) + rng.normal(0, 12, (3, 1024, 1024))
                ds.write(np.clip(block, 0, 255).astype(np.uint8), window=rasterio.windows.Window(col, row, 1024, 1024))
        ds.build_overviews([2, 4, 8, 16], Resampling.average)


def bench_reads(tmp: Path, n: int) -> None:
    cog = tmp / "textured.tif"
    t0 = time.perf_counter()
    write_textured_cog(cog)
    print(f"wrote an 8192² px textured COG in {time.perf_counter() - t0:.1f} s ({cog.stat().st_size / 2**20:.0f} MiB)")
    reader = open_reader(raster_source("Cog", {"raster": str(cog)}), TileFetcher(None))
    for level in (1, 4):
        cells = 8192 // level // 512 - 1
        times = []
        for i in range(n):
            col, row = (i * 5 % cells) * 512, (i * 3 % cells) * 512
            w = RasterWindow(level, col, row, 1024, 18, reader.transform, reader.source.crs_wkt)
            t = time.perf_counter()
            asyncio.run(reader.read_window(w))
            times.append((time.perf_counter() - t) * 1000)
        print(f"COG window read, level {level}: p50 {pct(times, 50):.0f} ms, p95 {pct(times, 95):.0f} ms ({n} windows)")
    scene = default_scene()
    with SceneTileServer(scene) as tiles:
        source = SourceRegistry.from_config(tiles.write_providers(tmp / "providers.json"), builtins=False).get("Scene")
        reader = open_reader(source, TileFetcher(None))
        lng, lat = scene.shapes[0].polygon.representative_point().coords[0]
        base = Window(16, 0, 0)
        x0, y0 = (base.lnglat_to_px(np.array([[lng, lat]])) // 256).astype(int)[0]

        async def run() -> list[float]:
            out = []
            for i in range(n):
                w = Window(16, int(x0) - 8 + 4 * (i % 4), int(y0) - 8 + 4 * (i // 4 % 4))
                t = time.perf_counter()
                await reader.read_window(w)
                out.append((time.perf_counter() - t) * 1000)
            await reader.fetcher.aclose()
            return out

        times = asyncio.run(run())
        print(f"XYZ window read (16 PNG tiles over local HTTP): p50 {pct(times, 50):.0f} ms, p95 {pct(times, 95):.0f} ms")


def rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def bench_server(tmp: Path, clicks: int) -> None:
    big = write_big_sparse_raster(tmp / "big.tif")
    settings = Settings(builtin_sources=False, cache_dir=tmp / "cache", rasters=[big.path], cache_bytes=256 * 2**20)
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        def click(col: float, row: float, zoom: int = 18) -> httpx.Response:
            lng, lat = big.px_to_lnglat(col, row)
            d = 0.01
            return c.post("/v1/segment", json={
                "bbox": {"ne": {"lat": lat + d, "lng": lng + d}, "sw": {"lat": lat - d, "lng": lng - d}},
                "zoom": zoom, "source": "big", "prompts": [{"type": "point", "lat": lat, "lng": lng, "label": 1}]})

        click(500, 500)
        before = rss()
        cold, cached = [], []
        for k, (col, row) in enumerate([(500, 500), (9972, 9972), (19476, 19476)] * 5):
            r = click(col + k, row)
            meta = r.json()["samgis"]
            (cached if meta["cache"] == "hit" else cold).append(meta["timings_ms"]["total"])
        for k in range(clicks):
            click((k * 7919) % 19800 + 100, (k * 104729) % 19800 + 100, (18, 15, 13)[k % 3])
        grown = rss() - before
    print(f"server over HTTP (colour engine): cold window click {np.median(cold):.0f} ms, cached click "
          f"{np.median(cached):.0f} ms (p50)")
    print(f"RSS growth after {clicks} clicks over a 20000² px COG: {grown / 2**20:.0f} MiB "
          "(embedding cache bound 256 MiB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reads", type=int, default=20)
    p.add_argument("--clicks", type=int, default=60)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="samgis-bench-raster-") as tmp:
        bench_reads(Path(tmp), args.reads)
        bench_server(Path(tmp), args.clicks)


if __name__ == "__main__":
    main()
