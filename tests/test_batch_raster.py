"""Batch jobs on a raster source: a synthetic GeoTIFF in a projected CRS (UTM 32N, tests/support/raster.py),
read through the server's raster reader on the raster's own pixel grid (never through Web Mercator).

- an AOI (`--everything`) whose shapes cross window seams and corners, segmented by the colour engine's
  automatic "regions" mode: every shape comes back once, whole, with IoU ≥ 0.95 in lng/lat;
- a point batch (prompt features) on the same raster as a providers-file entry, one object crossing a
  window seam, one off the raster (refused);
- windows embedded once per process: a second item over the same windows hits the embedding cache.
"""

from __future__ import annotations

import functools
import json

import geopandas as gpd
import pytest
import shapely

from samgis.batch import JobConfig, run_batch
from tests.support.colour_engine import ColourRegionEngine
from tests.support.raster import write_raster

REGIONS = functools.partial(ColourRegionEngine, automatic="regions")
ORIGIN, RES = (500000.0, 5000000.0), 0.5  # UTM 32N (~lng 9, lat 45.1), 0.5 m px
SIDE = 2800
BACKGROUND = (120, 120, 120)


def _box(c0: float, r0: float, c1: float, r1: float):
    """Raster px rectangle [c0, c1) × [r0, r1) as a polygon in the raster's CRS."""
    x0, y0 = ORIGIN[0] + c0 * RES, ORIGIN[1] - r1 * RES
    x1, y1 = ORIGIN[0] + c1 * RES, ORIGIN[1] - r0 * RES
    return shapely.box(x0, y0, x1, y1)


# px of the raster; the AOI's lattice starts near px (100, 100): windows [100, 1124), [996, 2020), [1892, 2916)
SHAPES = [
    ("river", _box(300, 1000, 2500, 1080), (20, 90, 220)),       # across two seams, whole in no window
    ("field", _box(1800, 1800, 2150, 2100), (110, 190, 40)),     # over a 4-window corner
    ("building", _box(1050, 400, 1160, 470), (200, 30, 30)),     # cut by window 0's east edge
    ("pond", shapely.Point(*_box(500, 500, 501, 501).centroid.coords[0]).buffer(60), (0, 110, 255)),
]


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raster-batch")
    return write_raster(tmp / "ortho.tif", crs="EPSG:32632", origin=ORIGIN, res=RES, width=SIDE, height=SIDE,
                        background=BACKGROUND, shapes=SHAPES)


@pytest.fixture(scope="module")
def cfg(raster) -> JobConfig:
    return JobConfig(builtin_sources=False, rasters=(str(raster.path),), min_area_m2=10.0)


def aoi_lnglat(raster):
    return raster.data_area_lnglat(100, 100, 2600, 2600)


@pytest.mark.slow
def test_aoi_over_a_projected_geotiff_gives_every_shape_once(raster, cfg, tmp_path):
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame({"name": ["ortho-area"]}, geometry=[aoi_lnglat(raster)], crs="EPSG:4326").to_crs(
        32632).to_file(aoi, driver="GPKG", engine="pyogrio")
    out = tmp_path / "out"
    summary = run_batch(aoi, out, REGIONS, cfg=cfg, zoom=18, source="ortho", everything=True, progress=False)
    assert (summary.done, summary.failed) == (1, 0), summary.errors
    frame = gpd.read_file(out / "segments.gpkg")
    assert frame.crs.to_epsg() == 4326
    rec = json.loads((out / "manifest" / "items.jsonl").read_text().splitlines()[-1])
    assert rec["timings"]["windows"] == 9
    area = aoi_lnglat(raster)
    found: dict[str, list] = {}
    for row in frame.itertuples():
        g = row.geometry
        hits = [s for s in raster.shapes if g.intersection(s.lnglat()).area > 0.5 * g.area]
        if hits:
            found.setdefault(hits[0].name, []).append(row)
    assert sorted(found) == sorted(s[0] for s in SHAPES)
    for name, rows in found.items():
        assert len(rows) == 1, f"{name} came back {len(rows)} times"
        g, truth = rows[0].geometry, shapely.intersection(raster.shape(name).lnglat(), area)
        iou = g.intersection(truth).area / g.union(truth).area
        assert iou >= 0.95, (name, iou)
    assert found["river"][0].window_count == 6  # its pieces were joined across two seams
    assert found["field"][0].window_count == 4
    # the window files were intermediates: gone once the job finished
    assert not list(out.rglob("*.npz")) and not (out / "work").exists()


