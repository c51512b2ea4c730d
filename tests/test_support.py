"""The test infrastructure in tests/support is right: other tests trust its geometry, server and engine."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import mercantile
import numpy as np
import pytest
import shapely
from PIL import Image
from pyproj import Transformer
from shapely.geometry import Polygon, box

from samgis.engine.protocol import DecodeResult, Engine, ModelCard, Prompts
from tests.support.colour_engine import ColourRegionEngine, low_res_logits, pixel_under
from tests.support.scene import (
    BACKGROUND, Scene, Shape, default_scene, pixel_area, polygon_3857, render_array, render_mosaic,
    render_tile, render_tile_png, shape_index, tile_px,
)
from tests.support.tileserver import ATTRIBUTION, SceneTileServer

SCENE = default_scene()
TO_LNGLAT = Transformer.from_crs(3857, 4326, always_xy=True)


def res_3857(z: int, tile_size: int = 256) -> float:
    """EPSG:3857 metres per pixel at zoom z."""
    b = mercantile.xy_bounds(0, 0, 0)
    return (b.right - b.left) / (tile_size * 2**z)


def centre_tile(shape: Shape, z: int) -> mercantile.Tile:
    c = shape.polygon.centroid
    return mercantile.tile(c.x, c.y, z)


def tiles_around(shape: Shape, z: int) -> list[mercantile.Tile]:
    """The 2 x 2 tiles around the shape's centre tile corner nearest its centroid."""
    c = shape.polygon.centroid
    col, row = tile_px(c.x, c.y, z, 0, 0)
    x0, y0 = round(col / 256) - 1, round(row / 256) - 1
    return [mercantile.Tile(x0 + i, y0 + j, z) for j in range(2) for i in range(2)]


def ring_deviation_px(coords: np.ndarray, z: int) -> float:
    """Largest distance (px at z) between lng/lat-straight edges and their Web Mercator chords."""
    worst = 0.0
    t = np.linspace(0, 1, 17)[1:-1]
    for (x0, y0), (x1, y1) in zip(coords[:-1], coords[1:]):
        a, b = np.array(mercantile.xy(x0, y0)), np.array(mercantile.xy(x1, y1))
        pts = np.array([mercantile.xy(x0 + (x1 - x0) * s, y0 + (y1 - y0) * s) for s in t])
        d = b - a
        cross = np.abs(d[0] * (pts[:, 1] - a[1]) - d[1] * (pts[:, 0] - a[0])) / np.hypot(*d)
        worst = max(worst, float(cross.max()) / res_3857(z))
    return worst


# --- the scene ---------------------------------------------------------------------------------------

def test_default_scene_places_and_kinds():
    lats = [s.polygon.centroid.y for s in SCENE.shapes]
    lngs = [s.polygon.centroid.x for s in SCENE.shapes]
    near = lambda lng, lat: [s.name for s, x, y in zip(SCENE.shapes, lngs, lats)  # noqa: E731
                             if abs(x - lng) < 0.3 and abs(y - lat) < 0.3]
    for place in [(11.25, 45.0), (20.0, 70.5), (-60.0, -72.0)]:
        names = near(*place)
        assert {"building", "lake", "field"} <= {n.split("-")[1] for n in names}, (place, names)
    assert any(abs(y) < 5 for y in lats)
    lakes = [s for s in SCENE.shapes if "lake" in s.name]
    assert lakes and all(len(s.polygon.interiors) == 1 for s in lakes)
    assert all(s.name.split("-")[1] == "building" for s in SCENE.shapes[:5])
    colours = [s.rgb for s in SCENE.shapes]
    assert len(set(colours)) == len(colours) and BACKGROUND not in colours
    assert all(s.polygon.is_valid for s in SCENE.shapes)
    # a box around a shape, with no point, selects it (ColourRegionEngine seeds boxes at their centre)
    assert all(s.polygon.contains(box(*s.polygon.bounds).centroid) for s in SCENE.shapes)


