"""Raster sources end to end: synthetic GeoTIFFs (UTM, LAEA Europe, 4-band uint16 with nodata margins in
EPSG:4326) served by a real uvicorn with the colour-region test engine. Polygons recovered from clicks must match
the shapes' known coordinates, segmented on the raster's own grid (native and overview levels)."""

from __future__ import annotations

import io
import json
import time

import httpx
import mercantile
import numpy as np
import pytest
import rasterio.shutil
import shapely
import shapely.geometry
from PIL import Image

from api.app import create_app
from samgis.cli.main import main as cli_main
from samgis.geo.sources import SourceRegistry
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.geometry import iou, union_geometry
from tests.support.range_server import RangeFileServer
from tests.support.raster import RasterShape, write_big_sparse_raster, write_raster


def _rotated_rect(cx: float, cy: float, w: float, h: float, deg: float):
    from shapely import affinity

    return affinity.rotate(shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), deg, origin=(cx, cy))


def _at(origin, res, col, row):
    """CRS coordinates of px (col, row) of a north-up grid."""
    return origin[0] + col * res, origin[1] - row * res


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rasters")
    o, r = (500000.0, 5000000.0), 0.5  # UTM 32N, ~lng 9, lat 45.1; 0.5 m px
    utm = write_raster(
        tmp / "utm.tif", crs="EPSG:32632", origin=o, res=r, width=2048, height=2048, background=(120, 120, 120),
        shapes=[("field", _rotated_rect(*_at(o, r, 600, 600), 150, 110, 20), (200, 30, 30)),
                ("pond", shapely.Point(*_at(o, r, 1400, 700)).buffer(75), (30, 30, 200)),
                ("barn", shapely.union(shapely.box(*_at(o, r, 850, 1550), *_at(o, r, 1150, 1450)),
                                       shapely.box(*_at(o, r, 850, 1550), *_at(o, r, 950, 1250))), (30, 200, 30))],
        overviews=(2, 4))
    o3, r3 = (4321000.0, 3210000.0), 2.0  # LAEA Europe, ~lng 10, lat 52; 2 m px, single band, not square
    laea = write_raster(
        tmp / "laea.tif", crs="EPSG:3035", origin=o3, res=r3, width=1536, height=1024, background=(100,),
        shapes=[("lake", shapely.Point(*_at(o3, r3, 400, 500)).buffer(300, quad_segs=3), (40,)),
                ("wood", _rotated_rect(*_at(o3, r3, 1100, 400), 500, 300, -35), (180,))])
    o4, r4 = (11.0, 46.0), 1e-5  # EPSG:4326 degrees, 4 bands uint16, nodata 0 outside cols 1400..2460, rows 100..924
    scene = write_raster(
        tmp / "scene.tif", crs="EPSG:4326", origin=o4, res=r4, width=2560, height=1024, dtype="uint16",
        background=(2000, 2000, 2000, 500), nodata=0, valid_px=(1400, 100, 2460, 924),
        shapes=[("roof", shapely.box(*_at(o4, r4, 1600, 600), *_at(o4, r4, 1900, 300)), (1000, 3000, 2000, 9)),
                ("court", shapely.Point(*_at(o4, r4, 2150, 500)).buffer(150 * r4), (3000, 1000, 3000, 9)),
                ("dark", shapely.box(*_at(o4, r4, 1300, 850), *_at(o4, r4, 1600, 650)), (500, 500, 500, 9))])
    providers = tmp / "providers.json"
    providers.write_text(json.dumps({
        "Ortho": {"raster": "utm.tif", "attribution": "test ortho"},
        "Laea": {"raster": str(laea.path)},
        "Scene": {"raster": "scene.tif", "bands": [1, 2, 3]},
        "SceneFixed": {"raster": "scene.tif", "bands": [1, 2, 3], "rescale": [[1000, 3000]] * 3},
    }))
    return {"Ortho": utm, "Laea": laea, "Scene": scene, "providers": providers, "tmp": tmp}


