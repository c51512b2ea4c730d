"""Whole-area jobs (`samgis batch AOI --everything`): a synthetic scene whose shapes cross window seams and
corners (tests/support/aoi_scene.py), served by the local tile server, segmented by the colour engine's
automatic "regions" mode and stitched into one GeoPackage."""

from __future__ import annotations

import functools
import json
import shutil

import geopandas as gpd
import pyogrio
import pytest
import shapely

from samgis.batch import JobConfig, run_batch
from samgis.batch.inputs import aoi_items
from samgis.cli.batch import add_batch_parser
from tests.support import aoi_scene as S
from tests.support.colour_engine import ColourRegionEngine, InterruptedColourEngine

REGIONS = functools.partial(ColourRegionEngine, automatic="regions")
SCENE = S.aoi_scene()
FIELDS = ["item_id", "window_count", "score", "stability_score", "area_m2", "concept", "geometry"]


@pytest.fixture(scope="module")
def server():
    from tests.support.tileserver import SceneTileServer

    with SceneTileServer(SCENE) as srv:
        yield srv


@pytest.fixture(scope="module")
def cfg(server, tmp_path_factory) -> JobConfig:
    providers = server.write_providers(tmp_path_factory.mktemp("aoi") / "providers.json")
    return JobConfig(providers=str(providers), builtin_sources=False, tile_timeout_s=5.0, tile_retries=0,
                     min_area_m2=10.0)


@pytest.fixture(scope="module")
def aoi_file(tmp_path_factory):
    """The AOI in EPSG:3857 (any CRS works), with an id; a second feature that is not a polygon."""
    path = tmp_path_factory.mktemp("aoi-in") / "aoi.gpkg"
    frame = gpd.GeoDataFrame({"name": ["district"]}, geometry=[S.aoi()], crs="EPSG:4326").to_crs(3857)
    frame.to_file(path, driver="GPKG", engine="pyogrio")
    return path


