"""Cold windows wait in a bounded queue: over it → 503 with Retry-After; cached clicks are not held up by
encoder work; identical cold windows compute once. Over real HTTP (uvicorn on 127.0.0.1) with the colour
engine made slow (`embed_delay_s`), plus the queue on its own."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from api.app import create_app
from samgis.encoder_queue import EncoderQueue
from samgis.errors import Overloaded
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.scene import default_scene
from tests.test_e2e_segment import click_request, samgis_point, samgis_request

SCENE = {s.name: s.polygon for s in default_scene().shapes}
DELAY_S = 1.5


@pytest.fixture(scope="module")
def slow():
    return ColourRegionEngine(embed_delay_s=DELAY_S)


@pytest.fixture(scope="module")
def live(tiles, slow, tmp_path_factory):
    settings = tiles.settings(tmp_path_factory.mktemp("queue"), encoder_queue=1)
    with LiveServer(create_app(settings, engine=slow)) as server:
        yield server


@pytest.mark.slow
def test_full_queue_is_503_cached_clicks_pass_identical_windows_share(live, slow):
    warm = click_request(SCENE["equator-building"], 16)
    cold_a = click_request(SCENE["north-building"], 16)
    cold_b = click_request(SCENE["south-building"], 16)
    cold_c = click_request(SCENE["mid-lake"], 15)
    p = SCENE["mid-field"].representative_point()
    cold_samgis = samgis_request([samgis_point(p.x, p.y)], SCENE["mid-field"])

    async def scenario():
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
            assert (await c.post("/v1/segment", json=warm)).status_code == 200  # its window is now cached
            calls = slow.embed_calls
            # three identical cold clicks and one more cold window: A runs, B waits (queue size 1)
            first = [asyncio.create_task(c.post("/v1/segment", json=cold_a)) for _ in range(3)]
            await asyncio.sleep(0.3)
            second = asyncio.create_task(c.post("/v1/segment", json=cold_b))
            await asyncio.sleep(0.5)
            t0 = time.perf_counter()
            cached = await c.post("/v1/segment", json=warm)
            cached_s = time.perf_counter() - t0
            over = await c.post("/v1/segment", json=cold_c)
            over_samgis = await c.post("/infer_samgis", json=cold_samgis)
            queue = (await c.get("/v1/models")).json()["encoder_queue"]
            done = await asyncio.gather(*first, second)
            return calls, cached, cached_s, over, over_samgis, queue, done

    calls, cached, cached_s, over, over_samgis, queue, done = asyncio.run(scenario())
    assert cached.status_code == 200 and cached.json()["samgis"]["cache"] == "hit"
    assert cached_s < DELAY_S / 2, cached_s  # not behind the encoder passes
    assert over.status_code == 503 and over.json()["error"] == "Overloaded"
    assert "queue is full" in over.json()["detail"] and 1 <= int(over.headers["retry-after"]) <= 30
    assert over_samgis.status_code == 503 and over_samgis.json()["msg"] == "Error - Service Unavailable"
    assert int(over_samgis.headers["retry-after"]) >= 1
    assert queue["running"] == 1 and queue["waiting"] == 1 and queue["rejected"] >= 2
    assert [r.status_code for r in done] == [200, 200, 200, 200]
    assert slow.embed_calls - calls == 2  # A once for its three callers, B once; C and the SamGIS one never ran


def test_queue_bounds_threads_and_waiters():
    started = threading.Event()
    release = threading.Event()
    threads: set[str] = set()

    def work(n):
        threads.add(threading.current_thread().name)
        started.set()
        release.wait(5)
        return n

    async def scenario():
        q = EncoderQueue(max_waiting=2, estimate_s=3.0)
        running = asyncio.create_task(q.run(work, 0))
        await asyncio.to_thread(started.wait, 5)
        waiting = [asyncio.create_task(q.run(work, i)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as over:
            await q.run(work, 3)
        assert over.value.retry_after_s == 3  # room again once the running pass (~3 s) ends
        waiting[0].cancel()  # a caller that goes away gives its place up
        await asyncio.sleep(0.05)
        assert q.describe()["waiting"] == 1
        late = asyncio.create_task(q.run(work, 4))
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(running, waiting[1], late), q.describe()

    results, state = asyncio.run(scenario())
    assert results == [0, 2, 4] and state["running"] == 0 and state["waiting"] == 0 and state["rejected"] == 1
    assert len(threads) == 1 and next(iter(threads)).startswith("samgis-encoder")
