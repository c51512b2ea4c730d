"""Batch jobs with a phrase (`samgis batch … --text PHRASE`): every instance of it in every window of an AOI,
stitched across seams like automatic masks, and in the images of a folder; the colour engine's concept mode
(a colour name finds every region of that colour family) over the AOI scene of tests/support/aoi_scene.py.

AOI scene families: "blue" is the river (crosses two window seams, six windows), building-cut (cut by a
seam, whole in the next window) and the lake; "red" is building-overlap (whole in two windows) and the speck
(dropped by `min_area_m2`)."""

from __future__ import annotations

import functools
import json

import geopandas as gpd
import numpy as np
import pytest
from PIL import Image

from samgis.batch import JobConfig, run_batch
from samgis.batch.concepts import instance_records
from samgis.batch.inputs import image_items, load_items
from samgis.cli.batch import main
from samgis.engine.protocol import Capabilities, FoundInstances
from samgis.errors import MissingCapability
from samgis.imaging.masks import rle_decode
from tests.support import aoi_scene as S
from tests.support.colour_engine import ColourRegionEngine, colour_family

SCENE = S.aoi_scene()
CONCEPTS = Capabilities(text=True, exemplars=True)


def finder():
    """The job's engine factory: colour engine with concept prompts (module level: picklable)."""
    return ColourRegionEngine(capabilities=CONCEPTS, automatic="regions")


def family_score(name: str) -> float:
    return round(1.0 - colour_family(SCENE.shape(name).rgb)[1] / 442.0, 4)


def shape_of(geom) -> str | None:
    """The scene shape under a polygon's representative point (None: background)."""
    p = geom.representative_point()
    colour = SCENE.colour_at(p.x, p.y)
    return next((s.name for s in SCENE.shapes if tuple(s.rgb) == colour), None)


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


@pytest.fixture(scope="module")
def providers(tmp_path_factory):
    from tests.support.tileserver import SceneTileServer

    with SceneTileServer(SCENE) as srv:
        yield srv.write_providers(tmp_path_factory.mktemp("concepts") / "providers.json")


@pytest.mark.slow
def test_aoi_phrases_find_every_instance_once_across_seams(providers, tmp_path):
    """Two AOI features: "blues" (the whole AOI, 3 x 3 windows) names its phrase in the `text` column; "reds"
    (2 x 1 windows around building-overlap, which the second window's west edge cuts) has none and takes the
    job's `text`."""
    path = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame({"name": ["blues", "reds"], "text": ["blue", None]},
                     geometry=[S.aoi(), S.rect(1000.25, 200.25, 2100.25, 700.25)],
                     crs="EPSG:4326").to_file(path, engine="pyogrio")
    cfg = JobConfig(providers=str(providers), builtin_sources=False, tile_timeout_s=5.0, tile_retries=0,
                    min_area_m2=10.0)
    s = run_batch(path, tmp_path / "out", finder, cfg=cfg, zoom=S.Z, source="Scene", text="red", progress=False)
    assert (s.done, s.failed) == (2, 0), s.errors
    frame = gpd.read_file(tmp_path / "out" / "segments.gpkg")
    want = S.expected(SCENE)
    for item, concept, names in (("blues", "blue", {"river", "building-cut", "lake"}),
                                 ("reds", "red", {"building-overlap"})):
        rows = frame[frame.item_id == item]
        found = [shape_of(g) for g in rows.geometry]
        assert sorted(found) == sorted(names), (item, found)  # each once; no other colour, no background
        assert set(rows.concept) == {concept}
        for row, name in zip(rows.itertuples(), found):
            assert iou(row.geometry, want[name]) >= 0.95, (name, iou(row.geometry, want[name]))
            assert row.geometry.geom_type == "Polygon"
            assert row.score == pytest.approx(family_score(name), abs=1e-4)
    counts = {shape_of(r.geometry): r.window_count for r in frame.itertuples()}
    assert counts["river"] == 6 and counts["building-cut"] == 2 and counts["building-overlap"] == 2


