"""The web map in a real headless Chromium (Debian's, driven by Playwright) against a live server.

The server runs the real app with the synthetic-scene tile server and the colour-region test engine, so
a click on a scene shape must come back as that shape's known lat/lng outline. Screenshots of the main
states go to test-artifacts/web/ for a person to look at.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import mercantile
import pytest
from shapely.geometry import Point

from api.app import WEB_DIST, create_app
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.geometry import iou, union_geometry
from tests.support.raster import write_raster
from tests.support.scene import default_scene

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
VIEWPORT = {"width": 1366, "height": 768}  # a laptop screen
SCENE = default_scene()


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; `make test` does it)"
    if not (WEB_DIST / "index.html").exists():
        return "web/dist is not built (cd web && npm ci && npm run build; `make setup` does it)"
    return None


if (_why := _missing()) is not None:
    if os.environ.get("CI"):
        raise RuntimeError(f"browser tests cannot run: {_why}")
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import Page, sync_playwright  # noqa: E402


# --- scene geometry ---------------------------------------------------------------------------------

def px_extent(poly, z: int) -> float:
    """Largest side of the polygon's bounds in screen px at zoom z."""
    w, s, e, n = poly.bounds
    x0, y0 = mercantile.xy(w, s)
    x1, y1 = mercantile.xy(e, n)
    res = 2 * 20037508.342789244 / (256 * 2**z)
    return max(x1 - x0, y1 - y0) / res


def pick_case():
    """A scene shape and a zoom where it is 120–400 px across: whole in view with room around it."""
    for s in SCENE.shapes:
        if abs(s.polygon.centroid.y) > 60:
            continue
        for z in (17, 16, 18, 15, 14):
            if 120 <= px_extent(s.polygon, z) <= 400:
                return s, z
    raise AssertionError("no scene shape fits the view")


CASE, ZOOM = pick_case()
TRUTH = CASE.polygon


# --- fixtures ---------------------------------------------------------------------------------------

def web_settings(tiles, tmp: Path, **extra) -> Settings:
    return tiles.settings(tmp, default_source="Scene", **extra)


@pytest.fixture(scope="module")
def live(tiles, tmp_path_factory):
    settings = web_settings(tiles, tmp_path_factory.mktemp("web"))
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live):
    ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    problems: list[str] = []
    foreign: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: None if r.url.startswith((live.url, "data:", "blob:")) else foreign.append(r.url))
    yield pg
    ctx.close()
    assert not problems, problems
    assert not foreign, f"the page fetched from elsewhere than the samgis server: {foreign[:5]}"


# --- page helpers -----------------------------------------------------------------------------------

def open_map(page: Page, base: str, lat: float, lng: float, z: int, source: str | None = "Scene") -> None:
    """Open the page at a view given in the URL hash, as a shared link would."""
    hash_ = f"#map={z}/{lat:.6f}/{lng:.6f}" + (f"&source={source}" if source else "")
    page.goto(base + "/" + hash_)
    page.wait_for_function("() => window.samgis && samgis.state.sources.length > 0 && samgis.state.source")
    if source:
        page.wait_for_function("s => samgis.state.source.id === s", arg=source)


def screen_xy(page: Page, lat: float, lng: float) -> tuple[float, float]:
    return tuple(page.evaluate(
        """([lat, lng]) => { const p = samgis.map.latLngToContainerPoint([lat, lng]);
                             const r = samgis.map.getContainer().getBoundingClientRect();
                             return [p.x + r.left, p.y + r.top]; }""", [lat, lng]))


def done(page: Page) -> int:
    return page.evaluate("samgis.state.requestsDone")


def settle(page: Page, before: int) -> None:
    """Wait until a segmentation started after `before` has finished (result or error)."""
    page.wait_for_function(
        "n => samgis.state.requestsDone > n && !['pending', 'busy'].includes(samgis.state.phase)", arg=before)


def click_at(page: Page, lat: float, lng: float, button: str = "left") -> None:
    before = done(page)
    page.mouse.click(*screen_xy(page, lat, lng), button=button)
    settle(page, before)


def current_fc(page: Page) -> dict | None:
    return page.evaluate("""() => { const s = samgis.state; const l = s.layers.find(l => l.id === s.currentId);
                                     return l ? {type: 'FeatureCollection', features: l.fc.features} : null; }""")


def drawn_polygons(page: Page) -> int:
    return page.locator(".leaflet-results-pane path.result-polygon").count()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def inside_point(poly):
    p = poly.representative_point()
    return p.y, p.x


# --- tests ------------------------------------------------------------------------------------------

