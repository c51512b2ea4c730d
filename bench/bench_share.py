"""Benchmark a shared server under load: cached clicks while encoders run, deadlines, the encoder queue.

Prints, for this machine:
- cached-click latency p50/p95, idle and during a burst of 30 cold windows, with (a) the test colour engine
  whose encoder sleeps as long as a vit_b pass and (b) the real random-weight sam_vit_b;
- seconds until a click on a hanging tile host answers 504 (default settings: 30 s deadline, 10 s tile
  timeout, 3 retries);
- milliseconds until a cold click answers 503 when the encoder queue is full;
- cached clicks per second sustained before their p95 doubles (concurrency 1, 2, 4 … clients).

Run: `.venv/bin/python bench/bench_share.py` (about 4 minutes; `--skip-vit-b` for the colour engine only).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from samgis.engine.backends.sam1 import SamEngine, build_sam  # noqa: E402
from samgis.engine.registry import get_model_spec  # noqa: E402
from samgis.engine.threads import in_fresh_thread  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402
from tests.support.colour_engine import ColourRegionEngine  # noqa: E402
from tests.support.scene import default_scene  # noqa: E402
from tests.support.tileserver import SceneTileServer  # noqa: E402

SCENE = {s.name: s.polygon for s in default_scene().shapes}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def click(lng: float, lat: float, z: int, source: str = "Scene", **extra) -> dict:
    d = 0.01
    return {"bbox": {"ne": {"lat": lat + d, "lng": lng + d}, "sw": {"lat": lat - d, "lng": lng - d}},
            "zoom": z, "source": source, "prompts": [{"type": "point", "lat": lat, "lng": lng, "label": 1}],
            **extra}


def shape_click(name: str, z: int, **extra) -> dict:
    p = SCENE[name].representative_point()
    return click(p.x, p.y, z, **extra)


def cold_clicks(n: int, z: int = 16) -> list[dict]:
    """`n` clicks in `n` different windows (every window is 4 tiles wide; steps of 6 tiles at zoom z)."""
    base = SCENE["mid-field"].representative_point()
    step = 6 * 360 / 2**z
    return [click(base.x + step * (i % 6 + 1), base.y - step * 0.5 * (i // 6 + 1), z) for i in range(n)]


async def timed_post(c: httpx.AsyncClient, body: dict) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = await c.post("/v1/segment", json=body)
    return (time.perf_counter() - t0) * 1000, r


async def sequential(c: httpx.AsyncClient, body: dict, n: int, gap_s: float = 0.05) -> list[float]:
    out = []
    for _ in range(n):
        ms, r = await timed_post(c, body)
        assert r.status_code == 200, r.text
        out.append(ms)
        await asyncio.sleep(gap_s)
    return out


def burst_scenario(tiles: SceneTileServer, engine, label: str, cached: dict, idle_n: int, during_n: int) -> dict:
    """Cached-click latencies idle, then while 30 cold windows are sent at once (their clients leave after
    the measurement, which cancels what is still queued)."""
    settings = tiles.settings(tempfile.mkdtemp(), tile_timeout_s=10.0, tile_retries=3, deadline_s=600.0)

    async def run(url: str) -> dict:
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            r = await c.post("/v1/segment", json=cached)  # cold once: its window is cached from now on
            assert r.status_code == 200, r.text
            idle = await sequential(c, cached, idle_n)
            async with httpx.AsyncClient(base_url=url, timeout=600,
                                         limits=httpx.Limits(max_connections=40)) as burst_client:
                burst = [asyncio.create_task(timed_post(burst_client, b)) for b in cold_clicks(30)]
                await asyncio.sleep(0.5)
                during = await sequential(c, cached, during_n, gap_s=0.2)
                queue = (await c.get("/v1/models")).json()["encoder_queue"]
                finished = [t.result()[1].status_code for t in burst if t.done()]
                for t in burst:
                    t.cancel()
                await asyncio.gather(*burst, return_exceptions=True)
            return {"idle": idle, "during": during, "queue": queue, "finished": finished}

    with LiveServer(create_app(settings, engine=engine)) as live:
        res = asyncio.run(run(live.url))
    idle50, idle95 = pct(res["idle"], 50), pct(res["idle"], 95)
    dur50, dur95 = pct(res["during"], 50), pct(res["during"], 95)
    n503 = sum(1 for s in res["finished"] if s == 503)
    print(f"{label}: cached click idle p50 {idle50:.1f} ms / p95 {idle95:.1f} ms; during the burst "
          f"p50 {dur50:.1f} ms / p95 {dur95:.1f} ms (p95 ratio {dur95 / idle95:.2f}); burst: "
          f"{n503} × 503 at once, queue then {res['queue']['running']} running + {res['queue']['waiting']} "
          f"waiting")
    return {"idle95": idle95, "during95": dur95}


def hanging_host(tiles: SceneTileServer, deadline_s: float) -> float:
    settings = tiles.settings(tempfile.mkdtemp(), tile_timeout_s=10.0, tile_retries=3, deadline_s=deadline_s)
    tiles.slow_s = 3600.0

    async def run(url: str) -> tuple[float, int]:
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            ms, r = await timed_post(c, shape_click("mid-lake", 15, source="SceneSlow"))
            return ms / 1000, r.status_code

    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as live:
        took, status = asyncio.run(run(live.url))
    tiles.slow_s = 5.0
    print(f"hanging tile host (deadline {deadline_s:g} s, tile timeout 10 s, 3 retries): {status} after "
          f"{took:.2f} s")
    return took


def queue_full(tiles: SceneTileServer) -> float:
    settings = tiles.settings(tempfile.mkdtemp(), encoder_queue=2)
    engine = ColourRegionEngine(embed_delay_s=3.0)

    async def run(url: str) -> tuple[float, int]:
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            clicks = cold_clicks(4, z=15)
            fill = [asyncio.create_task(timed_post(c, b)) for b in clicks[:3]]
            await asyncio.sleep(0.5)
            samples = []
            for _ in range(20):
                ms, r = await timed_post(c, clicks[3])
                assert r.status_code == 503, r.text
                samples.append(ms)
            for t in fill:
                t.cancel()
            await asyncio.gather(*fill, return_exceptions=True)
            return pct(samples, 50), pct(samples, 95)

    with LiveServer(create_app(settings, engine=engine)) as live:
        p50, p95 = asyncio.run(run(live.url))
    print(f"encoder queue full: 503 + Retry-After after p50 {p50:.1f} ms / p95 {p95:.1f} ms")
    return p50


def throughput(tiles: SceneTileServer, seconds: float) -> None:
    settings = tiles.settings(tempfile.mkdtemp())
    cached = shape_click("mid-lake", 15)

    async def level(url: str, clients: int) -> tuple[float, float]:
        lat: list[float] = []
        stop = time.perf_counter() + seconds

        async def one():
            async with httpx.AsyncClient(base_url=url, timeout=600) as c:
                while time.perf_counter() < stop:
                    ms, r = await timed_post(c, cached)
                    assert r.status_code == 200, r.text
                    lat.append(ms)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        return len(lat) / (time.perf_counter() - t0), pct(lat, 95)

    async def run(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            assert (await c.post("/v1/segment", json=cached)).status_code == 200
        base95, best = None, None
        for clients in (1, 2, 4, 8, 16, 32):
            rps, p95 = await level(url, clients)
            base95 = base95 or p95
            print(f"  {clients:2d} clients: {rps:6.1f} cached clicks/s, p95 {p95:.1f} ms")
            if p95 <= 2 * base95:
                best = (rps, clients)
            else:
                break
        print(f"cached clicks sustained before p95 doubles (colour engine): {best[0]:.1f}/s at {best[1]} clients")

    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as live:
        asyncio.run(run(live.url))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vit-b-encoder-s", type=float, default=7.0, help="the sleeping encoder's pass (vit_b here)")
    ap.add_argument("--deadline-s", type=float, default=30.0)
    ap.add_argument("--skip-vit-b", action="store_true")
    ap.add_argument("--skip-colour", action="store_true", help="skip the sleeping-encoder burst")
    ap.add_argument("--skip-hanging", action="store_true")
    args = ap.parse_args()
    logging.getLogger("samgis.api").setLevel(logging.ERROR)  # the 503s and 504s here are on purpose
    with SceneTileServer(default_scene()) as tiles:
        if not args.skip_colour:
            burst_scenario(tiles, ColourRegionEngine(embed_delay_s=args.vit_b_encoder_s),
                           f"colour engine, {args.vit_b_encoder_s:g} s sleeping encoder",
                           shape_click("mid-lake", 15), idle_n=40, during_n=40)
        if not args.skip_vit_b:
            spec = get_model_spec("sam_vit_b")
            model = in_fresh_thread(build_sam, spec.arch)
            engine = SamEngine(model, spec.model_id, device="cpu", precision="fp32")
            # random weights give speckled masks: min_area_px keeps polygon work small, the decode is the same
            burst_scenario(tiles, engine, "random sam_vit_b", shape_click("mid-lake", 15, min_area_px=1e6),
                           idle_n=20, during_n=20)
        queue_full(tiles)
        throughput(tiles, seconds=3.0)
        if not args.skip_hanging:
            hanging_host(tiles, args.deadline_s)


if __name__ == "__main__":
    main()