def _image(reds: int) -> np.ndarray:
    """(60, 80, 3) uint8: beige, one green square, `reds` red squares (1 or 2)."""
    img = np.full((60, 80, 3), (235, 235, 220), np.uint8)
    img[5:25, 40:60] = (40, 170, 40)
    img[5:15, 5:20] = (200, 30, 30)
    if reds > 1:
        img[30:50, 50:70] = (225, 45, 35)
    return img


def test_image_folder_with_per_image_phrases(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, reds in (("a.png", 2), ("b.png", 2), ("c.png", 1)):
        Image.fromarray(_image(reds)).save(folder / name)
    # a: its own phrase; b: the job's (--text); c: a click (its entry wins over --text)
    (folder / "prompts.json").write_text(json.dumps({"a.png": {"text": "green"}, "c.png": {"1": [[10, 10]]}}))
    s = run_batch(folder, tmp_path / "out", finder, cfg=JobConfig(), text="red", progress=False)
    assert (s.done, s.failed) == (3, 0), s.errors
    docs = {n: json.loads((tmp_path / "out" / "masks" / n / "masks.json").read_text()) for n in ("a.png", "b.png",
                                                                                                  "c.png")}
    assert [m["concept"] for m in docs["a.png"]["masks"]] == ["green"]
    assert int(rle_decode(docs["a.png"]["masks"][0]["rle"]).sum()) == 400
    assert [m["concept"] for m in docs["b.png"]["masks"]] == ["red", "red"]
    assert sorted(m["area"] for m in docs["b.png"]["masks"]) == [150, 400]
    assert [m["score"] for m in docs["b.png"]["masks"]] == sorted((m["score"] for m in docs["b.png"]["masks"]),
                                                                  reverse=True)
    assert len(docs["c.png"]["masks"]) == 1 and "concept" not in docs["c.png"]["masks"][0]
    coco = json.loads((tmp_path / "out" / "coco_rle.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "segment"}, {"id": 2, "name": "green"}, {"id": 3, "name": "red"}]
    by_image = {im["id"]: im["file_name"] for im in coco["images"]}
    cats = [(by_image[a["image_id"]], a["category_id"], a.get("concept")) for a in coco["annotations"]]
    assert cats == [("a.png", 2, "green"), ("b.png", 3, "red"), ("b.png", 3, "red"), ("c.png", 1, None)]


def test_prompts_file_phrases_are_checked(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.fromarray(_image(1)).save(tmp_path / name)
    (tmp_path / "prompts.json").write_text(json.dumps({
        "a.png": {"text": " red "}, "b.png": {"text": "red", "1": [[1, 1]]}, "c.png": {"text": "  "},
        "d.png": {"text": 7}}))
    a, b, c, d = image_items(tmp_path)
    assert (a.text, a.problem, a.automatic) == ("red", None, False)
    assert "not both" in b.problem and b.text is None
    assert "prompts.text" in c.problem and "empty" in c.problem
    assert "prompts.text" in d.problem and "string" in d.problem


def test_aoi_phrase_inputs(tmp_path):
    path = tmp_path / "areas.geojson"
    boxes = [S.rect(0, 0, 10, 10)] * 4
    gpd.GeoDataFrame({"kind": ["roof", None, "  ", "pool"], "text": ["x", "y", "z", None]}, geometry=boxes,
                     crs="EPSG:4326").to_file(path, engine="pyogrio")
    items = load_items(path, zoom=18, source="S", text="car", text_column="kind")  # implies everything
    assert [(i.kind, i.text) for i in items] == [("aoi", "roof"), ("aoi", "car"), ("aoi", None), ("aoi", "pool")]
    assert "kind: empty" in items[2].problem and items[0].problem is None
    assert [i.text for i in load_items(path, zoom=18, source="S", everything=True)] == ["x", "y", "z", None]
    with pytest.raises(ValueError, match="no column 'class'"):
        load_items(path, zoom=18, source="S", text_column="class")
    with pytest.raises(ValueError, match="--text: empty"):
        load_items(path, text=" ")
    with pytest.raises(ValueError, match="--text-column needs a vector file"):
        load_items(tmp_path, text_column="kind")


def test_model_without_text_fails_at_start_naming_it(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_image(1)).save(folder / "a.png")
    plain = functools.partial(ColourRegionEngine, automatic="regions")  # default capabilities: no text
    with pytest.raises(MissingCapability, match=r"text: model 'test-colour' does not support text \(its capabilities"):
        run_batch(folder, tmp_path / "out", plain, cfg=JobConfig(), text="red", progress=False)
    assert not (tmp_path / "out" / "manifest" / "items.jsonl").exists()  # stopped before its first item
    # without a phrase the same model runs the folder
    assert run_batch(folder, tmp_path / "out2", plain, cfg=JobConfig(), progress=False).done == 1


def test_instance_records_have_the_generate_form():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, 1:3, 2:5] = True
    masks[2, 3, 0] = True  # masks[1] is empty: left out
    found = FoundInstances(masks=masks, scores=np.array([0.9, 0.8, 0.7], np.float32), boxes=np.zeros((3, 4)))
    recs = instance_records(found, "roof")
    assert [(r["bbox"], r["area"], r["point_coords"], r["concept"]) for r in recs] == [
        ([2, 1, 3, 2], 6, [[2.0, 1.0]], "roof"), ([0, 3, 1, 1], 1, [[0.0, 3.0]], "roof")]
    assert recs[0]["predicted_iou"] == recs[0]["stability_score"] == pytest.approx(0.9)
    assert recs[0]["crop_box"] == [0, 0, 5, 4] and recs[0]["segmentation"] is not None


@pytest.fixture
def colour_models(monkeypatch):
    """Models "test_colour_text" (text capability) and "test_colour_plain" (none) on the colour backend."""
    from samgis.engine import backends
    from samgis.engine.registry import ModelSpec, register_model
    from tests.support import colour_backend

    monkeypatch.setitem(backends.BACKENDS, colour_backend.NAME, colour_backend.__name__)
    register_model(ModelSpec("test_colour_text", backend=colour_backend.NAME, config=(("text", True),)), replace=True)
    register_model(ModelSpec("test_colour_plain", backend=colour_backend.NAME, config=()), replace=True)


def test_cli_text_and_score_threshold_end_to_end(colour_models, providers, tmp_path, capsys):
    """One window holding building-cut (blue, score 0.955), part of the river (blue, 0.928) and
    building-overlap (red): `--text blue --score-threshold 0.94` keeps building-cut alone."""
    aoi = tmp_path / "small.geojson"
    gpd.GeoDataFrame({"id": ["small"]}, geometry=[S.rect(950.25, 250.25, 1950.25, 1050.25)],
                     crs="EPSG:4326").to_file(aoi, engine="pyogrio")
    argv = ["batch", str(aoi), "-o", str(tmp_path / "out"), "--zoom", str(S.Z), "--source", "Scene",
            "--providers", str(providers), "--checkpoint", str(providers), "--no-progress", "--text", "blue"]
    assert main([*argv, "--model", "test_colour_text", "--score-threshold", "0.94"]) == 0, capsys.readouterr().err
    frame = gpd.read_file(tmp_path / "out" / "segments.gpkg")
    assert [shape_of(g) for g in frame.geometry] == ["building-cut"] and list(frame.concept) == ["blue"]
    assert iou(frame.geometry[0], SCENE.shape("building-cut").polygon) >= 0.95
    job = json.loads((tmp_path / "out" / "manifest" / "job.json").read_text())
    assert job["text"] == "blue" and job["options"]["score_threshold"] == 0.94

    capsys.readouterr()
    argv[argv.index("-o") + 1] = str(tmp_path / "plain")
    assert main([*argv, "--model", "test_colour_plain"]) == 2
    err = capsys.readouterr().err
    assert "model 'test_colour_plain' does not support text" in err, err
    assert main([*argv, "--model", "test_colour_text", "--score-threshold", "1.5"]) == 2
    assert "--score-threshold: must be a number in [0, 1]" in capsys.readouterr().err
