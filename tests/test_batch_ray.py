"""The Ray engine on a local Ray instance started by this module: same outputs as the local engine, byte for
byte, for map areas (2 model actors, the colour-region test engine imported in the actors from tests/), an
image folder (1 actor, the tiny random-weight SAM loaded from its checkpoint in the actor) and whole areas
(windows through 2 model actors, the stitch in a reduce actor; resumed per window). Both engines run
torch with one thread: torch's CPU kernels sum in an order that depends on the thread count, and byte
equality is promised for equal counts."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest

from samgis.batch import JobConfig, run_batch
from samgis.engine.factory import EngineRecipe
from samgis.engine.protocol import AmgOptions
from tests.conftest import TINY
from tests.support.batch_jobs import write_image_job, write_map_job
from tests.support.colour_engine import ColourRegionEngine
from tests.support.scene import default_scene

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
SCENE = default_scene()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg(tiles, tmp_path_factory) -> JobConfig:
    providers = tiles.write_providers(tmp_path_factory.mktemp("ray") / "providers.json")
    return JobConfig(providers=str(providers), builtin_sources=False, tile_timeout_s=5.0, tile_retries=0,
                     max_windows_per_object=2, torch_threads=1,
                     amg=AmgOptions(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0))


@pytest.fixture(scope="module")
def factory(tiny_checkpoint) -> EngineRecipe:
    return EngineRecipe(TINY, str(tiny_checkpoint), device="cpu")


def _records(out: Path) -> dict:
    return {r["item_id"]: r for r in map(json.loads, (out / "manifest" / "items.jsonl").read_text().splitlines())}


def test_map_areas_same_geometry_from_both_engines(local_ray, cfg, tmp_path):
    job = write_map_job(SCENE, tmp_path / "prompts.geojson")
    outs = {}
    for engine, workers in (("local", 2), ("ray", 2)):
        outs[engine] = tmp_path / engine
        s = run_batch(job, outs[engine], ColourRegionEngine, cfg=cfg, engine=engine, workers=workers, zoom=16,
                      source="Scene", progress=False)
        assert (s.total, s.done, s.failed) == (4, 3, 1), s.errors
        assert "500" in s.errors["broken"]
    a, b = (gpd.read_file(outs[e] / "segments.gpkg") for e in ("local", "ray"))
    assert len(a) == 5 and a.area_m2.min() > 1000
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()
    for area in ("mid-z17", "field-z19", "north-z16"):
        assert (outs["local"] / f"areas/{area}.geojson").read_bytes() == \
            (outs["ray"] / f"areas/{area}.geojson").read_bytes()
    ray_records = _records(outs["ray"])
    assert ray_records["broken"]["status"] == "failed" and ray_records["broken"]["stage"] == "load"
    html = (outs["ray"] / "report.html").read_text()
    assert html.count("<section class='item done'>") == 3 and html.count("<section class='item failed'>") == 1
    assert "ray (2 workers)" in html


def test_image_folder_same_masks_from_both_engines(local_ray, cfg, factory, tmp_path):
    folder = write_image_job(SCENE, tmp_path / "images", broken=True)
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / engine
        s = run_batch(folder, outs[engine], factory, cfg=cfg, engine=engine, workers=1, progress=False)
        assert (s.total, s.done, s.failed) == (4, 3, 1), s.errors
    local, remote = (json.loads((outs[e] / "coco_rle.json").read_text()) for e in ("local", "ray"))
    assert local == remote and len(local["annotations"]) >= 2
    for name in ("a.png", "b.png", "c.png"):
        doc = json.loads((outs["local"] / "masks" / name / "masks.json").read_text())
        for m in doc["masks"]:
            rel = Path("masks") / name / m["png"]
            assert (outs["local"] / rel).read_bytes() == (outs["ray"] / rel).read_bytes()
    for e in outs:
        assert (outs[e] / "report.md").read_text().count("\n### ") == 4
        assert (outs[e] / "report" / "throughput.png").is_file()


def _aoi_job(tmp_path, srv):
    """The AOI of tests/support/aoi_scene.py ("district", 9 windows) and a small area on the erroring tile
    route ("broken", one window); the job's config."""
    from tests.support import aoi_scene as S

    path = tmp_path / "aoi.geojson"
    small = S.rect(900.25, 400.25, 1200.25, 700.25)
    gpd.GeoDataFrame({"name": ["district", "broken"], "source": ["Scene", "SceneError"]},
                     geometry=[S.aoi(), small], crs="EPSG:4326").to_file(path, engine="pyogrio")
    cfg = JobConfig(providers=str(srv.write_providers(tmp_path / "providers.json")), builtin_sources=False,
                    tile_timeout_s=5.0, tile_retries=0, min_area_m2=10.0)
    return path, cfg