def test_area_outside_the_raster_fails_naming_it(raster, cfg, tmp_path):
    lng, lat = raster.px_to_lnglat(SIDE + 5000, 100)  # 2.5 km east of the raster
    aoi = tmp_path / "far.geojson"
    gpd.GeoDataFrame({"name": ["far"]}, geometry=[shapely.box(lng, lat - 0.001, lng + 0.001, lat)],
                     crs="EPSG:4326").to_file(aoi, engine="pyogrio")
    s = run_batch(aoi, tmp_path / "out", REGIONS, cfg=cfg, zoom=18, source="ortho", everything=True, progress=False)
    assert s.failed == 1 and "outside raster source 'ortho'" in s.errors["far"]


@pytest.mark.slow
def test_point_batch_on_a_raster_source(raster, tmp_path):
    """Clicks on the raster's shapes; the river crosses window seams and comes back whole. A second area over the
    same windows reuses their embeddings (one encoder pass per window in the process)."""
    def point(name, col, row, area):
        lng, lat = raster.px_to_lnglat(col, row)
        return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lng, lat]},
                "properties": {"area": area, "label": 1}}

    feats = [point("building", 1100, 430, "a"), point("river", 700, 1040, "a"), point("pond", 500, 500, "a"),
             point("building", 1120, 440, "b"), point("nothing", SIDE + 300, 100, "off")]
    job = tmp_path / "prompts.geojson"
    job.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    engines: list = []

    def factory():
        engines.append(ColourRegionEngine())
        return engines[-1]

    # the raster as a providers-file entry this time (a path relative to the file)
    providers = raster.path.parent / "providers.json"
    providers.write_text(json.dumps({"Ortho": {"raster": raster.path.name, "attribution": "test ortho"}}))
    cfg = JobConfig(builtin_sources=False, providers=str(providers))
    out = tmp_path / "out"
    summary = run_batch(job, out, factory, cfg=cfg, zoom=18, source="Ortho", workers=1, progress=False,
                        model_key="colour")
    assert (summary.done, summary.failed) == (2, 1), summary.errors
    assert "objects[0]" in summary.errors["off"] and "outside the raster" in summary.errors["off"]
    a = gpd.read_file(out / "areas" / "a.geojson")
    truth = {s.name: s.lnglat() for s in raster.shapes}
    for name, g in zip(["building", "river", "pond"], a.sort_values("mask_index").geometry):
        iou = g.intersection(truth[name]).area / g.union(truth[name]).area
        assert iou >= 0.95, (name, iou)
    b = gpd.read_file(out / "areas" / "b.geojson")
    assert b.geometry[0].intersection(truth["building"]).area / b.geometry[0].union(truth["building"]).area >= 0.95
    # area b's window is one that area a used: its embedding comes from the process's cache
    alone = tmp_path / "a-only.geojson"
    alone.write_text(json.dumps({"type": "FeatureCollection", "features": feats[:3]}))  # area a only
    assert run_batch(alone, tmp_path / "out-a", factory, cfg=cfg, zoom=18, source="Ortho", workers=1,
                     progress=False, model_key="colour").done == 1
    both, only_a = engines
    assert both.embed_calls == only_a.embed_calls >= 3


@pytest.mark.slow
def test_cli_raster_option(raster, tmp_path, tiny_checkpoint, capsys):
    """`samgis batch AOI -o OUT --everything --source STEM --raster PATH` (a real model, one window); a raster
    that cannot be used stops the job before it starts, naming it."""
    from samgis.cli.batch import main
    from tests.conftest import TINY

    aoi = tmp_path / "small.geojson"
    gpd.GeoDataFrame({"name": ["small"]}, geometry=[raster.data_area_lnglat(400, 400, 700, 700)],
                     crs="EPSG:4326").to_file(aoi, engine="pyogrio")
    common = ["--model", TINY.model_id, "--checkpoint", str(tiny_checkpoint), "--no-progress", "--zoom", "18",
              "--everything", "--points-per-side", "2", "--source", "ortho"]
    code = main(["batch", str(aoi), "-o", str(tmp_path / "out"), "--raster", str(raster.path), *common])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "segments.gpkg").is_file() and not (tmp_path / "out" / "work").exists()
    missing = tmp_path / "missing.tif"
    code = main(["batch", str(aoi), "-o", str(tmp_path / "out2"), "--raster", str(missing), *common])
    err = capsys.readouterr().err
    assert code == 2 and "missing.tif" in err and "does not exist" in err