@pytest.fixture(scope="module")
def run(aoi_file, cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("aoi-out")
    summary = run_batch(aoi_file, out, REGIONS, cfg=cfg, zoom=S.Z, source="Scene", everything=True, progress=False)
    return summary, out


def test_every_shape_comes_back_once_whole_and_clipped(run):
    summary, out = run
    assert (summary.total, summary.done, summary.failed) == (1, 1, 0), summary.errors
    frame = gpd.read_file(out / "segments.gpkg")
    assert list(frame.columns) == FIELDS and frame.crs.to_epsg() == 4326
    assert set(frame.item_id) == {"district"} and frame.concept.isna().all()  # automatic masks: no concept
    want = S.expected(SCENE)
    found: dict[str, list] = {}
    background = 0
    for row in frame.itertuples():
        g = row.geometry
        p = g.representative_point()
        colour = SCENE.colour_at(p.x, p.y)
        if colour == SCENE.background:
            background += 1
            assert all(g.intersection(SCENE.shape(n).polygon).area < 1e-3 * SCENE.shape(n).polygon.area
                       for n in want)
            continue
        name = next(s.name for s in SCENE.shapes if tuple(s.rgb) == colour)
        found.setdefault(name, []).append(row)
    assert background >= 1
    assert sorted(found) == sorted(want), "missing or extra shapes (speck and outside must be absent)"
    for name, rows in found.items():
        assert len(rows) == 1, f"{name} came back {len(rows)} times"
        g, truth = rows[0].geometry, want[name]
        iou = g.intersection(truth).area / g.union(truth).area
        assert iou >= 0.95, (name, iou)
        assert g.geom_type == "Polygon", name
        assert rows[0].score == pytest.approx(0.95) and rows[0].stability_score == pytest.approx(1.0)
    assert found["river"][0].window_count == 6 and found["field"][0].window_count == 4
    assert found["building-overlap"][0].window_count == 2 and found["lake"][0].window_count == 1
    # nothing outside the AOI
    area = S.aoi().buffer(1e-9)
    assert all(area.contains(g) for g in frame.geometry)
    # the river runs past the AOI's east edge: clipped there
    assert found["river"][0].geometry.bounds[2] == pytest.approx(S.aoi().bounds[2], abs=1e-7)


def test_outputs_manifest_and_report(run):
    _, out = run
    rec = json.loads((out / "manifest" / "items.jsonl").read_text().splitlines()[-1])
    assert rec["status"] == "done" and rec["outputs"] == ["areas/district.gpkg", "report/items/district.png"]
    assert rec["timings"]["windows"] == 9 and rec["timings"]["windows_run"] == 9
    assert pyogrio.read_info(out / "areas" / "district.gpkg", layer="segments")["features"] == \
        pyogrio.read_info(out / "segments.gpkg", layer="segments")["features"] == rec["n_segments"]
    assert "district" in (out / "report.html").read_text()
    # the window files (and thumbnails) were intermediates: removed once the job finished and its GeoPackage
    # was complete
    assert not list(out.rglob("*.npz")) and not (out / "work").exists()
    # the overview: the lattice (3 x 896 + 128 = 2816 px) reduced by 4, objects outlined in magenta
    from PIL import Image
    import numpy as np

    assert rec["preview"] == "report/items/district.png"
    with Image.open(out / rec["preview"]) as im:
        assert im.size == (704, 704)
        pixels = np.asarray(im.convert("RGB"))
    magenta = np.all(pixels == (255, 0, 255), axis=-1)
    assert magenta.sum() > 1000
    # the lake's outline runs along its west edge: px 2150 from the lattice origin → column 2150 / 4
    assert magenta[300 // 4:560 // 4, 2150 // 4 - 1:2150 // 4 + 2].any(axis=1).mean() > 0.9


def test_rerun_of_a_finished_job_skips_it(run, aoi_file, cfg, tmp_path):
    _, first = run
    out = tmp_path / "again"
    shutil.copytree(first, out)
    summary = run_batch(aoi_file, out, REGIONS, cfg=cfg, zoom=S.Z, source="Scene", everything=True, progress=False)
    assert (summary.skipped, summary.processed) == (1, 0)
    a, b = gpd.read_file(first / "segments.gpkg"), gpd.read_file(out / "segments.gpkg")
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()


@pytest.mark.slow
def test_killed_mid_item_resumes_at_window_granularity(run, aoi_file, cfg, tmp_path):
    _, reference = run
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_batch(aoi_file, out, functools.partial(InterruptedColourEngine, 5), cfg=cfg, zoom=S.Z, source="Scene",
                  everything=True, progress=False, model_key="colour-regions")
    done_windows = list((out / "work").rglob("w_*.npz"))
    assert len(done_windows) == 4 and not (out / "segments.gpkg").exists()
    summary = run_batch(aoi_file, out, REGIONS, cfg=cfg, zoom=S.Z, source="Scene", everything=True, progress=False,
                        model_key="colour-regions")  # the same model as the killed run: its windows are reused
    assert summary.done == 1
    rec = json.loads((out / "manifest" / "items.jsonl").read_text().splitlines()[-1])
    assert (rec["timings"]["windows"], rec["timings"]["windows_run"]) == (9, 5)  # only the unfinished ones
    assert not (out / "work").exists()  # the item is done: its window files are gone
    a, b = gpd.read_file(reference / "segments.gpkg"), gpd.read_file(out / "segments.gpkg")
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()


@pytest.mark.slow
def test_min_area_and_overlap_change_the_output(aoi_file, cfg, tmp_path):
    kept = run_batch(aoi_file, tmp_path / "all", REGIONS, cfg=JobConfig(**{**cfg.__dict__, "min_area_m2": 0.0,
                                                                           "overlap_px": 256}),
                     zoom=S.Z, source="Scene", everything=True, progress=False)
    assert kept.done == 1
    frame = gpd.read_file(tmp_path / "all" / "segments.gpkg")
    sp = SCENE.shape(S.SPECK).polygon  # the speck comes back without --min-area-m2 (the default run drops it)
    assert sum(g.intersects(sp) and g.intersection(sp).area > 0.9 * sp.area and g.area < 2 * sp.area
               for g in frame.geometry) == 1
    river = SCENE.shape("river").polygon
    assert any(g.intersection(river).area > 0.95 * S.expected(SCENE)["river"].area for g in frame.geometry)


def test_aoi_inputs_and_problems(tmp_path):
    path = tmp_path / "areas.geojson"
    feats = [{"type": "Feature", "properties": {"zoom": 15, "source": "S"},
              "geometry": shapely.geometry.mapping(shapely.box(1, 1, 2, 2))},
             {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}},
             {"type": "Feature", "properties": {"zoom": "x"},
              "geometry": shapely.geometry.mapping(shapely.box(3, 3, 4, 4))}]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    items = aoi_items(path, source="T")
    assert [i.item_id for i in items] == ["aoi-0", "aoi-1", "aoi-2"]
    assert (items[0].zoom, items[0].source, items[0].problem) == (15, "S", None)
    assert items[0].polygon.equals(shapely.box(1, 1, 2, 2))
    assert "Polygon or MultiPolygon" in items[1].problem and "no zoom" in items[1].problem
    assert "not an integer" in items[2].problem


def test_cli_options_for_areas():
    import argparse

    p = argparse.ArgumentParser(prog="samgis")
    add_batch_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["batch", "aoi.gpkg", "-o", "out", "--everything", "--zoom", "18", "--source", "Esri",
                         "--overlap-px", "64", "--min-area-m2", "5", "--executor", "ray", "--raster", "a.tif",
                         "--cache-mb", "64"])
    assert (args.everything, args.overlap_px, args.min_area_m2, args.executor) == (True, 64, 5.0, "ray")
    assert (args.rasters, args.cache_mb) == (["a.tif"], 64)
    assert p.parse_args(["batch", "a", "-o", "o", "--engine", "ray"]).executor == "ray"  # the older name


