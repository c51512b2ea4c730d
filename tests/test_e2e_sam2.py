"""SAM 2.1 through the whole product: a random-weight `sam2.1_hiera_tiny` checkpoint on disk, loaded by the
server's own `build_engine` (no injected engine), answering map clicks, automatic masks, plain-image
prediction (ours, KServe, Azure) over real HTTP, and a local batch job through the same factory.

Random weights make meaningless masks, so georeferencing is checked with the colour engine
(tests/test_e2e_segment.py); here every answer must have the right shape, model and cache behaviour."""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from api.app import create_app
from samgis.engine.backends.sam2 import build_model
from samgis.engine.registry import get_model_spec
from samgis.engine.threads import in_fresh_thread
from tests.conftest import textured_image
from tests.live_server import LiveServer
from tests.support.scene import default_scene
from tests.test_e2e_segment import click_request

pytestmark = pytest.mark.slow
MODEL = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory):
    """Random weights of the real SAM 2.1 tiny architecture in the official checkpoint format."""
    def build():
        torch.manual_seed(3)
        return build_model(get_model_spec(MODEL).config)

    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": in_fresh_thread(build).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def live(tiles, sam2_checkpoint, tmp_path_factory):
    settings = tiles.settings(tmp_path_factory.mktemp("e2e-sam2"), model=MODEL, checkpoint=sam2_checkpoint,
                              device="cpu", allow_download=False,
                              # generous deadlines: these check answers through the real model, not its speed
                              deadline_s=120.0, everything_deadline_s=300.0)
    with LiveServer(create_app(settings)) as server:
        deadline = time.monotonic() + 120
        while httpx.get(server.url + "/health").status_code != 200:
            assert time.monotonic() < deadline, httpx.get(server.url + "/health").text
            time.sleep(0.2)
        yield server


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=120) as c:
        yield c


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_models_route_shows_the_sam2_card(client):
    loaded = client.get("/v1/models").json()["loaded"]
    assert loaded["id"] == MODEL and loaded["backend"] == "sam2" and loaded["resize"] == "square"
    assert loaded["embedding_version"].startswith("sam2.1-") and loaded["capabilities"]["mask_input"]


def test_map_click_then_cached_click_and_automatic_masks(client):
    shape = default_scene().shapes[0]
    # one window per click: random weights give masks that run off the window, and following them (tested with
    # the colour engine in test_follow.py) would cost encoder passes beyond the deadline on a loaded CPU
    first = client.post("/v1/segment", json=click_request(shape.polygon, 16, multimask=True, window_budget=1))
    assert first.status_code == 200, first.text
    fc = first.json()
    assert fc["type"] == "FeatureCollection" and fc["samgis"]["model"] == MODEL, fc["samgis"]
    assert fc["samgis"]["cache"] == "miss"
    second = client.post("/v1/segment", json=click_request(shape.polygon, 16, window_budget=1))
    assert second.status_code == 200 and second.json()["samgis"]["cache"] == "hit"
    for f in fc["features"]:
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon") and 0 <= f["properties"]["score"] <= 1
    p = shape.polygon.representative_point()
    everything = client.post("/v1/segment/everything",
                             json={"lat": p.y, "lng": p.x, "zoom": 16, "source": "Scene", "points_per_side": 4,
                                   "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})
    assert everything.status_code == 200, everything.text
    assert everything.json()["samgis"]["cache"] == "hit"  # the click's window


def test_plain_image_routes(client):
    image = png_b64(textured_image(96, 128, seed=4))
    body = {"instances": [{"image": image, "points": [[40, 30]], "boxes": [[10, 10, 90, 70]]}],
            "parameters": {"multimask": True, "mask_format": "png"}}
    ours = client.post("/v1/predict", json=body)
    assert ours.status_code == 200, ours.text
    pred = ours.json()["predictions"][0]
    assert pred["mode"] == "prompts" and pred["model"] == MODEL and pred["image_size"] == [96, 128]
    assert len(pred["masks"]) == 1 and len(pred["masks"][0]) == 3 and len(pred["scores"][0]) == 3
    kserve = client.post("/v1/models/samgis:predict", json=body).json()["predictions"][0]
    assert kserve["cache"] == "hit"
    np.testing.assert_allclose(kserve["scores"], pred["scores"], atol=1e-5)
    azure = client.post("/score", json={"input_data": {"columns": ["image", "input_points"], "index": [0],
                                                        "data": [[image, "[[[40, 30]]]"]]}})
    assert azure.status_code == 200, azure.text
    (row,) = azure.json()
    assert len(row["predictions"]) == 1 and len(row["predictions"][0]["mask_per_prediction"]) == 3
    auto = client.post("/v1/predict", json={"instances": [{"image": image}], "parameters": {
        "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "stability_score_offset": 0.05,
        "box_nms_thresh": 1.0}})
    assert auto.status_code == 200, auto.text
    masks = auto.json()["predictions"][0]["masks"]
    assert masks and set(masks[0]) >= {"segmentation", "bbox", "area", "predicted_iou", "stability_score"}


def test_batch_job_builds_sam2_through_the_factory(tmp_path, sam2_checkpoint):
    from samgis.batch import JobConfig, run_batch
    from samgis.engine.factory import engine_recipe
    from samgis.engine.protocol import AmgOptions
    from samgis.settings import Settings

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(textured_image(64, 80, seed=i)).save(folder / f"im{i}.png")
    (folder / "prompts.json").write_text('{"im0.png": {"1": [[20, 20]], "0": [[60, 50]]}}')  # im1: automatic
    recipe = engine_recipe(Settings(model=MODEL, checkpoint=sam2_checkpoint, device="cpu", cache_dir=tmp_path))
    cfg = JobConfig(amg=AmgOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0))
    summary = run_batch(folder, tmp_path / "out", recipe, cfg=cfg, engine="local", progress=False)
    assert (summary.done, summary.failed) == (2, 0), summary.errors
