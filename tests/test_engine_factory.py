"""`build_engine(settings)`: the one way to an engine; model cards; requests a model cannot serve → 422."""

from __future__ import annotations

import base64
import io
import pickle

import httpx
import numpy as np
import pytest
from PIL import Image

from api.app import create_app
from samgis.engine.backends import backend_module
from samgis.engine.factory import EngineRecipe, build_engine, engine_recipe
from samgis.engine.protocol import AmgOptions, Capabilities, Engine, Prompts
from samgis.engine.registry import ModelSpec, get_model_spec, register_model
from samgis.errors import WeightsUnavailable
from samgis.settings import Settings
from tests.conftest import TINY, textured_image
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.scene import default_scene
from tests.test_e2e_segment import click_request


def test_build_engine_loads_the_configured_model_through_its_backend(tiny_checkpoint, tmp_path):
    settings = Settings(model=TINY.model_id, checkpoint=tiny_checkpoint, device="cpu", cache_dir=tmp_path)
    recipe = engine_recipe(settings)
    assert recipe.spec == TINY and recipe.weights == str(tiny_checkpoint.resolve())
    assert pickle.loads(pickle.dumps(recipe)) == recipe  # batch processes and Ray actors get it pickled
    engine = build_engine(settings)
    assert isinstance(engine, Engine)
    card = engine.describe()
    assert (card.model_id, card.backend, card.input_size, card.resize, card.low_res_size) == (
        TINY.model_id, "sam1", 1024, "longest-side", 256)
    assert card.capabilities.as_dict() == {"points": True, "boxes": True, "mask_input": True,
                                           "multimask": True, "automatic": True, "text": False, "exemplars": False}
    assert card.embedding_version.startswith("sam-rls-")
    image = textured_image(64, 96, seed=3)
    emb = engine.embed(image)
    out = engine.decode(emb, Prompts(points=[[40, 30]], labels=[1]), multimask=True)
    assert out.masks.shape == (1, 3, 64, 96) and out.scores.shape == (1, 3)
    records = engine.generate(emb, AmgOptions(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0))
    assert records and set(records[0]) >= {"segmentation", "bbox", "area", "predicted_iou", "stability_score",
                                            "point_coords", "crop_box"}


def test_missing_weights_and_unknown_models_and_backends_are_clear(tmp_path):
    with pytest.raises(WeightsUnavailable, match="downloads are off"):
        engine_recipe(Settings(model="sam_vit_b", cache_dir=tmp_path, allow_download=False))
    with pytest.raises(KeyError, match="known models"):
        engine_recipe(Settings(model="no_such_model", cache_dir=tmp_path))
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        EngineRecipe(ModelSpec("x", backend="nope"), str(tmp_path))()
    assert backend_module("sam1").load is not None
    spec = register_model(ModelSpec("test_by_path", backend="sam1", config=TINY.config), replace=True)
    with pytest.raises(WeightsUnavailable, match="--checkpoint"):  # no files: only by path
        engine_recipe(Settings(model=spec.model_id, cache_dir=tmp_path))


def test_registry_lists_every_file_with_url_size_and_hash():
    for mid in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        spec = get_model_spec(mid)
        assert spec.backend == "sam1"
        for f in spec.public()["weights"]:
            assert f["url"].startswith("https://") and f["size_bytes"] > 0 and (f["md5"] or f["sha256"])
    for size in ("tiny", "small", "base_plus", "large"):  # Meta publishes no sizes or hashes for these
        spec = get_model_spec(f"sam2.1_hiera_{size}")
        assert spec.backend == "sam2" and spec.config.startswith("configs/sam2.1/sam2.1_hiera_")
        (f,) = spec.files
        assert f.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{size}.pt"


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_requests_needing_a_capability_the_model_lacks_are_422_naming_it(tiles, tmp_path):
    """A model without multimask / mask_input / automatic masks (e.g. an ONNX pair exported without them)."""
    engine = ColourRegionEngine(capabilities=Capabilities(mask_input=False, multimask=False, automatic=False))
    settings = tiles.settings(tmp_path)
    shape = default_scene().shapes[0]
    with LiveServer(create_app(settings, engine=engine)) as live, httpx.Client(base_url=live.url, timeout=60) as c:
        assert c.get("/v1/models").json()["loaded"]["capabilities"]["multimask"] is False
        r = c.post("/v1/segment", json=click_request(shape.polygon, 16, multimask=True))
        assert r.status_code == 422 and "multimask" in r.json()["detail"] and r.json()["field"] == "multimask"
        r = c.post("/v1/segment", json=click_request(shape.polygon, 16))
        assert r.status_code == 200
        p = shape.polygon.representative_point()
        r = c.post("/v1/segment/everything", json={"lat": p.y, "lng": p.x, "zoom": 16, "source": "Scene"})
        assert r.status_code == 422 and "automatic" in r.json()["detail"]
        image = png_b64(textured_image(32, 32))
        r = c.post("/v1/predict", json={"instances": [{"image": image}]})
        assert r.status_code == 422 and "automatic" in r.json()["detail"]
        low = {"shape": [256, 256], "dtype": "float32",
               "data": base64.b64encode(np.zeros((256, 256), np.float32).tobytes()).decode()}
        r = c.post("/v1/predict", json={"instances": [{"image": image, "points": [[3, 3]], "mask_input": low}]})
        assert r.status_code == 422 and "mask_input" in r.json()["detail"], r.text


def test_models_file_adds_an_onnx_pair_by_path(tmp_path, tiny_engine):
    """A models file names a pair's folder; `build_engine` serves it through the onnx backend."""
    import json

    from samgis.engine.backends.onnx.export import export_sam1

    pair = tmp_path / "pair"
    export_sam1(tiny_engine.model, "tiny_pair", pair)
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"my_pair": {"backend": "onnx", "path": str(pair), "description": "ours"}}))
    engine = build_engine(Settings(model="my_pair", models_file=models, cache_dir=tmp_path))
    card = engine.describe()
    assert (card.model_id, card.backend) == ("my_pair", "onnx")
    out = engine.decode(engine.embed(textured_image(48, 64)), Prompts(points=[[10, 10]], labels=[1]))
    assert out.masks.shape == (1, 1, 48, 64)
    assert build_engine(Settings(model="onnx", checkpoint=pair, cache_dir=tmp_path)).describe().backend == "onnx"
    models.write_text(json.dumps({"bad": {"backend": "onnx", "path": str(tmp_path / "missing")}}))
    with pytest.raises(ValueError, match="entry 'bad'.*does not exist"):
        engine_recipe(Settings(model="bad", models_file=models, cache_dir=tmp_path))
