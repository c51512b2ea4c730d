"""Objects larger than a window, interactively: /v1/segment follows a mask that touches its window's edge into the
neighbouring lattice windows (within `window_budget`) and decodes a box larger than a window in each window it
covers, returning one merged polygon. Real uvicorn + the scene tile server + the colour engine."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import Polygon

from api.app import create_app
from samgis.geo.tiles import Window, lattice_cover
from samgis.settings import Settings
from samgis.vector.seams import depth, merge_pieces, seam_directions, seam_point
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.raster import write_raster
from tests.support.geometry import iou, union_geometry
from tests.support.scene import Scene, Shape
from tests.support.tileserver import SceneTileServer

Z = 16
X0, Y0 = 34_000, 24_000  # a z 16 tile on the half-window lattice (even), mid latitude in Europe


def lnglat(tx: float, ty: float) -> tuple[float, float]:
    """lng/lat of fractional z 16 tile coordinates (tx, ty) relative to (X0, Y0)."""
    x, y = X0 + tx, Y0 + ty
    n = 2.0**Z
    lng = x / n * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(np.pi * (1 - 2 * y / n))))
    return float(lng), float(lat)


def rect(tx0: float, ty0: float, tx1: float, ty1: float) -> Polygon:
    """Axis-aligned rectangle between tile coordinates (straight in Web Mercator and lng/lat alike)."""
    return Polygon([lnglat(tx0, ty1), lnglat(tx1, ty1), lnglat(tx1, ty0), lnglat(tx0, ty0)])


# A strip 9 tiles (2304 px) long in the home window's middle rows: the click's window holds its west end, and it
# runs east through the neighbours at +2, +4 and +6 tiles: four lattice windows in all.
STRIP = rect(0.5, 1.5, 9.5, 2.5)
CLICK = (2.1, 1.9)
# A bar 7 tiles long further south for box prompts (no window holds the box at z 16).
BAR = rect(0.5, 5.5, 7.5, 6.5)
BAR_BOX = (0.3, 5.3, 7.7, 6.7)
SCENE = Scene((Shape("strip", STRIP, (200, 40, 40)), Shape("bar", BAR, (40, 40, 200))))


@pytest.fixture(scope="module")
def scene_tiles():
    with SceneTileServer(SCENE) as server:
        yield server


@pytest.fixture(scope="module")
def engine():
    return ColourRegionEngine()


@pytest.fixture(scope="module")
def live(scene_tiles, engine, tmp_path_factory):
    settings = scene_tiles.settings(tmp_path_factory.mktemp("follow"))
    with LiveServer(create_app(settings, engine=engine)) as server:
        yield server


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def view() -> dict:
    w, n = lnglat(-4, -4)
    e, s = lnglat(14, 12)
    return {"ne": {"lat": n, "lng": e}, "sw": {"lat": s, "lng": w}}


def click(**extra) -> dict:
    lng, lat = lnglat(*CLICK)
    return {"bbox": view(), "zoom": Z, "source": "Scene", "simplify_px": 0,
            "prompts": [{"type": "point", "lat": lat, "lng": lng, "label": 1}], **extra}


def box_request(**extra) -> dict:
    w, n = lnglat(BAR_BOX[0], BAR_BOX[1])
    e, s = lnglat(BAR_BOX[2], BAR_BOX[3])
    return {"bbox": view(), "zoom": Z, "source": "Scene", "simplify_px": 0,
            "prompts": [{"type": "box", "sw": {"lat": s, "lng": w}, "ne": {"lat": n, "lng": e}}], **extra}


@pytest.mark.slow
def test_click_follows_the_object_into_neighbour_windows_and_returns_it_whole(client, scene_tiles, engine):
    r = client.post("/v1/segment", json=click())
    assert r.status_code == 200, r.text
    fc = r.json()
    meta = fc["samgis"]
    assert [(w["x"], w["y"]) for w in meta["windows"]] == [(X0, Y0), (X0 + 2, Y0), (X0 + 4, Y0), (X0 + 6, Y0)]
    assert meta["window"] == {k: meta["windows"][0][k] for k in ("z", "x", "y", "size")}
    assert meta["follow"] == {"window_budget": 4, "stopped_by_budget": False}
    assert all(w["z"] == Z and w["size"] == 1024 for w in meta["windows"])
    assert len(fc["features"]) == 1 and fc["features"][0]["properties"]["windows"] == 4
    assert fc["features"][0]["geometry"]["type"] == "Polygon"  # one merged polygon, no seams
    assert iou(union_geometry(fc), STRIP) >= 0.95, iou(union_geometry(fc), STRIP)

    # the same click again: every window's embedding comes from the cache, no tile is fetched
    calls, scene_tiles_before = engine.embed_calls, scene_tiles.requests
    again = client.post("/v1/segment", json=click()).json()
    assert [w["cache"] for w in again["samgis"]["windows"]] == ["hit"] * 4 and again["samgis"]["cache"] == "hit"
    assert engine.embed_calls == calls and scene_tiles.requests == scene_tiles_before
    assert again["features"][0]["geometry"] == fc["features"][0]["geometry"]


def test_window_budget_is_respected_and_reported(client):
    fc = client.post("/v1/segment", json=click(window_budget=2)).json()
    meta = fc["samgis"]
    assert len(meta["windows"]) == 2 and meta["follow"] == {"window_budget": 2, "stopped_by_budget": True}
    got = union_geometry(fc)
    assert got.within(STRIP.buffer(1e-7)) and 0.3 < got.area / STRIP.area < 0.7  # cut, honestly flagged
    one = client.post("/v1/segment", json=click(window_budget=1)).json()["samgis"]
    assert len(one["windows"]) == 1 and one["follow"]["stopped_by_budget"] is True


def test_multimask_follows_each_mask(client):
    """Each of the three masks is followed on its own (mask k of a neighbour's decode continues mask k)."""
    fc = client.post("/v1/segment", json=click(multimask=True)).json()
    assert sorted(f["properties"]["mask_index"] for f in fc["features"]) == [0, 1, 2]
    # the colour engine's mask 1 is eroded by 2 px from the window's border too, so it never reaches a seam
    windows = {f["properties"]["mask_index"]: f["properties"]["windows"] for f in fc["features"]}
    assert windows == {0: 4, 1: 1, 2: 4} and len(fc["samgis"]["windows"]) == 4
    assert iou(union_geometry({"features": [f for f in fc["features"] if f["properties"]["mask_index"] == 0]}),
               STRIP) >= 0.95


@pytest.mark.parametrize("budget", [0, 17, 2.5, "4", True])
def test_bad_window_budget_is_a_422_naming_it(client, budget):
    r = client.post("/v1/segment", json=click(window_budget=budget))
    assert r.status_code == 422, r.text
    assert "window_budget" in r.text


def test_mask_pixel_limit_counts_every_window_the_answer_may_use(scene_tiles, tmp_path):
    settings = scene_tiles.settings(tmp_path, max_mask_pixels=3 * 1024 * 1024)
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/segment", json=click(window_budget=4))
        assert r.status_code == 422 and r.json()["field"] == "window_budget", r.text
        assert "max_mask_pixels" in r.json()["detail"]
        assert c.post("/v1/segment", json=click(window_budget=3)).status_code == 200


def test_box_spanning_windows_is_decoded_per_window_and_merged(client):
    fc = client.post("/v1/segment", json=box_request()).json()
    meta = fc["samgis"]
    assert meta["window"]["z"] == Z, "the box is decoded at the zoom asked for, not stepped out"
    assert [(w["x"], w["y"]) for w in meta["windows"]] == [(X0, Y0 + 4), (X0 + 4, Y0 + 4)]
    assert meta["follow"]["stopped_by_budget"] is False
    assert len(fc["features"]) == 1 and fc["features"][0]["geometry"]["type"] == "Polygon"
    assert iou(union_geometry(fc), BAR) >= 0.95, iou(union_geometry(fc), BAR)
    # over the budget the box does not fit at z 16: the window steps out a zoom level, as before following
    stepped = client.post("/v1/segment", json=box_request(window_budget=1)).json()["samgis"]
    assert stepped["window"]["z"] == Z - 1 and len(stepped["windows"]) == 1


@pytest.mark.slow
def test_deadline_while_following_is_a_504_saying_how_far_it_got(scene_tiles, tmp_path):
    engine = ColourRegionEngine()
    settings = scene_tiles.settings(tmp_path, deadline_s=4.0)
    with LiveServer(create_app(settings, engine=engine)) as server, httpx.Client(base_url=server.url,
                                                                                   timeout=30) as c:
        assert c.post("/v1/segment", json=click(window_budget=1)).status_code == 200  # home window cached
        engine.embed_delay_s = 8.0  # every further encoder pass outlasts the deadline
        r = c.post("/v1/segment", json=click())
        assert r.status_code == 504, r.text
        assert "had embedded 1 of at most 4 (window_budget)" in r.json()["detail"]
        assert c.post("/v1/segment", json=click(window_budget=1)).status_code == 200


@pytest.mark.slow
def test_raster_sources_follow_on_their_own_grid(tmp_path):
    """A strip 2800 native px long in a UTM GeoTIFF: followed window by window on the raster's own lattice."""
    o, res = (500000.0, 5000000.0), 0.5
    strip = shapely.box(o[0] + 100 * res, o[1] - 600 * res, o[0] + 2900 * res, o[1] - 400 * res)
    raster = write_raster(tmp_path / "utm.tif", crs="EPSG:32632", origin=o, res=res, width=3072, height=1024,
                          background=(120, 120, 120), shapes=[("strip", strip, (200, 30, 30))])
    (tmp_path / "providers.json").write_text(json.dumps({"Ortho": {"raster": "utm.tif"}}))
    settings = Settings(providers=tmp_path / "providers.json", builtin_sources=False, cache_dir=tmp_path / "cache")
    truth = raster.shapes[0].lnglat()
    lng, lat = Transformer.from_crs("EPSG:32632", 4326, always_xy=True).transform(*(raster.transform * (300, 500)))
    req = {"bbox": {"ne": {"lat": lat + 0.02, "lng": lng + 0.05}, "sw": {"lat": lat - 0.02, "lng": lng - 0.05}},
           "zoom": 18, "source": "Ortho", "simplify_px": 0, "window_budget": 6,
           "prompts": [{"type": "point", "lat": lat, "lng": lng, "label": 1}]}
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        fc = c.post("/v1/segment", json=req).json()
    meta = fc["samgis"]
    cells = [(w["level"], w["col"], w["row"]) for w in meta["windows"]]
    assert cells == [(1, c, 0) for c in (0, 512, 1024, 1536, 2048)]
    assert meta["follow"]["stopped_by_budget"] is False
    assert iou(union_geometry(fc), truth) >= 0.95, iou(union_geometry(fc), truth)


# --- the shared pieces ------------------------------------------------------------------------------------

def test_neighbours_stay_on_the_half_window_lattice_and_overlap():
    w = Window(Z, X0 + 1, Y0)  # off the lattice: its neighbours snap onto it
    assert (w.neighbour(1, 0).x, w.neighbour(-1, 0).x) == (X0 + 2, X0)
    assert Window(1, 0, 0).neighbour(1, 1) is None  # the whole world is one window
    assert lattice_cover(0.5, 9.5, 4, 2) == [0, 4, 8]


def test_seam_point_lies_on_the_mask_inside_both_windows():
    mask = np.zeros((1024, 1024), bool)
    mask[400:600, 100:] = True
    assert seam_directions(mask) == [(1, 0)]
    pt = seam_point(depth(mask), (512, 0))  # in the neighbour's px, SAM convention
    c, r = int(pt[0, 0]) + 512, int(pt[0, 1])
    assert mask[r, c] and 0 <= pt[0, 0] < 512 and 400 <= r < 600
    (o, canvas) = merge_pieces({(0, 0): mask, (512, 0): np.roll(mask, -512, axis=1) & mask})
    assert o == (0, 0) and canvas.shape == (1024, 1536)