@pytest.fixture(scope="module")
def engine():
    return ColourRegionEngine()


@pytest.fixture(scope="module")
def client(rasters, engine):
    settings = Settings(providers=rasters["providers"], builtin_sources=False, cache_dir=rasters["tmp"] / "cache")
    with LiveServer(create_app(settings, engine=engine)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def click(source: str, lng: float, lat: float, zoom: int = 18) -> dict:
    d = 0.01
    return {"bbox": {"ne": {"lat": lat + d, "lng": lng + d}, "sw": {"lat": lat - d, "lng": lng - d}},
            "zoom": zoom, "source": source, "prompts": [{"type": "point", "lat": lat, "lng": lng, "label": 1}]}


@pytest.mark.parametrize("source,name,zoom,level", [
    ("Ortho", "field", 18, 1), ("Ortho", "pond", 18, 1), ("Ortho", "barn", 18, 1),
    ("Ortho", "field", 16, 2), ("Ortho", "barn", 16, 2),  # an overview level, chosen from the view's zoom
    ("Laea", "lake", 17, 1), ("Laea", "wood", 17, 1),
    ("Scene", "roof", 18, 1), ("Scene", "court", 18, 1), ("SceneFixed", "roof", 18, 1),
])
def test_recovered_polygons_match_known_shapes(client, rasters, source, name, zoom, level):
    raster = rasters[source.removesuffix("Fixed")]
    shp: RasterShape = raster.shape(name)
    r = client.post("/v1/segment", json=click(source, *shp.inside_lnglat(), zoom=zoom))
    assert r.status_code == 200, r.text
    fc = r.json()
    window = fc["samgis"]["window"]
    assert window["level"] == level and window["size"] == 1024
    assert window["col"] % 512 == 0 and window["row"] % 512 == 0  # the lattice
    assert window["crs"] == raster.crs
    got = iou(union_geometry(fc), shp.lnglat())
    assert got >= 0.97, got


def test_masks_are_clipped_to_valid_pixels(client, rasters):
    scene = rasters["Scene"]
    dark = scene.shape("dark")  # black after the stretch, like nodata, and it runs into the left margin
    lng, lat = scene.px_to_lnglat(1500, 750)
    fc = client.post("/v1/segment", json=click("Scene", lng, lat)).json()
    got = union_geometry(fc)
    expected = dark.lnglat().intersection(scene.data_area_lnglat(1400, 100, 2460, 924))
    assert iou(got, expected) >= 0.97
    assert iou(got, dark.lnglat()) < 0.8  # the part in the margin is not there


def test_second_click_in_the_same_raster_window_is_a_cache_hit(client, rasters, engine):
    utm = rasters["Ortho"]
    first = client.post("/v1/segment", json=click("Ortho", *utm.px_to_lnglat(600, 600))).json()["samgis"]
    calls = engine.embed_calls
    second = client.post("/v1/segment", json=click("Ortho", *utm.px_to_lnglat(640, 590))).json()["samgis"]
    assert second["cache"] == "hit" and engine.embed_calls == calls
    assert second["window"] == first["window"]
    assert "tiles" not in second["timings_ms"] and "embed" not in second["timings_ms"]


def test_everything_on_a_raster_window_finds_its_shapes_clipped_to_valid_pixels(client, rasters):
    scene = rasters["Scene"]
    lng, lat = scene.px_to_lnglat(1750, 450)  # the roof's window: cols 1024..2048, rows 0..1024
    r = client.post("/v1/segment/everything", json={"lng": lng, "lat": lat, "zoom": 18, "source": "Scene",
                                                    "points_per_side": 8})
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["samgis"]["window"]["level"] == 1 and fc["samgis"]["window"]["crs"] == "EPSG:4326"
    geoms = [shapely.geometry.shape(f["geometry"]) for f in fc["features"]]
    roof = scene.shape("roof").lnglat()
    assert max(iou(g, roof) for g in geoms) >= 0.97
    valid = scene.data_area_lnglat(1400, 100, 2460, 924)
    assert all(g.difference(valid).area < 1e-3 * g.area for g in geoms)  # nothing in the nodata margins


def test_clicks_in_nodata_are_refused(client, rasters):
    scene = rasters["Scene"]
    r = client.post("/v1/segment", json=click("Scene", *scene.px_to_lnglat(200, 500)))  # a window of only nodata
    assert r.status_code == 422 and "no data" in r.text and "Scene" in r.text
    r = client.post("/v1/segment", json=click("Scene", *scene.px_to_lnglat(1300, 500)))  # data nearby, not here
    assert r.status_code == 422 and "nodata pixel" in r.text
    r = client.post("/v1/segment", json=click("Scene", *scene.px_to_lnglat(-300, 500)))  # off the raster
    assert r.status_code == 422 and "outside raster source" in r.text


def test_alpha_band_marks_nodata(tmp_path, engine):
    o, r = (500000.0, 5000000.0), 0.5
    rgba = write_raster(tmp_path / "rgba.tif", crs="EPSG:32632", origin=o, res=r, width=1024, height=1024,
                        background=(90, 90, 90, 255), alpha=True,
                        shapes=[("hole", shapely.box(*_at(o, r, 0, 1024), *_at(o, r, 300, 0)), (90, 90, 90, 0)),
                                ("patch", shapely.box(*_at(o, r, 500, 700), *_at(o, r, 800, 300)), (10, 250, 10, 255))])
    settings = Settings(builtin_sources=False, cache_dir=tmp_path / "cache", rasters=[rgba.path])
    with LiveServer(create_app(settings, engine=engine)) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        r1 = c.post("/v1/segment", json=click("rgba", *rgba.px_to_lnglat(100, 500)))  # alpha 0: no data
        assert r1.status_code == 422 and "nodata pixel" in r1.text
        fc = c.post("/v1/segment", json=click("rgba", *rgba.shape("patch").inside_lnglat())).json()
        assert iou(union_geometry(fc), rgba.shape("patch").lnglat()) >= 0.97
        # the grey background region stops where alpha is 0, although the colours there are the same
        fc = c.post("/v1/segment", json=click("rgba", *rgba.px_to_lnglat(900, 900))).json()
        hole, got = rgba.shape("hole").lnglat(), union_geometry(fc)
        assert got.intersection(hole).area < 0.002 * hole.area
        expected = rgba.data_area_lnglat(0, 0, 1024, 1024).difference(hole).difference(rgba.shape("patch").lnglat())
        assert iou(got, expected) >= 0.97
        rgba.path.unlink()  # a source that became unreadable: 502 naming it, no path (cached windows still answer)
        t = mercantile.tile(*rgba.px_to_lnglat(500, 500), 18)  # display tiles always read the file
        r2 = c.get(f"/v1/tiles/rgba/{t.z}/{t.x}/{t.y}.png")
        assert r2.status_code == 502, r2.text
        assert "'rgba'" in r2.text and "unreadable" in r2.text
        assert str(tmp_path) not in r2.text


def test_a_cog_over_http_range_requests_works_like_the_local_file(rasters, engine, client, tmp_path):
    utm = rasters["Ortho"]
    cog = tmp_path / "utm_cog.tif"
    rasterio.shutil.copy(utm.path, cog, driver="COG", overview_resampling="nearest", blocksize=256)
    with RangeFileServer(tmp_path) as files:
        providers = tmp_path / "remote.json"
        providers.write_text(json.dumps({"Remote": {"raster": files.url("utm_cog.tif")}}))
        settings = Settings(providers=providers, builtin_sources=False, cache_dir=tmp_path / "cache")
        with LiveServer(create_app(settings, engine=engine)) as server, \
                httpx.Client(base_url=server.url, timeout=60) as c:
            for name, zoom in (("pond", 18), ("field", 16)):
                req = click("Remote", *utm.shape(name).inside_lnglat(), zoom=zoom)
                remote = c.post("/v1/segment", json=req).json()
                local = client.post("/v1/segment", json={**req, "source": "Ortho"}).json()
                assert remote["samgis"]["window"] == local["samgis"]["window"]
                assert iou(union_geometry(remote), utm.shape(name).lnglat()) >= 0.97
    assert files.requests > 0 and files.whole_files == 0  # range requests only, never the whole file


@pytest.mark.slow
def test_a_slow_cog_answers_504_within_the_deadline(rasters, engine, tmp_path):
    utm = rasters["Ortho"]
    cog = tmp_path / "slow_cog.tif"
    rasterio.shutil.copy(utm.path, cog, driver="COG", overview_resampling="nearest", blocksize=256)
    with RangeFileServer(tmp_path) as files:
        providers = tmp_path / "slow.json"
        providers.write_text(json.dumps({"Slow": {"raster": files.url("slow_cog.tif")}}))
        settings = Settings(providers=providers, builtin_sources=False, cache_dir=tmp_path / "cache", deadline_s=1.5)
        with LiveServer(create_app(settings, engine=engine)) as server, \
                httpx.Client(base_url=server.url, timeout=60) as c:
            files.delay_s = 6.0  # every range request now hangs well past the deadline
            t0 = time.monotonic()
            r = c.post("/v1/segment", json=click("Slow", *utm.shape("pond").inside_lnglat(), zoom=18))
            took = time.monotonic() - t0
            assert r.status_code == 504, r.text
            assert "deadline" in r.json()["detail"] and str(tmp_path) not in r.text
            assert took < 5.0, took
            tile = mercantile.tile(*utm.shape("field").inside_lnglat(), 17)
            r = c.get(f"/v1/tiles/Slow/{tile.z}/{tile.x}/{tile.y}.png")
            assert r.status_code == 504 and "'Slow'" in r.text and "tile 17/" in r.json()["detail"]
            assert c.get("/health").status_code == 200
            files.delay_s = 0.0


def test_export_in_the_rasters_crs(client, rasters, tmp_path):
    import geopandas as gpd

    utm, laea = rasters["Ortho"], rasters["Laea"]
    fc = client.post("/v1/segment", json=click("Ortho", *utm.shape("pond").inside_lnglat())).json()
    for crs, expected_epsg, truth in (("source", 32632, utm.shape("pond").polygon),
                                      ("EPSG:32632", 32632, utm.shape("pond").polygon), (None, 4326, None)):
        params = {"format": "gpkg", "name": "pond"} | ({"crs": crs} if crs else {})
        r = client.post("/v1/export", params=params, json=fc)
        assert r.status_code == 200, r.text
        (tmp_path / "pond.gpkg").write_bytes(r.content)
        frame = gpd.read_file(tmp_path / "pond.gpkg", engine="pyogrio")
        assert frame.crs.to_epsg() == expected_epsg
        if truth is not None:  # in metres of the raster's grid, where the shape was drawn
            assert iou(frame.geometry.union_all(), truth) >= 0.97
    fc = client.post("/v1/segment", json=click("Laea", *laea.shape("wood").inside_lnglat(), zoom=17)).json()
    r = client.post("/v1/export", params={"format": "gpkg", "crs": "source"}, json=fc)
    (tmp_path / "wood.gpkg").write_bytes(r.content)
    frame = gpd.read_file(tmp_path / "wood.gpkg", engine="pyogrio")
    assert frame.crs.to_epsg() == 3035 and iou(frame.geometry.union_all(), laea.shape("wood").polygon) >= 0.97
    for crs in ("EPSG:999999", "IAU_2015:30100"):  # unknown; the Moon's
        bad = client.post("/v1/export", params={"format": "gpkg", "crs": crs}, json=fc)
        assert bad.status_code == 422 and '"field":"crs"' in bad.text.replace(" ", ""), bad.text
    bad = client.post("/v1/export", params={"format": "geojson", "crs": "source"}, json=fc)
    assert bad.status_code == 422 and "RFC 7946" in bad.text


def test_display_tiles_show_the_raster(client, rasters):
    lng, lat = rasters["Ortho"].shape("pond").inside_lnglat()
    t = mercantile.tile(lng, lat, 18)
    r = client.get(f"/v1/tiles/Ortho/{t.z}/{t.x}/{t.y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(r.content)))
    assert rgba.shape == (256, 256, 4)
    assert ((rgba[..., :3] == (30, 30, 200)).all(axis=-1) & (rgba[..., 3] == 255)).sum() > 1000
    far = mercantile.tile(lng + 1, lat, 18)  # nothing there: transparent
    r = client.get(f"/v1/tiles/Ortho/{far.z}/{far.x}/{far.y}.png")
    assert r.status_code == 200 and np.asarray(Image.open(io.BytesIO(r.content)))[..., 3].max() == 0


def test_sources_list_raster_sources_without_paths(client):
    sources = {s["id"]: s for s in client.get("/v1/sources").json()["sources"]}
    assert sources["Ortho"]["kind"] == "raster" and sources["Ortho"]["attribution"] == "test ortho"
    assert "utm.tif" not in json.dumps(sources)


def test_raster_sources_give_their_extent_in_lnglat(client, rasters):
    """`bounds` [west, south, east, north] in degrees encloses the raster's corners, tightly (a map zooms to it)."""
    sources = {s["id"]: s for s in client.get("/v1/sources").json()["sources"]}
    for sid in ("Ortho", "Laea", "Scene"):
        r = rasters[sid]
        w, s, e, n = sources[sid]["bounds"]
        area = r.data_area_lnglat(0, 0, r.width, r.height)
        aw, as_, ae, an = area.bounds
        tol = 1e-6
        assert w <= aw + tol and s <= as_ + tol and e >= ae - tol and n >= an - tol, (sid, sources[sid]["bounds"])
        assert max(aw - w, as_ - s, e - ae, n - an) < 0.01 * max(ae - aw, an - as_), sid


def test_readers_give_their_footprint_in_lnglat(rasters):
    """A raster reader's footprint is its extent (half a native px in): every vertex lies on the raster when taken
    back to native px, and it covers all but that half pixel of the raster. Tile readers: the Web Mercator map."""
    from samgis.geo.readers import open_reader
    from samgis.geo.readers.raster import _transformer
    from samgis.geo.sources import TileSource
    from samgis.geo.tiles import MAX_LAT

    registry = SourceRegistry.from_config(rasters["providers"], builtins=False)
    for sid in ("Ortho", "Laea", "Scene"):
        r = rasters[sid]
        reader = open_reader(registry.get(sid), fetcher=None)
        fp = reader.footprint_lnglat()
        assert fp.is_valid and fp.exterior.is_ccw and reader.footprint_lnglat() is fp  # computed once
        lng, lat = shapely.get_coordinates(fp).T
        x, y = _transformer(4326, reader.source.crs_wkt).transform(lng, lat)
        cols, rows = ~reader.transform @ (np.asarray(x), np.asarray(y))
        assert cols.min() > 0.49 and rows.min() > 0.49 and cols.max() < r.width - 0.49 and rows.max() < r.height - 0.49
        inner = r.data_area_lnglat(1, 1, r.width - 1, r.height - 1)
        assert fp.covers(inner.buffer(-1e-9)) and not fp.contains(shapely.Point(*r.px_to_lnglat(-0.2, -0.2)))
        assert fp.area > 0.99 * r.data_area_lnglat(0, 0, r.width, r.height).area
    tiles = open_reader(TileSource("t", "xyz", url="https://t.example/{z}/{x}/{y}.png"), fetcher=None)
    assert tiles.footprint_lnglat().bounds == (-180.0, -MAX_LAT, 180.0, MAX_LAT)


@pytest.mark.parametrize("entry,needle", [
    ({"raster": "nowhere.tif"}, "does not exist"),
    ({"raster": "scene.tif", "bands": [1, 2, 5]}, "band 5 is out of range"),
    ({"raster": "plain.tif"}, "has no CRS"),
    ({"raster": "scene.tif", "rescale": [[0, 1]]}, "'rescale'"),
])
def test_bad_raster_configuration_fails_at_start_up_in_one_line(rasters, tmp_path, entry, needle):
    plain = rasters["tmp"] / "plain.tif"
    if not plain.exists():
        write_raster(plain, crs="EPSG:32632", origin=(0, 0), res=1, width=64, height=64, background=(1, 2, 3),
                     shapes=[], georeferenced=False)
    providers = rasters["tmp"] / f"bad-{tmp_path.name}.json"
    providers.write_text(json.dumps({"Broken": entry}))
    with pytest.raises(ValueError) as e:
        SourceRegistry.from_config(providers, builtins=False)
    message = str(e.value)
    assert "'Broken'" in message and needle in message and "\n" not in message


def test_serve_with_a_bad_raster_exits_with_one_line(rasters, capsys):
    missing = rasters["tmp"] / "missing.tif"
    assert cli_main(["serve", "--raster", str(missing), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'missing'" in err and "does not exist" in err


def test_serve_raster_option_names_the_source_by_stem(rasters):
    registry = SourceRegistry.from_config(None, builtins=False, rasters=[rasters["Ortho"].path])
    assert registry.names() == ["utm"] and registry.get("utm").crs_wkt


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_a_20000_px_cog_serves_clicks_and_tiles_in_bounded_memory(tmp_path, engine):
    big = write_big_sparse_raster(tmp_path / "big.tif")
    settings = Settings(builtin_sources=False, cache_dir=tmp_path / "cache", rasters=[big.path],
                        cache_bytes=64 * 2**20)
    with LiveServer(create_app(settings, engine=engine)) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        c.post("/v1/segment", json=click("big", *big.px_to_lnglat(500, 500)))  # warm: imports, GDAL, first reads
        before = _rss_bytes()
        for shp in big.shapes:  # segmented at native resolution, found where they are
            fc = c.post("/v1/segment", json=click("big", *shp.inside_lnglat())).json()
            assert iou(union_geometry(fc), shp.lnglat()) >= 0.97
        answers = set()
        for k in range(40):  # clicks all over the raster, at native and overview levels; most land in nodata
            col, row = (k * 7919) % 19800 + 100, (k * 104729) % 19800 + 100
            r = c.post("/v1/segment", json=click("big", *big.px_to_lnglat(col, row), zoom=(18, 15, 13)[k % 3]))
            answers.add(r.status_code)
            assert r.status_code in (200, 422), r.text
        lng, lat = big.px_to_lnglat(10000, 10000)
        for z in range(8, 19, 2):  # display tiles from the whole raster down to native px
            t = mercantile.tile(lng, lat, z)
            assert c.get(f"/v1/tiles/big/{t.z}/{t.x}/{t.y}.png").status_code == 200
        grown = _rss_bytes() - before
    assert 422 in answers
    assert grown < 500 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"


def test_auto_stretch_of_a_wide_raster_without_overviews_samples_windows(tmp_path):
    from samgis.geo.readers.raster import RasterReader, raster_source

    o, r = (500000.0, 5000000.0), 1.0  # 5000 px wide, no overviews: sampled, not read whole
    wide = write_raster(tmp_path / "wide.tif", crs="EPSG:32632", origin=o, res=r, width=5000, height=64,
                        dtype="uint16", background=(2000,),
                        shapes=[("low", shapely.box(*_at(o, r, 0, 64), *_at(o, r, 1000, 0)), (1000,)),
                                ("high", shapely.box(*_at(o, r, 4000, 64), *_at(o, r, 5000, 0)), (3000,))])
    reader = RasterReader(raster_source("wide", {"raster": str(wide.path)}))
    assert reader.levels == [1]
    assert reader._ranges().tolist() == [[1000.0, 3000.0]]