def test_basemaps_come_from_the_server_and_the_view_is_shared_in_the_url(page, live):
    c = TRUTH.centroid
    open_map(page, live.url, c.y, c.x, ZOOM, source=None)
    options = page.locator("#source-select option").all_inner_texts()
    assert any(o.startswith("Scene ") for o in options) and any(o.startswith("OpenStreetMap.Mapnik") for o in options)

    page.select_option("#source-select", "Scene")  # the basemap switcher
    page.wait_for_function("samgis.state.source.id === 'Scene'")
    page.wait_for_function("document.querySelectorAll('img.leaflet-tile-loaded').length >= 4")
    scene_src = page.evaluate("fetch('v1/sources').then(r => r.json()).then(j => j.sources.find(s => s.id === 'Scene'))")
    if scene_src["attribution"]:
        assert scene_src["attribution"] in page.inner_text("#source-attribution")
        assert scene_src["attribution"] in page.inner_text(".leaflet-control-attribution")
    tile_urls = page.eval_on_selector_all("img.leaflet-tile", "els => els.map(e => e.src)")
    assert tile_urls and all(t.startswith(live.url + "/v1/tiles/Scene/") for t in tile_urls), tile_urls[:3]

    # This model takes points and boxes only: the Find box says so instead of showing its form.
    page.wait_for_function("samgis.state.findAvailable === 'unavailable'")
    assert page.locator("#find-form").is_hidden()
    assert "takes points and rectangles, not phrases" in page.inner_text("#find-unavailable")
    page.keyboard.press("x")  # nor example boxes: the key that draws one does nothing
    assert page.evaluate("samgis.state.mode") == "include" and page.locator("#find-draw").is_hidden()

    page.fill("#source-filter", "scene")  # the filter narrows the long list
    assert all("Scene" in o for o in page.locator("#source-select option").all_inner_texts())

    h = page.evaluate("location.hash")
    assert h.startswith(f"#map={ZOOM}/") and h.endswith("&source=Scene"), h
    shot(page, "01_loaded_scene_basemap")

    # The hash is the shareable view: a fresh page opened on it shows the same place and basemap.
    page.goto("about:blank")
    page.goto(live.url + "/" + h)
    page.wait_for_function("() => window.samgis && samgis.state.source && samgis.state.source.id === 'Scene'")
    view = page.evaluate("(() => { const c = samgis.map.getCenter(); return [c.lat, c.lng, samgis.map.getZoom()]; })()")
    assert view[2] == ZOOM and abs(view[0] - c.y) < 1e-4 and abs(view[1] - c.x) < 1e-4


def test_include_exclude_history_and_downloads(page, live, tmp_path):
    import pyogrio

    c = TRUTH.centroid
    open_map(page, live.url, c.y, c.x, ZOOM)
    lat, lng = inside_point(TRUTH)

    click_at(page, lat, lng)  # include tool is the default
    fc = current_fc(page)
    assert fc is not None, page.inner_text("#messages")
    assert iou(union_geometry(fc), TRUTH) >= 0.9
    status = page.inner_text("#status")
    assert "embedding cache" in status and f"window z{ZOOM}" in status and "total" in status, status
    req = page.evaluate("samgis.state.lastRequest")
    assert req["zoom"] == ZOOM and req["source"] == "Scene" and req["prompts"][0]["label"] == 1
    assert req["bbox"]["sw"]["lat"] < lat < req["bbox"]["ne"]["lat"]
    shot(page, "02_include_point_result")

    # Pan / inspect: a click on the polygon tells its area and score.
    page.keyboard.press("Escape")
    ex_lat, ex_lng = exclude_spot(TRUTH, lat, lng)  # inside the shape, away from the include marker
    page.mouse.click(*screen_xy(page, ex_lat, ex_lng))
    popup = page.locator(".leaflet-popup-content")
    popup.wait_for()
    text = popup.inner_text()
    assert "Area" in text and ("ha" in text or "m²" in text or "km²" in text) and "Score" in text, text
    shot(page, "03_polygon_popup")
    page.locator(".leaflet-popup-close-button").click()

    # An exclude point changes the result (the test model empties a mask that holds an exclude point).
    first = union_geometry(fc)
    page.keyboard.press("e")
    click_at(page, ex_lat, ex_lng)
    fc2 = current_fc(page)
    assert page.evaluate("samgis.state.lastRequest.prompts.map(p => p.label)") == [1, 0]
    second = union_geometry(fc2) if fc2 and fc2["features"] else None
    assert second is None or not second.equals_exact(first, 1e-9), "exclude point did not change the result"
    if second is None:
        assert "no object found" in page.inner_text("#status")
    shot(page, "04_exclude_point_result")

    # Right-click removes the exclude point: the object comes back as a new result; the superseded one
    # stays in the history, hidden.
    before = done(page)
    page.locator(".prompt-point.exclude").click(button="right")
    page.wait_for_function("samgis.state.prompts.length === 1")
    settle(page, before)
    fc3 = current_fc(page)
    assert fc3 is not None and iou(union_geometry(fc3), TRUTH) >= 0.9

    items = page.locator("#layer-list > li")
    assert items.count() == 2
    older = items.nth(1)
    assert not older.locator(".layer-toggle").is_checked()
    n_visible = drawn_polygons(page)
    older.locator(".layer-toggle").check()
    assert drawn_polygons(page) == n_visible + len(fc["features"])
    shot(page, "05_history_both_visible")
    older.locator(".layer-toggle").uncheck()
    assert drawn_polygons(page) == n_visible

    # Downloads: rename the first result, then GeoJSON and GeoPackage named after it.
    older.locator(".layer-name").fill("my lake")
    older.locator(".layer-name").press("Enter")
    with page.expect_download() as dl:
        older.locator("button.dl-geojson").click()
    d = dl.value
    assert d.suggested_filename == "my_lake.geojson"
    path = tmp_path / d.suggested_filename
    d.save_as(path)
    got = json.loads(path.read_text())
    assert got["type"] == "FeatureCollection" and len(got["features"]) == len(fc["features"])
    assert iou(union_geometry(got), TRUTH) >= 0.9

    with page.expect_download() as dl:
        older.locator("button.dl-gpkg").click()
    d = dl.value
    assert d.suggested_filename == "my_lake.gpkg"
    path = tmp_path / d.suggested_filename
    d.save_as(path)
    assert [name for name, _ in pyogrio.list_layers(path)] == ["my_lake"]
    df = pyogrio.read_dataframe(path)
    assert len(df) == len(fc["features"]) and df.crs.to_epsg() == 4326
    assert iou(df.geometry.union_all(), TRUTH) >= 0.9
    assert "Downloaded my_lake.gpkg" in page.inner_text("#status")

    # The current result downloads from the "Current result" box.
    with page.expect_download() as dl:
        page.click("#dl-current-geojson")
    assert dl.value.suggested_filename.startswith("samgis_scene_z") and dl.value.suggested_filename.endswith(".geojson")

    # Delete a layer from the history.
    older.locator("button.layer-delete").click()
    assert items.count() == 1


