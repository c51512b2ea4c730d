"""Batch jobs on the local engine: map areas from the synthetic-scene tile server, image folders, resume after
a kill, failed items, outputs and the report."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from PIL import Image

from samgis.batch import JobConfig, run_batch
from samgis.engine.factory import EngineRecipe
from samgis.cli.batch import add_batch_parser, main
from samgis.batch.inputs import ImageItem, MapItem, image_items, map_items
from samgis.batch.outputs import slug
from samgis.batch.work import Grid
from samgis.engine.protocol import AmgOptions
from samgis.imaging.masks import rle_decode
from samgis.vector.polygons import geodesic_area_m2
from tests.conftest import TINY
from tests.support.batch_jobs import MAP_AREAS, write_image_job, write_map_job
from tests.support.colour_engine import ColourRegionEngine, colour_region
from tests.support.scene import default_scene

ROOT = Path(__file__).resolve().parent.parent
SCENE = default_scene()
# area, mask index → the scene shape it segments
EXPECTED = {("mid-z17", 0): "mid-building-a", ("mid-z17", 1): "mid-building-b", ("mid-z17", 2): "mid-lake",
            ("field-z19", 0): "mid-field", ("north-z16", 0): "north-field"}


@pytest.fixture(scope="module")
def cfg(tiles, tmp_path_factory) -> JobConfig:
    providers = tiles.write_providers(tmp_path_factory.mktemp("batch") / "providers.json")
    return JobConfig(providers=str(providers), builtin_sources=False, tile_timeout_s=2.0, tile_retries=0,
                     amg=AmgOptions(points_per_side=4))


@pytest.fixture(scope="module")
def map_job(tmp_path_factory) -> Path:
    return write_map_job(SCENE, tmp_path_factory.mktemp("mapjob") / "prompts.geojson")


@pytest.fixture(scope="module")
def map_run(map_job, cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("map-out")
    summary = run_batch(map_job, out, ColourRegionEngine, cfg=cfg, zoom=16, source="Scene", workers=2,
                        progress=False)
    return summary, out


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def report_sections(out: Path) -> tuple[int, int]:
    html = (out / "report.html").read_text()
    return html.count("<section class='item done'>"), html.count("<section class='item failed'>")


# --- map areas ------------------------------------------------------------------------------------------------

def test_map_job_gives_known_polygons_in_one_layer(map_run):
    summary, out = map_run
    assert (summary.total, summary.done, summary.failed, summary.skipped) == (4, 3, 1, 0)
    frame = gpd.read_file(out / "segments.gpkg")
    assert list(frame.columns) == ["item_id", "mask_index", "score", "area_m2", "geometry"]
    assert frame.crs.to_epsg() == 4326
    got = {(r.item_id, r.mask_index): r for r in frame.itertuples()}
    assert set(got) == set(EXPECTED)
    for key, name in EXPECTED.items():
        poly = SCENE.shape(name).polygon
        row = got[key]
        assert iou(row.geometry, poly) >= 0.97, (key, iou(row.geometry, poly))
        assert row.score == pytest.approx(0.95)
        assert row.area_m2 == pytest.approx(geodesic_area_m2(shapely.orient_polygons(poly)), rel=0.03)


def test_object_larger_than_a_window_is_merged_across_seams(map_run):
    """mid-field at z 19 is ~1400 px wide: no 1024 px window holds it, yet it comes back as one polygon."""
    _, out = map_run
    frame = gpd.read_file(out / "segments.gpkg")
    field = frame[frame.item_id == "field-z19"].geometry.iloc[0]
    assert field.geom_type == "Polygon"
    w, s, e, n = field.bounds
    import mercantile

    x0, y0 = mercantile.xy(w, s)
    x1, _ = mercantile.xy(e, n)
    res = 2 * 20037508.342789244 / (256 * 2**19)
    assert (x1 - x0) / res > 1100
    assert iou(field, SCENE.shape("mid-field").polygon) >= 0.99


def test_broken_area_is_recorded_and_reported(map_run):
    _, out = map_run
    lines = [json.loads(x) for x in (out / "manifest" / "items.jsonl").read_text().splitlines()]
    assert sorted(r["item_id"] for r in lines) == sorted(MAP_AREAS)
    broken = next(r for r in lines if r["item_id"] == "broken")
    assert broken["status"] == "failed" and broken["stage"] == "load" and "500" in broken["error"]
    assert report_sections(out) == (3, 1)
    md = (out / "report.md").read_text()
    assert md.count("\n### ") == 4 and "**failed** in stage load" in md
    for png in ("report/throughput.png", "report/stages.png", *(f"report/items/{slug(a)}.png"
                                                                 for a in MAP_AREAS if a != "broken")):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 100
    # the mid-z17 picture: the area mosaic, then one panel per segment (3), 4 to a row
    with Image.open(out / "report/items/mid-z17.png") as im:
        assert im.width > 3 * im.height
    done = [r for r in lines if r["status"] == "done"]
    assert all({"load", "embed", "decode", "post", "write"} <= set(r["timings"]) for r in done)


def test_rerun_skips_finished_items_and_retries_failed(map_job, map_run, cfg, tmp_path):
    _, first = map_run
    out = tmp_path / "again"
    import shutil

    shutil.copytree(first, out)
    before = (out / "areas" / "mid-z17.geojson").stat().st_mtime_ns
    summary = run_batch(map_job, out, ColourRegionEngine, cfg=cfg, zoom=16, source="Scene", progress=False)
    assert (summary.skipped, summary.processed, summary.done, summary.failed) == (3, 1, 3, 1)
    assert (out / "areas" / "mid-z17.geojson").stat().st_mtime_ns == before
    a = gpd.read_file(first / "segments.gpkg")
    b = gpd.read_file(out / "segments.gpkg")
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()
    assert report_sections(out) == (3, 1)


def test_map_inputs_grouping_and_problems(tmp_path):
    pt = lambda x, y, **p: {"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},  # noqa: E731
                            "properties": p}
    sq = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[1, 1], [2, 1], [2, 3], [1, 1]]]},
          "properties": {"area": "a"}}
    feats = [pt(0.1, 0.1, area="a", zoom=15, source="S"), pt(0.2, 0.2, area="a", label=0), sq,
             pt(0.3, 0.3, area="a", object="o", label=1), pt(0.4, 0.4, area="a", object="o", label=0),
             pt(5, 5, area="nozoom", source="S"), pt(6, 6, area="twozooms", zoom=3, source="S"),
             pt(6.1, 6, area="twozooms", zoom=4)]
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    items = {it.item_id: it for it in map_items(path)}
    a = items["a"]
    assert isinstance(a, MapItem) and (a.zoom, a.source, a.problem) == (15, "S", None)
    # named object first (o), then the loose include point and the box; the loose exclude joins all three
    assert [(o.points, o.labels, o.box) for o in a.objects] == [
        (((0.3, 0.3), (0.4, 0.4), (0.2, 0.2)), (1, 0, 0), None),
        (((0.1, 0.1), (0.2, 0.2)), (1, 0), None),
        (((0.2, 0.2),), (0,), (1.0, 1.0, 2.0, 3.0)),
    ]
    assert "no zoom" in items["nozoom"].problem
    assert "zoom differs" in items["twozooms"].problem
    assert map_items(path, zoom=12)[1].zoom == 12


def test_grid_windows_overlap_by_half_and_hold_prompts_centrally():
    g = Grid(z=10, n=4, ts=256)
    assert (g.step, g.size) == (2, 1024)
    assert g.home(5.2, 5.4) == 4  # [4, 8) holds 5.2–5.4 nearest its centre 6
    assert g.home(2.5, 5.5) == 2  # the only lattice window holding the whole span
    assert g.home(1.5, 6.5) is None  # wider than a window
    assert g.touching(1.5, 6.5) == [0, 2, 4, 6]
    assert Grid(z=1, n=4, ts=256).home(0.5, 0.6) == 0  # the world is smaller than a window


# --- image folders --------------------------------------------------------------------------------------------

def test_image_job_masks_rle_pngs_and_automatic(cfg, tmp_path):
    folder = write_image_job(SCENE, tmp_path / "images", broken=True)
    out = tmp_path / "out"
    summary = run_batch(folder, out, ColourRegionEngine, cfg=cfg, progress=False)
    assert (summary.total, summary.done, summary.failed) == (4, 3, 1)
    assert "not a decodable PNG" in summary.errors["zz-broken.png"]
    prompts = json.loads((folder / "prompts.json").read_text())
    for name in ("a.png", "c.png"):  # prompted: one mask, the colour region under the include click
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        x, y = prompts[name]["1"][0]
        expected = colour_region(image, int(np.floor(y + 0.5)), int(np.floor(x + 0.5)))
        doc = json.loads((out / "masks" / name / "masks.json").read_text())
        assert (doc["height"], doc["width"]) == image.shape[:2] and len(doc["masks"]) == 1
        m = doc["masks"][0]
        assert np.array_equal(rle_decode(m["rle"]), expected)
        png = np.asarray(Image.open(out / "masks" / name / m["png"])) > 0
        assert np.array_equal(png, expected) and m["area"] == int(expected.sum())
    auto = json.loads((out / "masks" / "b.png" / "masks.json").read_text())
    assert len(auto["masks"]) >= 2  # automatic masks: the lake and the background at least
    coco = json.loads((out / "coco_rle.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png", "c.png"]
    assert len(coco["annotations"]) == 2 + len(auto["masks"])
    assert report_sections(out) == (3, 1)
    assert not (out / "segments.gpkg").exists()
    # the same command again only retries the broken image; an option that shapes the output redoes all
    again = run_batch(folder, out, ColourRegionEngine, cfg=cfg, progress=False)
    assert (again.skipped, again.processed, again.failed) == (3, 1, 1)
    changed = run_batch(folder, out, ColourRegionEngine, cfg=JobConfig(**{**cfg.__dict__, "multimask": True}),
                        progress=False)
    assert (changed.skipped, changed.processed, changed.done) == (0, 4, 3)


def test_image_inputs_problems(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "one.png")
    (tmp_path / "prompts.json").write_text(json.dumps({"one.png": {"2": [[1, 1]]}, "gone.png": {"1": [[1, 1]]}}))
    items = image_items(tmp_path)
    assert [i.item_id for i in items] == ["one.png", "gone.png"]
    assert "label '2'" in items[0].problem and "not an image" in items[1].problem
    assert isinstance(items[0], ImageItem)


# --- command line ---------------------------------------------------------------------------------------------

def test_parser_plugs_into_samgis_subcommands():
    p = argparse.ArgumentParser(prog="samgis")
    add_batch_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["batch", "in.geojson", "-o", "out", "--engine", "ray", "--workers", "2",
                         "--ray-address", "auto", "--model", "sam_vit_b", "--device", "cpu", "--zoom", "17"])
    assert (args.executor, args.workers, args.ray_address, args.zoom, args.outdir) == ("ray", 2, "auto", 17, "out")
    assert args.func.__name__ == "run_batch_command"


def test_cli_bad_input_exits_2(tmp_path, tiny_checkpoint, capsys):
    code = main(["batch", str(tmp_path / "nothing"), "-o", str(tmp_path / "o"), "--model", TINY.model_id,
                 "--checkpoint", str(tiny_checkpoint), "--no-progress"])
    assert code == 2 and "neither a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_killed_half_way_resumes(tiny_checkpoint, tmp_path):
    """The real CLI with the tiny SAM in a child process, SIGKILLed after two items; the same command again
    finishes the rest without redoing those two."""
    folder = write_image_job(SCENE, tmp_path / "images", n_extra=3)  # 6 images
    prompts = json.loads((folder / "prompts.json").read_text())
    for k in range(3):  # prompt every image so items are quick and alike
        prompts[f"x{k:02d}.png"] = {"1": [[100.0 + 10 * k, 120.0]]}
    prompts["b.png"] = {"1": [[50.0, 60.0]]}
    (folder / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    argv = ["batch", str(folder), "-o", str(out), "--model", TINY.model_id, "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--no-progress"]
    code = f"import tests.conftest; from samgis.cli.batch import main; raise SystemExit(main({argv!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    items = out / "manifest" / "items.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if items.is_file() and len(items.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the job ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    first = {json.loads(x)["item_id"]: json.loads(x) for x in items.read_text().splitlines() if x.strip()}
    assert 2 <= len(first) < 6 and all(r["status"] == "done" for r in first.values())
    assert not (out / "report.html").exists()  # killed before the end

    assert main(argv) == 0
    records = [json.loads(x) for x in items.read_text().splitlines()]
    assert len(records) == 6  # each item recorded once: nothing finished was redone
    runs = {r["item_id"]: r["run"] for r in records}
    assert all(runs[i] == first[i]["run"] for i in first)
    assert len(set(runs.values())) == 2
    assert report_sections(out) == (6, 0)
    coco = json.loads((out / "coco_rle.json").read_text())
    assert len(coco["images"]) == 6
    for name in runs:
        doc = json.loads((out / "masks" / slug(name) / "masks.json").read_text())
        assert len(doc["masks"]) == 1
        png = np.asarray(Image.open(out / "masks" / slug(name) / doc["masks"][0]["png"])) > 0
        assert np.array_equal(png, rle_decode(doc["masks"][0]["rle"]))


def test_sam_engine_config_builds_through_the_loader(tiny_checkpoint):
    factory = EngineRecipe(TINY, str(tiny_checkpoint), device="cpu")
    engine = factory()
    assert engine.model_id == TINY.model_id and factory.model_key == f"{TINY.model_id}:{tiny_checkpoint.name}"
    import pickle

    assert pickle.loads(pickle.dumps(factory)) == factory


def test_local_engine_never_imports_ray(tmp_path):
    code = ("import sys, samgis, samgis.batch, samgis.cli.batch, samgis.batch.executors.local, samgis.batch.job; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