def test_aoi_same_objects_from_both_executors(local_ray, tmp_path):
    """A whole-area job (tests/support/aoi_scene.py) on Ray with 2 model actors gives the local executor's
    GeoPackage: windows stream through the actors, one reduce actor per area stitches them. On one machine:
    the reduce writes the window files and the stitched file to OUTDIR/work. An area whose tiles fail is
    recorded as failed (at the window stage) and the other goes on."""
    import functools

    from tests.support import aoi_scene as S
    from tests.support.tileserver import SceneTileServer

    scene = S.aoi_scene()
    with SceneTileServer(scene) as srv:
        path, cfg = _aoi_job(tmp_path, srv)
        frames = []
        for executor in ("local", "ray"):
            s = run_batch(path, tmp_path / executor, functools.partial(ColourRegionEngine, automatic="regions"),
                          cfg=cfg, executor=executor, workers=2, zoom=S.Z, everything=True, progress=False)
            assert (s.done, s.failed) == (1, 1), s.errors
            assert "500" in s.errors["broken"]
            frames.append(gpd.read_file(tmp_path / executor / "segments.gpkg"))
    a, b = frames
    assert len(a) >= len(S.expected(scene))
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()
    rec = _records(tmp_path / "ray")
    assert rec["broken"]["stage"] == "infer"
    assert (rec["district"]["timings"]["windows"], rec["district"]["timings"]["windows_run"]) == (9, 9)
    assert (tmp_path / "local" / "report" / "items" / "district.png").read_bytes() == \
        (tmp_path / "ray" / "report" / "items" / "district.png").read_bytes()


def test_aoi_killed_locally_resumes_on_ray(local_ray, tmp_path):
    """Resume works per window across executors: a local run killed after 4 of 9 windows, restarted on Ray,
    computes only the 5 others and writes the objects of an uninterrupted run."""
    import functools

    from tests.support import aoi_scene as S
    from tests.support.colour_engine import InterruptedColourEngine
    from tests.support.tileserver import SceneTileServer

    with SceneTileServer(S.aoi_scene()) as srv:
        path, cfg = _aoi_job(tmp_path, srv)
        args = dict(cfg=cfg, zoom=S.Z, everything=True, progress=False, model_key="colour-regions")
        reference = run_batch(path, tmp_path / "whole", functools.partial(ColourRegionEngine, automatic="regions"),
                              workers=1, **args)
        assert reference.done == 1
        out = tmp_path / "killed"
        with pytest.raises(KeyboardInterrupt):
            run_batch(path, out, functools.partial(InterruptedColourEngine, 5), **args)
        assert len(list((out / "work").rglob("w_*.npz"))) == 4
        s = run_batch(path, out, functools.partial(ColourRegionEngine, automatic="regions"), executor="ray",
                      workers=2, **args)
        assert (s.done, s.failed) == (1, 1)
    rec = _records(out)["district"]
    assert (rec["timings"]["windows"], rec["timings"]["windows_run"]) == (9, 5)
    a, b = gpd.read_file(tmp_path / "whole" / "segments.gpkg"), gpd.read_file(out / "segments.gpkg")
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()