def exclude_spot(poly, lat: float, lng: float) -> tuple[float, float]:
    """A point inside the shape away from the include point (towards a vertex), for the exclude prompt."""
    spots = [(lat + 0.6 * (y - lat), lng + 0.6 * (x - lng)) for x, y in list(poly.exterior.coords)[:-1]]
    inside = [p for p in spots if poly.contains(Point(p[1], p[0]))]
    assert inside, "no spot inside the shape"
    return max(inside, key=lambda p: abs(p[0] - lat) + abs(p[1] - lng))


def test_an_object_past_the_window_edge_is_followed_and_said_so(page, live):
    """The mid-latitude lake at z 18 runs past its click's window: the answer merges two windows and the status
    says so; with a budget of one window the object is cut and the status says that instead."""
    lake = SCENE.shape("mid-lake").polygon
    c = lake.centroid
    open_map(page, live.url, c.y, c.x, 18)
    lat, lng = inside_point(lake)
    page.evaluate("""() => { window.statusSeen = [];
        new MutationObserver(() => statusSeen.push(document.getElementById('status').textContent))
            .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true}); }""")
    click_at(page, lat, lng)
    seen = page.evaluate("statusSeen")
    assert any("following… up to 4 windows" in t for t in seen), seen  # while the request ran
    status = page.inner_text("#status")
    assert "2 windows" in status, status
    assert page.evaluate("samgis.state.lastRequest.window_budget") == 4
    whole = union_geometry(current_fc(page))
    assert iou(whole, lake) >= 0.97
    shot(page, "11_followed_across_two_windows")

    before = done(page)
    page.fill("#window-budget", "1")
    page.dispatch_event("#window-budget", "change")
    settle(page, before)
    assert page.evaluate("samgis.state.lastRequest.window_budget") == 1
    status = page.inner_text("#status")
    assert "cut at the 1-window budget" in status and "2 windows" not in status, status
    assert union_geometry(current_fc(page)).area < whole.area  # cut at the window's edge