def test_shape_sizes_are_what_the_brief_says():
    """Buildings 55–155 m across, lakes 290–430 m, fields 280–330 m (geodesic extent of the bounds)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    for s in SCENE.shapes:
        w, so, e, n = s.polygon.bounds
        wide = geod.inv(w, (so + n) / 2, e, (so + n) / 2)[2]
        tall = geod.inv(w, so, w, n)[2]
        size = max(wide, tall)
        kind = s.name.split("-")[1]
        lo, hi = {"building": (54, 155), "lake": (290, 430), "field": (280, 330), "courtyard": (60, 155)}[kind]
        assert lo <= size <= hi, (s.name, size)


def test_scene_rejects_overlaps_and_colour_clashes():
    a = Shape("a", box(0, 0, 0.001, 0.001), (255, 0, 0))
    with pytest.raises(ValueError, match="overlap"):
        Scene((a, Shape("b", box(0.0005, 0, 0.002, 0.001), (0, 255, 0))))
    with pytest.raises(ValueError, match="colours"):
        Scene((a, Shape("b", box(0.01, 0, 0.02, 0.01), (255, 0, 0))))
    with pytest.raises(ValueError, match="colours"):
        Scene((Shape("bg", box(0, 0, 1, 1), BACKGROUND),))
    assert Scene((a,)).colour_at(0.0005, 0.0005) == (255, 0, 0)
    assert Scene((a,)).colour_at(0.002, 0.0005) == BACKGROUND


def test_edges_are_straight_in_lnglat_and_web_mercator_alike():
    for s in SCENE.shapes:
        for ring in [s.polygon.exterior, *s.polygon.interiors]:
            assert ring_deviation_px(np.array(ring.coords), 18) < 0.1, s.name


def test_tile_px_matches_mercantile_tile_corners():
    t = centre_tile(SCENE.shapes[2], 17)
    nw = mercantile.ul(t.x, t.y, t.z)
    se = mercantile.ul(t.x + 1, t.y + 1, t.z)
    assert np.allclose(tile_px(nw.lng, nw.lat, t.z, t.x, t.y), (0, 0), atol=1e-6)
    assert np.allclose(tile_px(se.lng, se.lat, t.z, t.x, t.y), (256, 256), atol=1e-6)
    assert np.allclose(tile_px(se.lng, se.lat, t.z, t.x, t.y, tile_size=512), (512, 512), atol=1e-6)


@pytest.mark.parametrize("z", [14, 16, 18])
def test_rendered_pixels_are_the_shape_polygons(z):
    """Every pixel of the 2 x 2 tiles around each shape: colour = shape whose lng/lat polygon holds the centre.

    Pixels may disagree only where the centre lies within 0.1 px of a polygon edge (the lng/lat vs
    Web Mercator edge difference).
    """
    checked = {name: 0 for name in (s.name for s in SCENE.shapes)}
    for k, s in enumerate(SCENE.shapes):
        for t in tiles_around(s, z):
            got = render_array(SCENE, t.z, t.x, t.y)
            b = mercantile.xy_bounds(t)
            res = (b.right - b.left) / 256
            cols, rows = np.meshgrid(np.arange(256) + 0.5, np.arange(256) + 0.5)
            mx, my = b.left + cols * res, b.top - rows * res
            lng, lat = TO_LNGLAT.transform(mx.ravel(), my.ravel())
            inside = shapely.contains_xy(s.polygon, lng, lat).reshape(256, 256)
            is_colour = np.all(got == s.rgb, axis=-1)
            wrong = inside != is_colour
            if wrong.any():
                pts = shapely.points(mx[wrong], my[wrong])
                d = shapely.distance(polygon_3857(s.polygon).boundary, pts) / res
                assert d.max() < 0.1, (s.name, t, int(wrong.sum()), float(d.max()))
            # anything not a shape is background, and no other shape strays here
            others = ~is_colour & ~np.all(got == BACKGROUND, axis=-1)
            for o in SCENE.shapes:
                if o is not s:
                    others &= ~np.all(got == o.rgb, axis=-1)
            assert not others.any()
            checked[s.name] += int(inside.sum())
    assert all(v > 0 for v in checked.values()), checked


@pytest.mark.parametrize("name", ["north-building", "south-lake", "mid-lake", "equator-field", "north-lake"])
def test_sampled_points_inside_outside_and_in_holes(name):
    s = SCENE.shape(name)
    z = 17
    inner = s.polygon.representative_point()
    samples = [(inner, s.rgb)]
    for hole in s.polygon.interiors:
        samples.append((Polygon(hole).representative_point(), BACKGROUND))
    w, so, e, n = s.polygon.bounds
    dlng, dlat = (e - w) * 0.02, (n - so) * 0.02
    samples += [(shapely.Point(w - dlng, (so + n) / 2), BACKGROUND), (shapely.Point(e + dlng, so - dlat), BACKGROUND)]
    for p, rgb in samples:
        assert SCENE.colour_at(p.x, p.y) == tuple(rgb)
        t = mercantile.tile(p.x, p.y, z)
        col, row = tile_px(p.x, p.y, z, t.x, t.y)
        img = render_tile(SCENE, z, t.x, t.y)
        assert img.mode == "RGB" and img.size == (256, 256)
        assert img.getpixel((int(col), int(row))) == tuple(rgb), (name, p, rgb)


@pytest.mark.parametrize("name,z", [("mid-building-a", 17), ("north-field", 15), ("south-building", 18),
                                    ("equator-lake", 16), ("mid-courtyard", 14)])
def test_adjacent_tiles_are_seamless(name, z):
    """The 2 x 2 tiles around the tile corner a shape straddles, rendered one by one and stitched, equal the
    whole 512 x 512 block rasterised at once; the shape crosses both seams. And 2 x 2 tiles of 256 px
    at z equal the 512 px tile at z - 1."""
    from affine import Affine
    from rasterio.features import rasterize

    s = SCENE.shape(name)
    x0, y0 = tiles_around(s, z)[0][:2]
    stitched = render_mosaic(SCENE, z, x0, y0, tiles=2)
    nw = mercantile.xy_bounds(x0, y0, z)
    whole = rasterize([(polygon_3857(s.polygon), 1)], out_shape=(512, 512), dtype="uint8",
                      transform=Affine(res_3857(z), 0, nw.left, 0, -res_3857(z), nw.top)).astype(bool)
    mask = np.all(stitched == s.rgb, axis=-1)
    assert np.array_equal(mask, whole)
    assert mask[:, 255].any() and mask[:, 256].any() and mask[255].any() and mask[256].any(), name
    c = s.polygon.representative_point()
    t = mercantile.parent(mercantile.tile(c.x, c.y, z))
    big = render_array(SCENE, t.z, t.x, t.y, tile_size=512)
    assert np.array_equal(render_mosaic(SCENE, z, 2 * t.x, 2 * t.y, tiles=2), big)
    assert np.all(big == s.rgb, axis=-1).any()


def test_tiles_far_from_shapes_are_plain_background_and_png_roundtrips():
    img = np.array(Image.open(io.BytesIO(render_tile_png(SCENE, 16, 0, 0))))
    assert img.shape == (256, 256, 3) and (img == BACKGROUND).all()
    t = centre_tile(SCENE.shapes[0], 18)
    png = render_tile_png(SCENE, t.z, t.x, t.y)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.array(Image.open(io.BytesIO(png)).convert("RGB")), render_array(SCENE, t.z, t.x, t.y))


def test_shape_index_and_pixel_area_agree():
    s = SCENE.shape("mid-courtyard")
    k = SCENE.shapes.index(s) + 1
    z = 17
    tiles = tiles_around(s, z)
    count = sum(int((shape_index(SCENE, t.z, t.x, t.y) == k).sum()) for t in tiles)
    assert count == pytest.approx(pixel_area(s, z), rel=0.02)


def test_scene_layout_suits_click_windows():
    """Promise to the end-to-end tests: at each zoom 14–18 where a shape is 80–700 px across, the samgis
    window for a click at its representative point holds all of it, and so does any other shape's
    window at that zoom that holds the click. The first two shapes fit one z 16 window; the first
    five are in ≥ 3 z 16 windows.
    """
    from samgis.geo.tiles import candidate_windows

    def fits(poly, w, margin=32.0):
        px = w.lnglat_to_px(np.array(poly.exterior.coords))
        return px.min() > margin and px.max() < w.size - margin

    def click(poly):
        p = poly.representative_point()
        return np.array([[p.x, p.y]])

    n_cases, first = 0, {}
    for s in SCENE.shapes:
        for z in range(14, 19):
            b = polygon_3857(s.polygon).bounds
            if not 80 <= max(b[2] - b[0], b[3] - b[1]) / res_3857(z) <= 700:
                continue
            n_cases += 1
            w = candidate_windows(click(s.polygon), z)[0]
            assert fits(s.polygon, w), (s.name, z)
            first[(s.name, z)] = w
    assert n_cases >= 30
    for (name, z), w in first.items():
        for (other, z2), w2 in first.items():
            if z2 == z and other != name and w2 in candidate_windows(click(SCENE.shape(name).polygon), z):
                assert fits(SCENE.shape(name).polygon, w2), (name, other, z)
    a, b = SCENE.shapes[0].polygon, SCENE.shapes[1].polygon
    both = np.vstack([click(a), click(b), np.array(a.bounds).reshape(2, 2), np.array(b.bounds).reshape(2, 2)])
    assert candidate_windows(both, 16)
    assert len({candidate_windows(click(s.polygon), 16)[0] for s in SCENE.shapes[:5]}) >= 3


# --- the tile server -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    with SceneTileServer(SCENE) as srv:
        yield srv


@pytest.fixture
def tiles(server):
    server.reset_counts()
    server.slow_s = 5.0
    return server


def test_server_serves_scene_pngs_over_http(tiles):
    t = centre_tile(SCENE.shapes[0], 17)
    assert tiles.base_url.startswith("http://127.0.0.1:")
    url = tiles.url_template.format(z=t.z, x=t.x, y=t.y)
    assert url == f"{tiles.base_url}/scene/{t.z}/{t.x}/{t.y}.png"
    r = httpx.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png" and r.headers["cache-control"] == "max-age=3600"
    img = np.array(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert np.array_equal(img, render_array(SCENE, t.z, t.x, t.y))
    assert np.all(img == SCENE.shapes[0].rgb, axis=-1).any()


def test_server_counts_requests_thread_safely(tiles):
    t = centre_tile(SCENE.shapes[1], 16)
    urls = [tiles.url_template.format(z=t.z, x=t.x + i % 3, y=t.y) for i in range(24)]
    with httpx.Client() as c, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda u: c.get(u).status_code, urls))
    assert statuses == [200] * 24
    assert tiles.requests == 24 and tiles.counts == {"scene": 24}
    httpx.get(f"{tiles.base_url}/error/1/0/0.png")
    httpx.get(f"{tiles.base_url}/nope")
    assert tiles.requests == 26 and tiles.counts["error"] == 1 and tiles.counts["other"] == 1
    tiles.reset_counts()
    assert tiles.requests == 0 and tiles.counts == {}


def test_repeated_tiles_come_from_memory(tiles):
    t = centre_tile(SCENE.shapes[5], 15)
    url = tiles.url_template.format(z=t.z, x=t.x, y=t.y)
    first = httpx.get(url).content
    hits = tiles.cache_info().hits
    assert httpx.get(url).content == first
    assert tiles.cache_info().hits == hits + 1


@pytest.mark.parametrize("route,status", [("missing", 404), ("error", 500)])
def test_failure_routes(tiles, route, status):
    r = httpx.get(f"{tiles.base_url}/{route}/16/34814/23566.png")
    assert r.status_code == status


def test_garbage_route_is_200_but_not_an_image(tiles):
    r = httpx.get(f"{tiles.base_url}/garbage/16/34814/23566.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with pytest.raises(Exception):
        Image.open(io.BytesIO(r.content)).load()


def test_off_grid_and_unknown_paths_are_404(tiles):
    assert httpx.get(f"{tiles.base_url}/scene/2/4/0.png").status_code == 404
    assert httpx.get(f"{tiles.base_url}/scene/2/0/0.jpg").status_code == 404
    assert httpx.get(f"{tiles.base_url}/other/2/0/0.png").status_code == 404


def test_slow_route_waits_then_serves(tiles):
    tiles.slow_s = 0.4
    url = f"{tiles.base_url}/slow/16/34814/23566.png"
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=httpx.Timeout(5.0, read=0.1))
    t0 = time.perf_counter()
    r = httpx.get(url, timeout=5)
    assert time.perf_counter() - t0 >= 0.35
    assert r.status_code == 200 and r.content == tiles.tile_png(16, 34814, 23566)


def test_providers_file(tiles, tmp_path):
    prov = tiles.providers()
    assert set(prov) == {"Scene", "SceneMissing", "SceneError", "SceneSlow", "SceneGarbage"}
    assert prov["Scene"] == {"url": tiles.url_template, "max_zoom": 20, "attribution": ATTRIBUTION, "tile_size": 256}
    assert prov["SceneSlow"]["url"] == f"{tiles.base_url}/slow/{{z}}/{{x}}/{{y}}.png"
    path = tiles.write_providers(tmp_path / "providers.json")
    assert json.loads(path.read_text(encoding="utf-8")) == prov
    from samgis.geo.sources import SourceRegistry

    reg = SourceRegistry.from_config(path, builtins=False)
    assert reg.get("Scene").tile_url(16, 1, 2) == f"{tiles.base_url}/scene/16/1/2.png"


def test_server_is_silent_and_stops_promptly_with_a_slow_request_in_flight(capfd):
    with SceneTileServer(SCENE, tile_size=512) as srv:
        srv.slow_s = 30
        assert srv.providers()["Scene"]["tile_size"] == 512
        r = httpx.get(srv.url_template.format(z=3, x=4, y=2))
        assert Image.open(io.BytesIO(r.content)).size == (512, 512)
        httpx.get(f"{srv.base_url}/missing/3/4/2.png")
        slow = threading.Thread(target=lambda: httpx.get(f"{srv.base_url}/slow/3/4/2.png", timeout=60), daemon=True)
        slow.start()
        time.sleep(0.2)
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 2
    slow.join(timeout=5)
    assert not slow.is_alive()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url_template.format(z=3, x=4, y=2), timeout=2)


# --- the colour-region engine --------------------------------------------------------------------

@pytest.fixture(scope="module")
def window():
    """A 4 x 4-tile window at z 17 around the first building: (z, x0, y0) and its (1024, 1024, 3) image."""
    s = SCENE.shapes[0]
    c = s.polygon.representative_point()
    col, row = tile_px(c.x, c.y, 17, 0, 0)
    x0, y0 = round(col / 256) - 2, round(row / 256) - 2
    return (17, x0, y0), render_mosaic(SCENE, 17, x0, y0)


def window_px(lng: float, lat: float, key) -> tuple[float, float]:
    """SAM-convention image px (integer = pixel centre) of a lng/lat point in the window."""
    z, x0, y0 = key
    col, row = tile_px(lng, lat, z, x0, y0)
    return col - 0.5, row - 0.5


def test_engine_satisfies_the_protocol():
    eng = ColourRegionEngine()
    assert isinstance(eng, Engine) and eng.model_id == "test-colour"
    card = eng.describe()
    assert isinstance(card, ModelCard) and card.model_id == "test-colour" and card.image_size == 1024


def test_embed_keeps_a_copy_and_counts_calls_thread_safely():
    eng = ColourRegionEngine()
    img = np.zeros((300, 500, 3), np.uint8)
    with ThreadPoolExecutor(8) as pool:
        embs = list(pool.map(lambda _: eng.embed(img), range(40)))
    assert eng.embed_calls == 40
    e = embs[0]
    img[0, 0] = 7
    assert e.features[0, 0, 0] == 0 and not e.features.flags.writeable
    assert e.original_size == (300, 500) and e.input_size == (614, 1024)
    assert e.nbytes == img.nbytes and e.model_id == "test-colour"
    with pytest.raises(ValueError):
        eng.embed(np.zeros((4, 4), np.uint8))


def test_embed_delay():
    eng = ColourRegionEngine()
    eng.embed_delay_s = 0.2
    t0 = time.perf_counter()
    eng.embed(np.zeros((8, 8, 3), np.uint8))
    assert time.perf_counter() - t0 >= 0.19


def test_click_convention_integer_is_pixel_centre():
    """Every pixel a unique colour: the mask is the one pixel whose centre is nearest the click."""
    img = np.arange(16 * 16 * 3, dtype=np.uint32).reshape(16, 16, 3)
    img = np.stack([img[..., 0] % 256, img[..., 0] // 256, np.full((16, 16), 9)], axis=-1).astype(np.uint8)
    eng = ColourRegionEngine()
    emb = eng.embed(img)
    for (x, y), (row, col) in {(3.0, 5.0): (5, 3), (3.49, 5.49): (5, 3), (3.51, 4.51): (5, 4),
                               (-0.49, 0.0): (0, 0), (15.4, 15.4): (15, 15)}.items():
        m = eng.decode(emb, Prompts(points=[[x, y]], labels=[1])).masks[0, 0]
        assert m.sum() == 1 and m[row, col], (x, y)
    assert pixel_under(15.6, 0, (16, 16)) is None
    assert not eng.decode(emb, Prompts(points=[[16.0, 3.0]], labels=[1])).masks.any()


@pytest.mark.parametrize("name", ["mid-building-a", "mid-building-b"])
def test_click_on_a_building_returns_its_pixels(window, name):
    key, img = window
    s = SCENE.shape(name)
    eng = ColourRegionEngine()
    emb = eng.embed(img)
    p = s.polygon.representative_point()
    res = eng.decode(emb, Prompts(points=[window_px(p.x, p.y, key)], labels=[1]))
    assert isinstance(res, DecodeResult)
    assert res.masks.shape == (1, 1, 1024, 1024) and res.masks.dtype == bool
    assert res.scores.shape == (1, 1) and res.scores.dtype == np.float32 and res.scores[0, 0] == pytest.approx(0.95)
    assert res.logits.shape == (1, 1, 256, 256) and res.logits.dtype == np.float32
    mask = res.masks[0, 0]
    assert mask.sum() == pytest.approx(pixel_area(s, key[0]), rel=0.03)
    assert np.array_equal(mask, np.all(img == s.rgb, axis=-1))
    # mask pixel centres map back inside the known lng/lat polygon (up to edge pixels)
    z, x0, y0 = key
    b = mercantile.xy_bounds(x0, y0, z)
    rows, cols = np.nonzero(mask)
    lng, lat = TO_LNGLAT.transform(b.left + (cols + 0.5) * res_3857(z), b.top - (rows + 0.5) * res_3857(z))
    assert shapely.contains_xy(s.polygon, lng, lat).mean() > 0.999


def test_click_on_a_lake_leaves_the_island_out():
    s = SCENE.shape("mid-lake")
    z = 16
    c = s.polygon.representative_point()
    col, row = tile_px(c.x, c.y, z, 0, 0)
    key = (z, round(col / 256) - 2, round(row / 256) - 2)
    img = render_mosaic(SCENE, *key)
    eng = ColourRegionEngine()
    emb = eng.embed(img)
    mask = eng.decode(emb, Prompts(points=[window_px(c.x, c.y, key)], labels=[1])).masks[0, 0]
    assert mask.sum() == pytest.approx(pixel_area(s, z), rel=0.03)
    island = Polygon(s.polygon.interiors[0]).representative_point()
    ic, ir = window_px(island.x, island.y, key)
    assert not mask[round(ir), round(ic)]
    hole = eng.decode(emb, Prompts(points=[[ic, ir]], labels=[1])).masks[0, 0]
    assert hole.sum() == pytest.approx(pixel_area(Shape("i", Polygon(s.polygon.interiors[0]), (0, 0, 0)), z), rel=0.05)


def test_boxes_exclude_points_and_multimask(window):
    key, img = window
    eng = ColourRegionEngine()
    emb = eng.embed(img)
    a, b = SCENE.shapes[0], SCENE.shapes[1]
    truth_a, truth_b = np.all(img == a.rgb, axis=-1), np.all(img == b.rgb, axis=-1)

    def box_of(shape, pad=0.0001):
        w, s, e, n = shape.polygon.buffer(pad).bounds
        return [*window_px(w, n, key), *window_px(e, s, key)]

    pa = a.polygon.representative_point()
    click_a = window_px(pa.x, pa.y, key)
    # a box alone segments the colour at its centre
    res = eng.decode(emb, Prompts(boxes=[box_of(a)]))
    assert np.array_equal(res.masks[0, 0], truth_a)
    # a point in box a, boxes a and b: box a uses the point, box b (point outside it) uses its centre
    bc = b.polygon.representative_point()
    bx = window_px(bc.x, bc.y, key)
    bx = (round(bx[0]), round(bx[1]))
    box_b = [bx[0] - 3, bx[1] - 3, bx[0] + 3, bx[1] + 3]  # 7 x 7 pixel centres inside b
    res = eng.decode(emb, Prompts(points=[click_a], labels=[1], boxes=[box_of(a), box_b]))
    assert res.masks.shape == (2, 1, 1024, 1024)
    assert np.array_equal(res.masks[0, 0], truth_a)
    assert res.masks[1, 0].sum() == 49 and (res.masks[1, 0] <= truth_b).all()
    # a box cutting a in half keeps only the part inside the box
    x0, y0, x1, y1 = box_of(a)
    half = eng.decode(emb, Prompts(points=[click_a], labels=[1], boxes=[[x0, y0, click_a[0], y1]])).masks[0, 0]
    cols = np.arange(1024)
    assert np.array_equal(half, truth_a & (cols <= click_a[0])[None, :])
    # exclude point inside the region empties it; outside it changes nothing
    pb = window_px(bc.x, bc.y, key)
    assert not eng.decode(emb, Prompts(points=[click_a, click_a], labels=[1, 0])).masks.any()
    assert np.array_equal(eng.decode(emb, Prompts(points=[click_a, pb], labels=[1, 0])).masks[0, 0], truth_a)
    assert not eng.decode(emb, Prompts(points=[pb], labels=[0])).masks.any()
    # multimask: region, eroded, dilated
    res = eng.decode(emb, Prompts(points=[click_a], labels=[1]), multimask=True)
    assert res.masks.shape == (1, 3, 1024, 1024) and res.logits.shape == (1, 3, 256, 256)
    assert np.allclose(res.scores, [[0.9, 0.8, 0.7]]) and res.scores.dtype == np.float32
    m, er, di = res.masks[0]
    assert np.array_equal(m, truth_a) and (er <= m).all() and (m <= di).all()
    assert er.sum() < m.sum() < di.sum()
    assert not er[np.nonzero(m)[0].min() + 1].any()  # 2 px eaten at the top edge


def test_logits_are_the_mask_in_sams_low_res_frame(window):
    key, img = window
    eng = ColourRegionEngine()
    emb = eng.embed(img)
    p = SCENE.shapes[0].polygon.representative_point()
    res = eng.decode(emb, Prompts(points=[window_px(p.x, p.y, key)], labels=[1]))
    lg = res.logits[0, 0]
    assert set(np.unique(lg)) <= {-10.0, 10.0}
    assert np.array_equal(lg > 0, res.masks[0, 0][2::4, 2::4])
    wide = np.zeros((100, 200), bool)
    wide[:, 100:] = True
    lw = low_res_logits(wide)
    assert (lw[128:] == -10).all()  # padding below the image
    assert (lw[:128, 128:] == 10).all() and (lw[:128, :128] == -10).all()


@pytest.mark.parametrize("shape", SCENE.shapes, ids=lambda s: s.name)
def test_a_box_around_any_shape_selects_it(shape):
    z = next(z for z in range(14, 19) if 60 <= (lambda b: max(b[2] - b[0], b[3] - b[1]))(
        polygon_3857(shape.polygon).bounds) / res_3857(z))
    c = shape.polygon.representative_point()
    col, row = tile_px(c.x, c.y, z, 0, 0)
    key = (z, round(col / 256) - 2, round(row / 256) - 2)
    img = render_mosaic(SCENE, *key)
    w, s, e, n = shape.polygon.bounds
    eng = ColourRegionEngine()
    mask = eng.decode(eng.embed(img), Prompts(boxes=[[*window_px(w, n, key), *window_px(e, s, key)]])).masks[0, 0]
    assert np.array_equal(mask, np.all(img == shape.rgb, axis=-1))
    assert mask.sum() == pytest.approx(pixel_area(shape, z), rel=0.05)


def test_colour_engine_regions_mode_gives_every_colour_region_as_one_record():
    from samgis.engine.protocol import AmgOptions

    img = np.zeros((6, 8, 3), np.uint8)
    img[1:3, 1:3] = (255, 0, 0)  # a red square
    img[4:6, 5:8] = (255, 0, 0)  # a second red region, not connected to the first
    img[0:2, 6:8] = (0, 0, 255)
    eng = ColourRegionEngine(automatic="regions")
    records = eng.generate(eng.embed(img), AmgOptions())
    assert len(records) == 4  # black background (one region), two red, one blue
    segs = np.array([r["segmentation"] for r in records])
    assert segs.shape == (4, 6, 8) and segs.dtype == bool
    assert np.array_equal(segs.sum(axis=0), np.ones((6, 8)))  # they tile the image
    red = next(r for r in records if r["bbox"] == [1, 1, 2, 2])
    assert red["area"] == 4 and red["point_coords"] == [[1.0, 1.0]] and red["crop_box"] == [0, 0, 8, 6]
    assert {r["predicted_iou"] for r in records} == {0.95} and {r["stability_score"] for r in records} == {1.0}
    assert [r["area"] for r in eng.generate(eng.embed(img), AmgOptions(min_mask_region_area=5))] == [34, 6]
    with pytest.raises(ValueError):
        ColourRegionEngine(automatic="everything")