BIG_JOB = """
import functools, json, sys
from samgis.batch import JobConfig, run_batch
from tests.support import aoi_scene as S
from tests.support.colour_engine import ColourRegionEngine
aoi, out, providers = sys.argv[1:4]
def status_kb(key):  # /proc/self/status figure (Linux), kB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
before = status_kb("VmRSS")
cfg = JobConfig(providers=providers, builtin_sources=False, tile_timeout_s=30.0, tile_retries=1)
s = run_batch(aoi, out, functools.partial(ColourRegionEngine, automatic="regions"), cfg=cfg, zoom=S.Z,
              source="Scene", everything=True, progress=False)
# peak RSS of this process image (VmHWM): ru_maxrss would also count the forked parent's (pytest's) pages
after = status_kb("VmHWM")
print(json.dumps({"done": s.done, "errors": s.errors, "seconds": s.seconds, "rss_before_kb": before,
                  "rss_after_kb": after}))
"""


@pytest.mark.slow
def test_aoi_of_100_windows_in_bounded_memory(tmp_path):
    """10 x 10 windows (~9100 px square at z 18) in a child process (the tile server stays in this one): every
    shape once and whole; the child's peak RSS over its resident size after the imports is reported and
    bounded."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.support.tileserver import SceneTileServer

    n = 10
    scene = S.big_scene(n)
    aoi = tmp_path / "big.geojson"
    gpd.GeoDataFrame({"name": ["big"]}, geometry=[S.big_aoi(n)], crs="EPSG:4326").to_file(aoi, engine="pyogrio")
    root = Path(__file__).resolve().parent.parent
    with SceneTileServer(scene) as srv:
        providers = srv.write_providers(tmp_path / "providers.json")
        proc = subprocess.run([sys.executable, "-c", BIG_JOB, str(aoi), str(tmp_path / "out"), str(providers)],
                              cwd=root, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["done"] == 1, stats["errors"]
    rec = json.loads((tmp_path / "out" / "manifest" / "items.jsonl").read_text().splitlines()[-1])
    grown_mb = (stats["rss_after_kb"] - stats["rss_before_kb"]) / 1024
    print(f"\n100-window AOI: {rec['timings']['windows']} windows in {stats['seconds']:.1f} s "
          f"({rec['timings']['windows'] / stats['seconds']:.2f} windows/s), stitch+write {rec['timings']['post']:.1f} s, "
          f"peak RSS {stats['rss_after_kb'] / 1024:.0f} MB ({grown_mb:.0f} MB over the RSS after imports)")
    assert rec["timings"]["windows"] == n * n
    assert grown_mb < 400, grown_mb
    frame = gpd.read_file(tmp_path / "out" / "segments.gpkg")
    by_colour = {tuple(s.rgb): s for s in scene.shapes}
    seen: dict[str, int] = {}
    for g in frame.geometry:
        p = g.representative_point()
        colour = scene.colour_at(p.x, p.y)
        if colour == scene.background:
            continue
        shape = by_colour[colour]
        seen[shape.name] = seen.get(shape.name, 0) + 1
        truth = shape.polygon
        assert g.intersection(truth).area / g.union(truth).area >= 0.95, shape.name
    assert seen == {s.name: 1 for s in scene.shapes}


def test_failing_area_is_recorded_and_the_others_go_on(cfg, tmp_path):
    """Two small areas (one window each): one on the erroring tile route, one fine."""
    small = S.rect(900.25, 400.25, 1200.25, 700.25)  # holds building-cut
    path = tmp_path / "two.geojson"
    gpd.GeoDataFrame({"id": ["bad", "good"], "source": ["SceneError", "Scene"]}, geometry=[small, small],
                     crs="EPSG:4326").to_file(path, engine="pyogrio")
    s = run_batch(path, tmp_path / "out", REGIONS, cfg=cfg, zoom=S.Z, everything=True, progress=False)
    assert (s.done, s.failed) == (1, 1) and "500" in s.errors["bad"]
    frame = gpd.read_file(tmp_path / "out" / "segments.gpkg")
    assert set(frame.item_id) == {"good"}
    truth = SCENE.shape("building-cut").polygon
    assert sum(g.intersection(truth).area / g.union(truth).area >= 0.95 for g in frame.geometry) == 1


def test_reduce_takes_windows_in_any_order(run, aoi_file, cfg, tmp_path):
    """The Ray executor's reduce gets windows as model actors finish them: fed in a shuffled order (and with
    two windows finished by an "earlier run", read from their files) it writes the objects of the job."""
    import random
    from dataclasses import replace

    from samgis.batch.aoi import (AoiReduce, fetch_pixels, plan_aoi, todo_windows, window_embedding, window_file,
                                  window_output)
    from samgis.batch.inputs import load_items
    from samgis.batch.work import StageContext

    _, reference = run
    item = load_items(aoi_file, zoom=S.Z, source="Scene", everything=True)[0]
    ctx = StageContext(replace(cfg, work_dir=str(tmp_path / "work")))
    engine = REGIONS()
    try:
        plan = plan_aoi(item, ctx)
        outs = []
        for ij in plan.windows:
            image = fetch_pixels(plan, ij, ctx)
            outs.append(window_output(plan, ij, image, window_embedding(plan, ij, image, engine, ctx), engine, ctx))
    finally:
        ctx.close()
    earlier = AoiReduce(plan, cfg)
    for out in outs[3:5]:
        earlier.add(out)  # persisted, then the "run" stops
    assert todo_windows(plan) == [o.ij for o in outs if o not in outs[3:5]]
    rest = [o for o in outs if o not in outs[3:5]]
    random.Random(4).shuffle(rest)
    reduce = AoiReduce(plan, cfg)
    for out in rest:
        reduce.add(out)
        assert reduce.arrived.keys() <= {o.ij for o in rest}  # only windows ahead of their turn wait
    gpkg, count, preview = reduce.close()
    assert not reduce.arrived and all(window_file(plan, ij).is_file() for ij in plan.windows)
    a, b = gpd.read_file(reference / "segments.gpkg"), gpd.read_file(gpkg)
    assert count == len(a)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()
    assert preview == (reference / "report" / "items" / "district.png").read_bytes()