def test_rectangle_tool_drag_and_remove_prompts(page, live):
    c = TRUTH.centroid
    open_map(page, live.url, c.y, c.x, ZOOM)
    w, s, e, n = TRUTH.bounds
    dx, dy = (e - w) * 0.04, (n - s) * 0.04

    page.keyboard.press("r")
    assert page.locator("[data-mode='box']").get_attribute("aria-pressed") == "true"
    before = done(page)
    x0, y0 = screen_xy(page, n + dy, w - dx)
    x1, y1 = screen_xy(page, s - dy, e + dx)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    settle(page, before)
    req = page.evaluate("samgis.state.lastRequest")
    assert [p["type"] for p in req["prompts"]] == ["box"]
    box = req["prompts"][0]
    assert box["sw"]["lat"] < s and box["ne"]["lat"] > n and box["sw"]["lng"] < w and box["ne"]["lng"] > e
    fc = current_fc(page)
    assert fc is not None, page.inner_text("#messages")
    assert iou(union_geometry(fc), TRUTH) >= 0.9
    selection = page.evaluate("String(window.getSelection())")
    assert selection == "", f"drawing selected page text: {selection!r}"
    shot(page, "06_rectangle_result")

    # Drag the rectangle's north-east corner outwards: the box grows, the page segments again.
    before = done(page)
    hx, hy = screen_xy(page, box["ne"]["lat"], box["ne"]["lng"])
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(hx + 15, hy - 15, steps=4)
    page.mouse.up()
    settle(page, before)
    grown = page.evaluate("samgis.state.lastRequest.prompts[0]")
    assert grown["ne"]["lat"] > box["ne"]["lat"] and grown["ne"]["lng"] > box["ne"]["lng"]
    assert grown["sw"] == box["sw"]

    # Right-click removes a prompt; with none left there is nothing to segment.
    rect = page.locator(".leaflet-promptBoxes-pane path.prompt-box")
    rect.click(button="right", position={"x": 20, "y": 20})
    page.wait_for_function("samgis.state.prompts.length === 0")
    assert "Add a prompt" in page.inner_text("#status")

    # Include point, then drag it: the prompt moves and the page segments again.
    page.keyboard.press("i")
    lat, lng = inside_point(TRUTH)
    click_at(page, lat, lng)
    before = done(page)
    mx, my = screen_xy(page, lat, lng)
    page.mouse.move(mx, my)
    page.mouse.down()
    page.mouse.move(mx + 6, my + 4, steps=3)
    page.mouse.up()
    settle(page, before)
    moved = page.evaluate("samgis.state.prompts[0]")
    assert moved["lng"] > lng and moved["lat"] < lat

    # Delete tool: clicking the point removes it. Then C resets.
    page.keyboard.press("d")
    page.mouse.click(*screen_xy(page, moved["lat"], moved["lng"]))
    page.wait_for_function("samgis.state.prompts.length === 0")
    page.keyboard.press("i")
    click_at(page, lat, lng)
    page.keyboard.press("c")
    page.wait_for_function("samgis.state.prompts.length === 0 && samgis.state.currentId === null")
    assert page.locator(".prompt-point").count() == 0


def test_api_errors_are_shown_in_plain_words(page, live):
    c = TRUTH.centroid
    open_map(page, live.url, c.y, c.x, ZOOM)
    lat, lng = inside_point(TRUTH)
    click_at(page, lat, lng)

    # A tile source that fails: 502 → a message naming the source.
    before = done(page)
    page.select_option("#source-select", "SceneMissing")
    settle(page, before)
    msg = page.inner_text("#messages")
    assert "SceneMissing" in msg and "could not be fetched" in msg, msg
    assert page.get_attribute("#status", "data-phase") == "error"
    shot(page, "07_error_tile_source")

    # Back to a working source: the error goes away.
    before = done(page)
    page.select_option("#source-select", "Scene")
    settle(page, before)
    assert page.get_attribute("#status", "data-phase") == "ok"
    assert "could not be fetched" not in page.inner_text("#messages")

    # A prompt outside the view: 422 → which prompt, and what to do.
    page.evaluate("samgis.map.panBy([900, 0], {animate: false})")
    before = done(page)
    page.keyboard.press("m")  # multimask toggle: any change segments again
    settle(page, before)
    msg = page.inner_text("#messages")
    assert "include point 1 is outside the map view" in msg, msg
    shot(page, "08_error_prompt_outside_view")


def test_model_not_loaded_is_said_on_the_page(browser, tiles, tmp_path):
    """No weights and no download: /health and /v1/segment answer 503; the page says why."""
    settings = web_settings(tiles, tmp_path, allow_download=False)
    with LiveServer(create_app(settings)) as srv:
        for _ in range(200):  # the background load fails fast without weights
            if httpx.get(srv.url + "/health").json()["status"] == "error":
                break
            time.sleep(0.05)
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        try:
            c = TRUTH.centroid
            open_map(page, srv.url, c.y, c.x, ZOOM)
            page.wait_for_function("document.querySelector('#model-badge').dataset.state === 'bad'")
            assert "SAMGIS_CHECKPOINT" in page.inner_text("#messages")  # where to put the weights
            lat, lng = inside_point(TRUTH)
            click_at(page, lat, lng)
            msg = page.inner_text("#messages")
            assert "model is not ready" in msg and "could not be loaded" in msg, msg
            assert page.get_attribute("#status", "data-phase") == "error"
            shot(page, "09_error_model_not_loaded")
        finally:
            ctx.close()


