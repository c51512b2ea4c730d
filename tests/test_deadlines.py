"""Deadlines and cancellation over real HTTP (uvicorn on 127.0.0.1, the scene tile server, the colour engine):
a hanging tile source answers 504 within the request's deadline, retries included; it does not hold the
connections a healthy source on the same host needs; a client that goes away cancels its queued work."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from api.app import create_app
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.scene import default_scene
from tests.support.tileserver import SceneTileServer
from tests.test_e2e_segment import click_request, samgis_point, samgis_request

SCENE = {s.name: s.polygon for s in default_scene().shapes}
DEADLINE_S = 2.0
QUEUED_DEADLINE_S = 4.0


@pytest.fixture(scope="module")
def hanging_tiles():
    """A scene tile server of our own whose /slow route hangs for a minute (the shared one waits 5 s)."""
    with SceneTileServer(default_scene()) as server:
        server.slow_s = 60.0
        yield server


@pytest.fixture(scope="module")
def live(hanging_tiles, tmp_path_factory):
    # long tile timeouts and several retries, as in production: only the deadline can cut them short
    settings = hanging_tiles.settings(tmp_path_factory.mktemp("deadline"), tile_timeout_s=10.0, tile_retries=3,
                                      deadline_s=DEADLINE_S, everything_deadline_s=DEADLINE_S + 1)
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server:
        yield server


@pytest.mark.slow
def test_hanging_source_is_504_within_the_deadline_and_spares_other_sources(live, hanging_tiles):
    shape = SCENE["north-building"]
    p = shape.representative_point()

    async def timed(c, method, url, **kw):
        t0 = time.monotonic()
        r = await c.request(method, url, **kw)
        return r, time.monotonic() - t0

    async def scenario():
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
            hung = [asyncio.create_task(timed(c, "POST", "/v1/segment", json=click_request(shape, 16, "SceneSlow"))),
                    asyncio.create_task(timed(c, "POST", "/infer_samgis",
                                              json={**samgis_request([samgis_point(p.x, p.y)], shape),
                                                    "source_type": "SceneSlow"})),
                    asyncio.create_task(timed(c, "POST", "/v1/segment/everything",
                                              json={"lat": p.y, "lng": p.x, "zoom": 17, "source": "SceneSlow"})),
                    asyncio.create_task(timed(c, "GET", "/v1/tiles/SceneSlow/16/100/100.png"))]
            await asyncio.sleep(0.3)  # the slow source now holds its connections
            healthy = await timed(c, "POST", "/v1/segment", json=click_request(shape, 16, "Scene"))
            return healthy, await asyncio.gather(*hung)

    (healthy, healthy_s), hung = asyncio.run(scenario())
    assert healthy.status_code == 200, healthy.text
    assert healthy_s < 1.5, healthy_s  # same host, other source: its own connection slots
    (seg, seg_s), (compat, compat_s), (every, every_s), (tile, tile_s) = hung
    for r, took, limit in ((seg, seg_s, DEADLINE_S), (compat, compat_s, DEADLINE_S),
                           (every, every_s, DEADLINE_S + 1), (tile, tile_s, DEADLINE_S)):
        assert r.status_code == 504, r.text
        assert limit - 0.5 <= took <= limit + 0.5, (r.request.url, took)  # not 4 attempts × 10 s
    assert seg.json()["error"] == "UpstreamTimeout" and "SceneSlow" in seg.json()["detail"]
    assert "deadline" in seg.json()["detail"]
    assert compat.json()["msg"] == "Error - Gateway Timeout"


@pytest.fixture(scope="module")
def slow_engine():
    return ColourRegionEngine(embed_delay_s=1.5)


@pytest.fixture(scope="module")
def queued(tiles, slow_engine, tmp_path_factory):
    settings = tiles.settings(tmp_path_factory.mktemp("cancel"), encoder_queue=4, deadline_s=QUEUED_DEADLINE_S)
    with LiveServer(create_app(settings, engine=slow_engine)) as server:
        yield server


@pytest.mark.slow
def test_client_that_goes_away_cancels_its_queued_work(queued, slow_engine):
    first = click_request(SCENE["mid-lake"], 15)
    left = click_request(SCENE["mid-field"], 16)

    async def queue_when(c, ready):
        """The encoder queue's state once `ready(state)` holds (polled; the steps wait on the server, not on
        fixed sleeps, so a loaded machine only makes them slower)."""
        for _ in range(200):
            state = (await c.get("/v1/models")).json()["encoder_queue"]
            if ready(state):
                return state
            await asyncio.sleep(0.02)
        return state

    async def scenario():
        async with httpx.AsyncClient(base_url=queued.url, timeout=60) as c:
            calls = slow_engine.embed_calls
            running = asyncio.create_task(c.post("/v1/segment", json=first))  # its pass runs 1.5 s
            await queue_when(c, lambda q: q["running"] == 1)
            async with httpx.AsyncClient(base_url=queued.url, timeout=60) as impatient:
                waiter = asyncio.create_task(impatient.post("/v1/segment", json=left))
                queue_while_waiting = await queue_when(c, lambda q: q["waiting"] == 1)
                waiter.cancel()  # the client closes its connection
                await asyncio.gather(waiter, return_exceptions=True)
            queue_after = await queue_when(c, lambda q: q["waiting"] == 0)
            done = await running
            await asyncio.sleep(0.5)
            return calls, queue_while_waiting, queue_after, done

    calls, while_waiting, after, done = asyncio.run(scenario())
    assert while_waiting["running"] == 1 and while_waiting["waiting"] == 1
    assert after["waiting"] == 0  # the left client's place was given up at once
    assert done.status_code == 200
    assert slow_engine.embed_calls - calls == 1  # the left client's window was never encoded


@pytest.mark.slow
def test_deadline_passing_in_the_encoder_queue_is_504_and_drops_the_queued_work(queued, slow_engine):
    windows = [click_request(SCENE[name], z) for name, z in (("north-building", 15), ("south-building", 15),
                                                             ("equator-building", 15), ("north-building", 14))]

    async def scenario():
        async with httpx.AsyncClient(base_url=queued.url, timeout=60) as c:
            calls = slow_engine.embed_calls
            t0 = time.monotonic()
            answers = await asyncio.gather(*(c.post("/v1/segment", json=w) for w in windows))
            took = time.monotonic() - t0
            await asyncio.sleep(1.6)  # a pass still running at the deadline ends
            return calls, answers, took, (await c.get("/v1/models")).json()["encoder_queue"]

    calls, answers, took, queue = asyncio.run(scenario())
    codes = sorted(r.status_code for r in answers)
    # 1.5 s passes in series under a 4 s deadline: two finish on a quiet machine (fewer when tile fetching is
    # slow under load), the rest are 504; never a 5xx of another kind
    ok = codes.count(200)
    assert 1 <= ok <= 2 and codes.count(504) == 4 - ok, [r.text for r in answers]
    late = next(r for r in answers if r.status_code == 504).json()
    assert late["error"] == "DeadlineExceeded" and "SAMGIS_DEADLINE_S" in late["detail"]
    assert took <= QUEUED_DEADLINE_S + 0.5
    assert queue["waiting"] == 0 and queue["running"] == 0
    started = slow_engine.embed_calls - calls
    assert ok <= started <= 3  # the fourth window, still queued at the deadline, never ran
