"""SAM 2.1 backend vs the `sam2` package's own `SAM2ImagePredictor` / `SAM2AutomaticMaskGenerator`, on random
weights of the real architectures built by the package's `build_sam2` (no checkpoint, no network)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sam2.sam2_image_predictor import SAM2ImagePredictor

from samgis.engine.backends.sam2 import MODELS, Sam2Engine, Sam2Features, build_model, load, load_engine
from samgis.engine.protocol import AmgOptions, Embedding, Engine, Prompts
from samgis.engine.threads import is_torch_thread
from tests.conftest import textured_image
from tests.support.amg_records import assert_sam1_form, assert_same_records


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class Case:
    """A random-weight model with our engine and the package's predictor on one image."""

    def __init__(self, model_id: str, image: np.ndarray, seed: int):
        torch.manual_seed(seed)
        self.model = build_model(MODELS[model_id].config)
        self.engine = Sam2Engine(self.model, model_id, device="cpu")
        self.image = image
        self.encoder_threads = []  # (on the torch thread?, thread name) of each encoder pass
        hook = self.model.image_encoder.trunk.patch_embed.register_forward_pre_hook(
            lambda *_: self.encoder_threads.append((is_torch_thread(), threading.current_thread().name)))
        try:
            self.embedding = self.engine.embed(image)
        finally:
            hook.remove()
        self.predictor = SAM2ImagePredictor(self.model)
        self.predictor.set_image(image)


@pytest.fixture(scope="module")
def tiny() -> Case:
    return Case("sam2.1_hiera_tiny", textured_image(600, 800, seed=3), seed=0)


def prompt_cases(h: int, w: int):
    """(name, predictor kwargs, our Prompts) in image px: points, box, points + box."""
    pts = np.array([[0.3 * w, 0.4 * h], [0.62 * w, 0.55 * h], [0.5 * w, 0.2 * h]], np.float32)
    lab = np.array([1, 1, 0], np.int32)
    box = np.array([0.1 * w, 0.15 * h, 0.7 * w, 0.8 * h], np.float32)
    return [
        ("one point", dict(point_coords=pts[:1], point_labels=lab[:1]), Prompts(pts[:1], lab[:1])),
        ("points", dict(point_coords=pts, point_labels=lab), Prompts(pts, lab)),
        ("box", dict(box=box), Prompts(boxes=box[None])),
        ("points+box", dict(point_coords=pts, point_labels=lab, box=box), Prompts(pts, lab, box[None])),
    ]


def assert_parity(case: Case) -> None:
    h, w = case.image.shape[:2]
    checked = 0
    for name, kwargs, prompts in prompt_cases(h, w):
        for multimask in (False, True):
            ref_masks, ref_scores, ref_low = case.predictor.predict(multimask_output=multimask, **kwargs)
            res = case.engine.decode(case.embedding, prompts, multimask)
            m = 3 if multimask else 1
            assert res.masks.shape == (1, m, h, w) and res.masks.dtype == bool, name
            assert res.scores.shape == (1, m) and res.logits.shape == (1, m, 256, 256), name
            for j in range(m):
                assert iou(res.masks[0, j], ref_masks[j] > 0) >= 0.999, (name, multimask, j)
            np.testing.assert_allclose(res.scores[0], ref_scores, atol=1e-4, err_msg=name)
            np.testing.assert_allclose(res.logits[0], ref_low, atol=1e-3, err_msg=name)
            checked += int(ref_masks.any())
            # mask_input: the previous best low-res logits fed back, with the same prompts
            prev = ref_low[int(np.argmax(ref_scores))][None]
            ref2_masks, ref2_scores, _ = case.predictor.predict(mask_input=prev, multimask_output=multimask,
                                                                 **kwargs)
            res2 = case.engine.decode(case.embedding, Prompts(prompts.points, prompts.labels, prompts.boxes,
                                                              mask_input=prev), multimask)
            for j in range(m):
                assert iou(res2.masks[0, j], ref2_masks[j] > 0) >= 0.999, (name, "mask_input", multimask, j)
            np.testing.assert_allclose(res2.scores[0], ref2_scores, atol=1e-4, err_msg=name)
    assert checked >= 4, "random weights gave empty masks: the comparison would prove little"