def test_a_raster_source_is_shown_over_the_basemap_zoomed_to_and_segmented(browser, tiles, tmp_path):
    """A GeoTIFF in UTM served with --raster: picking it keeps the basemap, lays its tiles over it, goes to its
    extent, and a click on a shape comes back as that shape's outline, segmented on the raster."""
    import shapely

    o, r = (500000.0, 5000000.0), 0.5  # UTM 32N, ~lng 9, lat 45.1; 0.5 m px, 512 m a side
    field = shapely.box(o[0] + 300 * r, o[1] - 700 * r, o[0] + 600 * r, o[1] - 450 * r)
    raster = write_raster(tmp_path / "ortho.tif", crs="EPSG:32632", origin=o, res=r, width=1024, height=1024,
                          background=(120, 120, 120), shapes=[("field", field, (200, 30, 30))])
    truth = raster.shape("field").lnglat()
    extent = raster.data_area_lnglat(0, 0, raster.width, raster.height)
    settings = web_settings(tiles, tmp_path, rasters=[raster.path])
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as srv:
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        try:
            c = TRUTH.centroid
            open_map(page, srv.url, c.y, c.x, ZOOM, source=None)
            assert "ortho" in page.locator("#source-select optgroup[label='Rasters'] option").all_inner_texts()[0]

            page.select_option("#source-select", "ortho")
            page.wait_for_function("samgis.state.source.id === 'ortho'")
            page.wait_for_function("document.querySelectorAll('.raster-layer img.leaflet-tile-loaded').length >= 1")
            assert page.evaluate("samgis.state.basemap.id") == "Scene"  # the basemap stays under the raster
            assert "over the basemap “Scene”" in page.inner_text("#source-attribution")
            raster_tiles = page.eval_on_selector_all(".raster-layer img.leaflet-tile", "els => els.map(e => e.src)")
            assert raster_tiles and all("/v1/tiles/ortho/" in t for t in raster_tiles), raster_tiles[:3]
            assert page.locator("img.leaflet-tile[src^='v1/tiles/Scene/']").count() > 0

            # The view went to the raster's extent: all of it in view, and it fills much of the view.
            w, s, e, n = page.evaluate("(() => { const b = samgis.map.getBounds(); "
                                       "return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()")
            ew, es, ee, en = extent.bounds
            assert w <= ew and s <= es and e >= ee and n >= en, ((w, s, e, n), extent.bounds)
            assert (ee - ew) / (e - w) > 0.3 or (en - es) / (n - s) > 0.3, ((w, s, e, n), extent.bounds)
            assert page.evaluate("location.hash").endswith("&source=ortho")
            shot(page, "10_raster_source")

            lat, lng = inside_point(truth)
            click_at(page, lat, lng)
            assert page.evaluate("samgis.state.lastRequest.source") == "ortho"
            assert page.get_attribute("#status", "data-phase") == "ok", page.inner_text("#messages")
            fc = current_fc(page)
            assert fc and fc["features"], "no polygon for the raster click"
            assert drawn_polygons(page) >= 1
            got = union_geometry(fc)
            assert iou(got, truth) > 0.85, iou(got, truth)
            shot(page, "11_raster_segmented")
        finally:
            ctx.close()
        assert not problems, problems


# --- Find (concept prompts) ---------------------------------------------------------------------------

FIND_PHRASE = "red"
FIND_ZOOM = 16  # concept_scene()'s ~800 m square in one view, each shape 55–110 px across


def find_case():
    """concept_scene() and its shapes of the `FIND_PHRASE` colour family with the colour engine's scores, best
    first (three reds of distinct scores)."""
    from tests.support.colour_engine import colour_family
    from tests.support.scene import concept_scene

    scene = concept_scene()
    found = []
    for s in scene.shapes:
        family, dist = colour_family(s.rgb)
        if family == FIND_PHRASE:
            found.append((1.0 - dist / 442.0, s))
    found.sort(key=lambda t: -t[0])
    assert len(found) >= 3 and found[1][0] - found[2][0] > 0.01, "the scene needs reds of distinct scores"
    return scene, found


@pytest.fixture(scope="module")
def concept_live(tmp_path_factory):
    """A model with the text and exemplars capabilities (the colour engine) over concept_scene() plus the tilted
    building of outline_scene() (for the Shape control; recoloured: its red is taken by a concept shape)."""
    from samgis.engine.protocol import Capabilities
    from tests.support.scene import Scene, Shape, concept_scene, outline_scene
    from tests.support.tileserver import SceneTileServer

    building = outline_scene().shape("tilted-building").polygon
    scene = Scene(concept_scene().shapes + (Shape("tilted-building", building, SHAPE_RGB),))
    engine = ColourRegionEngine(capabilities=Capabilities(text=True, exemplars=True))
    with SceneTileServer(scene) as tiles:
        settings = web_settings(tiles, tmp_path_factory.mktemp("concept"))
        with LiveServer(create_app(settings, engine=engine)) as server:
            server.engine = engine  # tests may change what it claims to take (restoring it after)
            yield server


SHAPE_RGB = (120, 60, 160)  # the tilted building's colour in `concept_live`, distinct from every concept colour


