"""`samgis batch --regularize / --smooth`: the flags reach the GeoPackage of map (point) jobs and of whole-area
(`--everything`) jobs, through the real batch machinery, the local tile server and the colour engine."""

from __future__ import annotations

import argparse
import functools
import json

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely

from samgis.batch import JobConfig, run_batch
from samgis.cli.batch import add_batch_parser, postprocess_from_args
from samgis.errors import InvalidRequest
from samgis.vector.polygons import geodesic_area_m2
from samgis.vector.postprocess import Regularize, Smooth
from tests.support import aoi_scene as S
from tests.support.batch_jobs import interior_point
from tests.support.colour_engine import ColourRegionEngine
from tests.support.geometry import interior_angles_deg, iou, turning_angles_deg
from tests.support.scene import outline_scene
from tests.support.tileserver import SceneTileServer

REGIONS = functools.partial(ColourRegionEngine, automatic="regions")
_TO_3857 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)


def metric(geom):
    return shapely.transform(geom, lambda xy: np.column_stack(_TO_3857.transform(xy[:, 0], xy[:, 1])))


def cli(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="samgis")
    add_batch_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["batch", "in.geojson", "-o", "out", *argv])


def test_cli_flags_make_the_step():
    assert postprocess_from_args(cli()) is None
    assert postprocess_from_args(cli("--regularize")) == Regularize()
    assert postprocess_from_args(cli("--smooth", "--postprocess-opts", "iterations=4,preserve_area=false")) \
        == Smooth(iterations=4, preserve_area=False)
    for argv, field in [(("--regularize", "--smooth"), "--smooth"),
                        (("--postprocess-opts", "iterations=2"), "--postprocess-opts"),
                        (("--smooth", "--postprocess-opts", "iterations=0"), "--postprocess-opts iterations"),
                        (("--regularize", "--postprocess-opts", "tolerance"), "--postprocess-opts")]:
        with pytest.raises(InvalidRequest) as e:
            postprocess_from_args(cli(*argv))
        assert e.value.field == field, argv


def providers(server, tmp_path) -> str:
    return str(server.write_providers(tmp_path / "providers.json"))


@pytest.mark.slow
def test_point_job_regularize_reaches_the_geopackage(tmp_path):
    scene = outline_scene()
    building = scene.shape("tilted-building").polygon
    job = tmp_path / "job.geojson"
    job.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(interior_point(building))},
         "properties": {"area": "b", "zoom": 18, "source": "Scene"}}]}))
    with SceneTileServer(scene) as server:
        base = dict(providers=providers(server, tmp_path), builtin_sources=False, tile_timeout_s=5.0)
        step = postprocess_from_args(cli("--regularize"))
        summary = run_batch(job, tmp_path / "out", ColourRegionEngine, cfg=JobConfig(**base, postprocess=step),
                            progress=False)
    assert (summary.done, summary.failed) == (1, 0), summary.errors
    frame = gpd.read_file(tmp_path / "out" / "segments.gpkg")
    (g,) = frame.geometry
    assert g.is_valid and g.geom_type == "Polygon"
    corners = interior_angles_deg(metric(g))
    assert len(corners) == 4 and np.all(np.abs(corners - 90) < 3), corners
    assert iou(g, building) >= 0.9
    assert frame.area_m2[0] == pytest.approx(geodesic_area_m2(g), abs=0.01)
    options = json.loads((tmp_path / "out" / "manifest" / "job.json").read_text())["options"]
    assert options["postprocess"]["library"] == "buildingregulariser"


@pytest.mark.slow
def test_aoi_job_smooth_reaches_the_geopackage_clipped(tmp_path):
    """A one-window AOI over the L-shaped lake, cutting it at its east side: the lake comes back smoothed
    (rounded corners), valid, clipped to the AOI after smoothing, its area measured on what is written."""
    scene = S.aoi_scene()
    area = S.rect(2100.25, 200.25, 2450.25, 650.25)
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame({"name": ["lake-area"]}, geometry=[area], crs="EPSG:4326").to_file(aoi, driver="GeoJSON")
    lake = scene.shape("lake").polygon.intersection(area)
    with SceneTileServer(scene) as server:
        base = dict(providers=providers(server, tmp_path), builtin_sources=False, tile_timeout_s=5.0)
        step = postprocess_from_args(cli("--smooth", "--postprocess-opts", "iterations=3"))
        outs = {}
        for name, pp in (("plain", None), ("smooth", step)):
            summary = run_batch(aoi, tmp_path / name, REGIONS, cfg=JobConfig(**base, postprocess=pp), zoom=S.Z,
                                source="Scene", everything=True, progress=False)
            assert (summary.done, summary.failed) == (1, 0), summary.errors
            outs[name] = gpd.read_file(tmp_path / name / "segments.gpkg")
    found = {}
    for name, frame in outs.items():
        rows = [r for r in frame.itertuples() if iou(r.geometry, lake) > 0.9]
        assert len(rows) == 1, name
        found[name] = rows[0]
        for r in frame.itertuples():
            assert r.geometry.is_valid
            assert area.buffer(1e-9).contains(r.geometry)  # clipped to the AOI
            assert r.area_m2 == pytest.approx(geodesic_area_m2(r.geometry), abs=0.01)
    plain, smooth = found["plain"].geometry, found["smooth"].geometry
    assert len(plain.exterior.coords) <= 8  # the clipped L: right angles only
    assert len(smooth.exterior.coords) > len(plain.exterior.coords)
    assert np.sum(np.abs(interior_angles_deg(metric(smooth)) - 90) < 1) < np.sum(
        np.abs(interior_angles_deg(metric(plain)) - 90) < 1)
    assert turning_angles_deg(metric(smooth)).min() < 30  # corners rounded into small turns
    assert iou(smooth, lake) >= 0.95 and smooth.area == pytest.approx(lake.area, rel=0.03)
    options = json.loads((tmp_path / "smooth" / "manifest" / "job.json").read_text())["options"]
    assert options["postprocess"] == {"smooth": {"iterations": 3, "tolerance_px": 0.1, "preserve_area": True},
                                      "library": "smoothify"}
    assert "postprocess" not in json.loads((tmp_path / "plain" / "manifest" / "job.json").read_text())["options"]