def test_tiny_embedding_is_the_predictors(tiny):
    feats = tiny.embedding.features
    assert isinstance(feats, Sam2Features)
    assert feats.image_embed.shape == (1, 256, 64, 64)
    assert [tuple(f.shape) for f in feats.high_res_feats] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    torch.testing.assert_close(feats.image_embed, tiny.predictor._features["image_embed"], rtol=0, atol=0)
    for ours, ref in zip(feats.high_res_feats, tiny.predictor._features["high_res_feats"]):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    # features + the decoder's per-window constants (image tokens and layer 0's keys, values and queries)
    assert tiny.embedding.nbytes == 4 * (256 * 64 * 64 + 32 * 256 * 256 + 64 * 128 * 128) + tiny.embedding.aux.nbytes
    assert tiny.embedding.aux.nbytes == 4 * 64 * 64 * (256 + 3 * 128)
    assert tiny.embedding.original_size == (600, 800) and tiny.embedding.input_size == (1024, 1024)
    assert isinstance(tiny.engine, Engine)


def test_tiny_parity_non_square(tiny):
    assert_parity(tiny)


@pytest.mark.slow
def test_tiny_parity_1024_square():
    assert_parity(Case("sam2.1_hiera_tiny", textured_image(1024, 1024, seed=4), seed=5))


@pytest.mark.slow
def test_small_parity_non_square():
    assert_parity(Case("sam2.1_hiera_small", textured_image(600, 800, seed=6), seed=7))


def test_several_boxes_decode_as_one_query_each(tiny):
    h, w = tiny.image.shape[:2]
    pts, lab = np.array([[0.4 * w, 0.5 * h]], np.float32), np.array([1], np.int32)
    boxes = np.array([[0.1 * w, 0.1 * h, 0.6 * w, 0.7 * h], [0.3 * w, 0.2 * h, 0.9 * w, 0.9 * h]], np.float32)
    res = tiny.engine.decode(tiny.embedding, Prompts(pts, lab, boxes), multimask=False)
    assert res.masks.shape == (2, 1, h, w)
    for q, box in enumerate(boxes):
        ref_masks, ref_scores, _ = tiny.predictor.predict(pts, lab, box=box, multimask_output=False)
        assert iou(res.masks[q, 0], ref_masks[0] > 0) >= 0.999
        np.testing.assert_allclose(res.scores[q], ref_scores, atol=1e-4)


def test_point_batch_rows_equal_decode_rows(tiny):
    r = np.random.default_rng(8)
    h, w = tiny.embedding.original_size
    points = (r.uniform(0, 1, (5, 2, 2)) * [w, h]).astype(np.float32)
    labels = r.integers(0, 2, (5, 2)).astype(np.int32)
    for multimask in (True, False):
        low, scores = tiny.engine.decode_point_batch(tiny.embedding, points, labels, multimask)
        m = 3 if multimask else 1
        assert isinstance(low, torch.Tensor) and low.shape == (5, m, 256, 256) and low.dtype == torch.float32
        assert scores.shape == (5, m) and low.device.type == "cpu"
        for b in range(5):
            one = tiny.engine.decode(tiny.embedding, Prompts(points[b], labels[b]), multimask)
            np.testing.assert_allclose(low[b].numpy(), one.logits[0], atol=1e-4)
            np.testing.assert_allclose(scores[b].numpy(), one.scores[0], atol=1e-5)
    up = tiny.engine.upscale_logits(low, tiny.embedding)
    assert up.shape == (5, 1, h, w) and up.dtype == torch.float32


def test_threads_policy(tiny):
    seen = []
    handle = tiny.model.sam_prompt_encoder.register_forward_pre_hook(
        lambda *_: seen.append((is_torch_thread(), threading.current_thread() is threading.main_thread())))
    try:
        tiny.engine.decode(tiny.embedding, Prompts(np.array([[10.0, 20.0]]), np.array([1])))
        tiny.engine.decode_point_batch(tiny.embedding, np.zeros((2, 1, 2)), np.ones((2, 1)))
    finally:
        handle.remove()
    assert seen == [(True, False), (True, False)]
    # the encoder pass ran on a thread of its own (it ended with the pass), not on the torch thread
    assert tiny.encoder_threads == [(False, "samgis-_embed")]


def test_embedding_of_another_model_is_refused(tiny):
    other = Embedding(features=tiny.embedding.features, original_size=(600, 800), input_size=(1024, 1024),
                      model_id="sam_vit_b", nbytes=1)
    with pytest.raises(ValueError, match="sam_vit_b"):
        tiny.engine.decode(other, Prompts(np.array([[1.0, 1.0]]), np.array([1])))