def test_find_every_instance_filter_keep_export_and_refine(browser, concept_live, tmp_path):
    """A model with the text capability: a phrase finds every instance in the view, listed with scores; the slider
    filters them without a request; the shown ones become a layer and download as GeoJSON; Refine seeds the prompt
    tools on one instance; an instance sent back as a counter-example finds again with an exemplar prompt."""
    from tests.support.scene import CONCEPT_PLACE

    _, expected = find_case()
    lng, lat = CONCEPT_PLACE
    srv = concept_live
    ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    segment_posts: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: segment_posts.append(r.url) if r.url.endswith("/v1/segment") else None)
    try:
        open_map(page, srv.url, lat, lng, FIND_ZOOM)
        page.wait_for_selector("#find-form:not([hidden])")  # shown: the model has the text capability
        assert page.locator("#find-unavailable").is_hidden()

        page.keyboard.press("f")  # the keyboard alone: F to the phrase box, type, Enter
        page.keyboard.type(FIND_PHRASE)
        page.keyboard.press("Enter")
        assert page.get_by_label("Phrase to find").input_value() == FIND_PHRASE
        page.wait_for_function("samgis.state.findsDone >= 1")
        assert page.get_attribute("#status", "data-phase") == "ok", page.inner_text("#messages")
        req = page.evaluate("samgis.state.lastFindRequest")
        assert req["prompts"] == [{"type": "text", "text": FIND_PHRASE}] and req["zoom"] == FIND_ZOOM
        assert 0 < req["score_threshold"] <= 0.5

        rows = page.locator("#find-list > li")
        assert rows.count() == len(expected), page.inner_text("#find-summary")
        assert page.locator(".leaflet-found-pane path.found-polygon").count() == len(expected)
        fc = page.evaluate("samgis.state.find.fc")
        by_score = sorted(fc["features"], key=lambda f: -f["properties"]["score"])
        for f, (score, shape) in zip(by_score, expected):  # each instance is its shape, scored as the engine does
            assert f["properties"]["concept"] == FIND_PHRASE
            assert abs(f["properties"]["score"] - score) < 1e-3, (f["properties"], shape.name)
            assert shape.polygon.contains(union_geometry({"features": [f]}).representative_point()), shape.name
        texts = rows.all_inner_texts()
        assert texts[0].startswith("#1 · score ") and f"{expected[0][0]:.2f}" in texts[0], texts
        shot(page, "12_find_instances")

        # The slider filters in the page: End (keyboard) hides all below 1.0, then a minimum between the second
        # and third scores leaves the two best. No request is sent.
        posts = len(segment_posts)
        page.get_by_label("Min score").press("End")
        assert rows.count() == sum(s >= 1.0 for s, _ in expected)
        assert page.locator("#find-keep").is_disabled()
        cut = round((expected[1][0] + expected[2][0]) / 2, 2)
        page.evaluate("v => { const s = document.getElementById('find-score'); s.value = v; "
                      "s.dispatchEvent(new Event('input', {bubbles: true})); }", str(cut))
        keep = [s for s, _ in expected if s >= cut]
        assert rows.count() == len(keep) == 2
        assert page.locator(".leaflet-found-pane path.found-polygon").count() == 2
        assert f"2 of {len(expected)} instances" in page.inner_text("#find-summary")
        assert len(segment_posts) == posts, "the slider sent a request"

        # Keep as layer: one layer of the shown instances, exported through the Layers panel.
        page.click("#find-keep")
        layer = page.locator("#layer-list > li")
        assert layer.count() == 1
        assert f"find “{FIND_PHRASE}”" in layer.locator(".layer-info").inner_text()
        with page.expect_download() as dl:
            layer.locator("button.dl-geojson").click()
        d = dl.value
        z = fc["samgis"]["window"]["z"]  # the window's zoom (stepped out when the view does not fit one)
        assert d.suggested_filename == f"samgis_find-{FIND_PHRASE}_z{z}_1.geojson", d.suggested_filename
        path = tmp_path / d.suggested_filename
        d.save_as(path)
        got = json.loads(path.read_text())
        assert got["type"] == "FeatureCollection" and len(got["features"]) == 2
        assert all(f["properties"]["concept"] == FIND_PHRASE and f["properties"]["score"] >= cut
                   for f in got["features"])
        assert iou(union_geometry(got), union_geometry({"features": by_score[:2]})) > 0.99
        shot(page, "13_find_filtered_and_kept")

        # Refine the best instance: the view zooms to it, a rectangle and an include point seeded on it
        # segment it as a new object (the include tool is then on, for more points).
        before = done(page)
        rows.first.get_by_role("button", name="Refine").click()
        settle(page, before)
        prompts = page.evaluate("samgis.state.lastRequest.prompts")
        assert [p["type"] for p in prompts] == ["box", "point"] and prompts[1]["label"] == 1
        assert expected[0][1].polygon.contains(Point(prompts[1]["lng"], prompts[1]["lat"]))
        assert page.evaluate("samgis.state.mode") == "include" and page.evaluate("samgis.map.getZoom()") > FIND_ZOOM
        cur = current_fc(page)
        assert cur and iou(union_geometry(cur), expected[0][1].polygon) >= 0.8, page.inner_text("#messages")
        shot(page, "14_find_refined")

        # The model takes exemplars: "Not like #k" finds the phrase again over the same area with that instance
        # as a counter-example; the colour engine then drops the colour family under the box's centre, so take
        # an instance whose box centre is inside it. "Forget examples" undoes it.
        k = next(k for k, (_, sh) in enumerate(expected[:len(keep)]) if sh.polygon.contains(sh.polygon.envelope.centroid))
        page.get_by_role("button", name=f"Not like #{k + 1}").click()
        page.wait_for_function("samgis.state.findsDone >= 2")
        again = page.evaluate("samgis.state.lastFindRequest")
        assert again["bbox"] == req["bbox"] and again["prompts"][0] == req["prompts"][0]
        assert [(p["type"], p["label"]) for p in again["prompts"][1:]] == [("exemplar", 0)]
        assert rows.count() == 0 and "1 counter-example" in page.inner_text("#find-exemplars")
        page.click("#find-forget")
        page.wait_for_function("samgis.state.findsDone >= 3")
        assert rows.count() == len(keep) and page.locator("#find-exemplars").is_hidden()
    finally:
        ctx.close()
    assert not problems, problems