def test_describe_card(tiny):
    card = tiny.engine.describe()
    assert (card.model_id, card.backend, card.device, card.dtype, card.image_size) == \
        ("sam2.1_hiera_tiny", "sam2", "cpu", "fp32", 1024)
    if hasattr(card, "capabilities"):
        fields = {"capabilities": card.capabilities.as_dict(), "embedding_version": card.embedding_version,
                  "resize": card.resize, "low_res_size": card.low_res_size, "input_size": card.input_size}
    else:  # the card before issue 9 carries them in `extra`
        fields = {k: card.extra[k] for k in ("capabilities", "embedding_version", "resize", "low_res_size",
                                             "input_size")}
    assert fields == {"capabilities": {"points": True, "boxes": True, "mask_input": True, "multimask": True,
                                       "automatic": True, "text": False, "exemplars": False},
                      "embedding_version": "sam2.1-sq1024-1/fp32", "resize": "square", "low_res_size": 256,
                      "input_size": 1024}


def test_adecode_equals_decode(tiny):
    prompts = Prompts(np.array([[300.0, 200.0]]), np.array([1]))
    a = asyncio.run(tiny.engine.adecode(tiny.embedding, prompts, True))
    b = tiny.engine.decode(tiny.embedding, prompts, True)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_models_table():
    assert set(MODELS) == {"sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus",
                           "sam2.1_hiera_large"}
    assert MODELS["sam2.1_hiera_base_plus"].config == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    assert MODELS["sam2.1_hiera_large"].url == \
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt"


# --- checkpoints ------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(tiny, tmp_path):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": tiny.model.state_dict()}, path)  # the official checkpoints' layout
    engine = load_engine("sam2.1_hiera_tiny", MODELS["sam2.1_hiera_tiny"].config, path, device="cpu")
    assert engine.describe().checkpoint == str(path)
    ours, ref = engine.model.state_dict(), tiny.model.state_dict()
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    prompts = Prompts(np.array([[200.0, 300.0]]), np.array([1]))
    a = engine.decode(tiny.embedding, prompts, True)
    b = tiny.engine.decode(tiny.embedding, prompts, True)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_mismatched_checkpoints_are_refused(tiny, tmp_path):
    path = tmp_path / "tiny_weights.pt"
    torch.save({"model": tiny.model.state_dict()}, path)
    # through the factory's entry point, by registry spec (config None: the model's own from MODELS)
    with pytest.raises(ValueError, match="tiny_weights.pt does not match sam2.1_hiera_small"):
        load(SimpleNamespace(model_id="sam2.1_hiera_small", config=None), path, device="cpu")
    bare = tmp_path / "bare_state_dict.pt"
    torch.save(tiny.model.state_dict(), bare)  # no "model" entry
    with pytest.raises(ValueError, match="bare_state_dict.pt is not a SAM 2 checkpoint"):
        load_engine("sam2.1_hiera_tiny", MODELS["sam2.1_hiera_tiny"].config, bare, device="cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt is not a readable SAM 2 checkpoint"):
        load_engine("sam2.1_hiera_tiny", MODELS["sam2.1_hiera_tiny"].config, junk, device="cpu")
    with pytest.raises(ValueError, match="names no sam2 config"):
        load(SimpleNamespace(model_id="sam_vit_b", config=None), path, device="cpu")


# --- automatic masks --------------------------------------------------------------------------------------

# Random SAM 2 weights give low-contrast logits (|x| < 0.5) and masks spanning the image: a small stability
# offset and no box NMS keep every grid point's masks, so the records are many and distinct.
AMG = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, stability_score_offset=0.05,
           box_nms_thresh=1.0)


@pytest.mark.slow
def test_generate_equals_the_packages_generator(tiny, monkeypatch):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    ours = tiny.engine.generate(tiny.embedding, AmgOptions(**AMG))
    gen = SAM2AutomaticMaskGenerator(tiny.model, output_mode="binary_mask", **AMG)
    gen.predictor = tiny.predictor  # already set to this image: keep its features instead of encoding again
    monkeypatch.setattr(tiny.predictor, "set_image", lambda image: None)
    monkeypatch.setattr(tiny.predictor, "reset_predictor", lambda: None)
    ref = gen.generate(tiny.image)
    assert len(ref) == 48 and len(ours) == len(ref)  # 16 points × 3 masks
    assert len({r["area"] for r in ref}) > 40
    assert_same_records(ours, ref)


def test_generate_records_have_sam1_form(tiny, tiny_engine):
    from segment_anything import SamAutomaticMaskGenerator

    opts = {**AMG, "points_per_side": 2}
    sam1 = SamAutomaticMaskGenerator(tiny_engine.model, output_mode="binary_mask", **opts).generate(tiny.image)
    ours = tiny.engine.generate(tiny.embedding, AmgOptions(**opts, min_mask_region_area=40))
    assert_sam1_form(ours, sam1, (600, 800))


def test_generate_with_crops_needs_the_image(tiny):
    with pytest.raises(ValueError, match="crops need the image"):
        tiny.engine.generate(tiny.embedding, AmgOptions(crop_n_layers=1))