@pytest.fixture
def concept_page(browser, concept_live):
    """A page on `concept_live`, checked for page errors and foreign requests as `page` is."""
    ctx = browser.new_context(viewport=VIEWPORT)
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: None if r.url.startswith((concept_live.url, "data:", "blob:"))
          else problems.append(f"foreign request: {r.url}"))
    yield pg
    ctx.close()
    assert not problems, problems


def drag_box(page: Page, sw: tuple[float, float], ne: tuple[float, float]) -> None:
    """Press at the north-west corner (lat, lng) of a box, drag to its south-east one, release."""
    x0, y0 = screen_xy(page, ne[0], sw[1])
    x1, y1 = screen_xy(page, sw[0], ne[1])
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=3)
    page.mouse.move(x1, y1, steps=3)
    page.mouse.up()


def found_shapes(page: Page, scene) -> list[str]:
    """Names of the scene shapes holding each found instance's inside point, in the answer's order."""
    fc = page.evaluate("samgis.state.find.fc")
    names = []
    for f in fc["features"]:
        p = union_geometry({"features": [f]}).representative_point()
        names.append(next((sh.name for sh in scene.shapes if sh.polygon.contains(p)), None))
    return names


def test_an_example_box_drawn_on_the_map_finds_its_colour_family(concept_page, concept_live):
    """With a model that takes exemplar boxes, a box drawn over one shape ("like this", X) finds every shape of its
    colour family in the view, with no phrase; a "not like this" box (Shift+X) over one of them is added to that
    answer and leaves none; from the keyboard alone, X and Enter draw a box at the middle of the map."""
    from tests.support.colour_engine import colour_family
    from tests.support.scene import CONCEPT_PLACE, concept_scene

    page = concept_page
    scene = concept_scene()
    _, reds = find_case()
    lng, lat = CONCEPT_PLACE
    open_map(page, concept_live.url, lat, lng, FIND_ZOOM)
    page.wait_for_selector("#find-draw:not([hidden])")  # the model takes exemplar boxes
    assert page.get_by_label("Phrase to find").input_value() == ""

    # A box around one red shape (the engine reads the colour under the box's centre: take one that holds it).
    target = next(sh for _, sh in reds if sh.polygon.contains(sh.polygon.envelope.centroid))
    w, s, e, n = target.polygon.bounds
    page.keyboard.press("x")
    assert page.locator("#find-draw [data-mode='example']").get_attribute("aria-pressed") == "true"
    drag_box(page, (s, w), (n, e))
    page.wait_for_function("samgis.state.findsDone >= 1")
    assert page.get_attribute("#status", "data-phase") == "ok", page.inner_text("#messages")
    req = page.evaluate("samgis.state.lastFindRequest")
    assert [(p["type"], p["label"]) for p in req["prompts"]] == [("exemplar", 1)]  # no phrase: the box alone
    ex = req["prompts"][0]
    assert ex["sw"]["lat"] == pytest.approx(s, abs=3e-5) and ex["ne"]["lng"] == pytest.approx(e, abs=3e-5), ex
    assert sorted(found_shapes(page, scene)) == sorted(sh.name for _, sh in reds), found_shapes(page, scene)
    assert page.locator("#find-list > li").count() == len(reds)
    assert "like your example" in page.inner_text("#status")
    assert page.locator(".leaflet-found-pane path.exemplar-box.like").count() == 1
    shot(page, "15_find_by_example_box")

    # "Not like this" over another red, inside the answer's area: found again there with both boxes.
    other = next(sh for _, sh in reds if sh is not target and sh.polygon.contains(sh.polygon.envelope.centroid))
    w2, s2, e2, n2 = other.polygon.bounds
    page.keyboard.press("Shift+X")
    assert page.evaluate("samgis.state.mode") == "counter"
    drag_box(page, (s2, w2), (n2, e2))
    page.wait_for_function("samgis.state.findsDone >= 2")
    again = page.evaluate("samgis.state.lastFindRequest")
    assert again["bbox"] == req["bbox"] and again["prompts"][0] == ex
    assert [(p["type"], p["label"]) for p in again["prompts"]] == [("exemplar", 1), ("exemplar", 0)]
    assert page.locator("#find-list > li").count() == 0  # the engine drops the family the counter-example shows
    assert "1 example, 1 counter-example" in page.inner_text("#find-exemplars")
    assert page.locator(".leaflet-found-pane path.exemplar-box").count() == 2

    # The keyboard alone: Enter on the "Like this" button picks the tool and puts the keyboard on the map, where
    # Enter draws a box at the middle of the view (the green park lies there): the greens are found.
    page.click("#find-clear")
    page.locator("#find-draw [data-mode='example']").press("Enter")
    assert page.evaluate("samgis.state.mode === 'example' && document.activeElement === samgis.map.getContainer()")
    page.keyboard.press("Enter")
    page.wait_for_function("samgis.state.findsDone >= 3")
    greens = sorted(sh.name for sh in scene.shapes if colour_family(sh.rgb)[0] == "green")
    assert len(greens) >= 2 and sorted(found_shapes(page, scene)) == greens, found_shapes(page, scene)
    page.keyboard.press("Escape")
    assert page.evaluate("samgis.state.mode") == "pan"


def test_a_model_of_example_boxes_alone_offers_the_box_tools_without_a_phrase(concept_page, concept_live):
    """A model with the exemplars capability but not text: Find shows the box tools, not the phrase box (the page
    says why), and a box drawn over the blue pool finds it."""
    from samgis.engine.protocol import Capabilities
    from tests.support.scene import CONCEPT_PLACE, concept_scene

    page = concept_page
    engine = concept_live.engine
    claimed = engine.capabilities
    engine.capabilities = Capabilities(exemplars=True)
    try:
        lng, lat = CONCEPT_PLACE
        open_map(page, concept_live.url, lat, lng, FIND_ZOOM)
        page.wait_for_selector("#find-form:not([hidden])")
        assert page.locator("#find-draw").is_visible() and page.locator("#find-phrase").is_hidden()
        assert "takes example boxes, not phrases" in page.inner_text("#find-unavailable")
        pool = concept_scene().shape("blue-pool").polygon
        w, s, e, n = pool.bounds
        page.keyboard.press("x")
        drag_box(page, (s, w), (n, e))
        page.wait_for_function("samgis.state.findsDone >= 1")
        assert page.get_attribute("#status", "data-phase") == "ok", page.inner_text("#messages")
        assert found_shapes(page, concept_scene()) == ["blue-pool"]
    finally:
        engine.capabilities = claimed


def vertices(fc: dict) -> int:
    return sum(len(ring) for f in fc["features"] for poly in (
        [f["geometry"]["coordinates"]] if f["geometry"]["type"] == "Polygon" else f["geometry"]["coordinates"])
        for ring in poly)


def test_the_shape_control_regularizes_or_smooths_outlines(concept_page, concept_live):
    """Shape: "regularize" is sent with the click (and with Find) and squares the tilted building's pixel
    staircase to four corners; "smooth" replaces it; "as is" sends neither."""
    from tests.support.scene import outline_scene

    page = concept_page
    truth = outline_scene().shape("tilted-building").polygon
    c = truth.centroid
    open_map(page, concept_live.url, c.y, c.x, 18)
    assert page.locator("#shape").input_value() == "as-is"
    lat, lng = inside_point(truth)
    click_at(page, lat, lng)
    req = page.evaluate("samgis.state.lastRequest")
    assert "regularize" not in req and "smooth" not in req
    plain = current_fc(page)
    assert plain and iou(union_geometry(plain), truth) >= 0.9, page.inner_text("#messages")

    before = done(page)
    page.select_option("#shape", "regularize")  # the prompts are segmented again with it
    settle(page, before)
    req = page.evaluate("samgis.state.lastRequest")
    assert req["regularize"] is True and "smooth" not in req
    squared = current_fc(page)
    assert vertices(squared) == 5 < vertices(plain), (vertices(squared), vertices(plain))  # 4 corners, closed
    assert iou(union_geometry(squared), truth) >= 0.9
    assert "outlines regularized (buildingregulariser)" in page.inner_text("#status")
    shot(page, "16_shape_regularized")

    before = done(page)
    page.select_option("#shape", "smooth")
    settle(page, before)
    req = page.evaluate("samgis.state.lastRequest")
    assert req["smooth"] is True and "regularize" not in req
    assert "outlines smoothed (smoothify)" in page.inner_text("#status")

    # Find carries it too.
    page.keyboard.press("f")
    page.keyboard.type("purple")
    page.keyboard.press("Enter")
    page.wait_for_function("samgis.state.findsDone >= 1")
    assert page.evaluate("samgis.state.lastFindRequest.smooth") is True
    assert page.get_attribute("#status", "data-phase") == "ok", page.inner_text("#messages")
