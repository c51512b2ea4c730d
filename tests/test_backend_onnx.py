"""The onnx backend: pairs exported from a torch SAM model decode like it; pairs lacking a capability say so."""

from __future__ import annotations

import dataclasses
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from api.errors import error_body, status_for
from samgis.cli.main import main
from samgis.engine.amg import generate_with_point_batches
from samgis.engine.backends.onnx import ManifestError, OnnxEngine, load_pair, onnx_providers
from samgis.engine.backends.onnx.engine import _high_res_nchw
from samgis.engine.backends.onnx.export import export_sam1_files, quantize_pair
from samgis.engine.backends.onnx.manifest import file_sha256, write_manifest
from samgis.engine.backends.sam1 import load_sam
from samgis.engine.factory import EngineRecipe
from samgis.engine.protocol import AmgOptions, Prompts
from samgis.engine.registry import ModelSpec
from samgis.errors import MissingCapability
from tests.conftest import TINY, textured_image
from tests.support.samexporter_pair import write_samexporter_pair
from tests.test_predict import AMG_PARAMS
from tests.test_predict_batch import assert_same_records

H, W = 300, 500  # not square: the resize, padding and crop of the masks all matter

PROMPTS = {
    "points": (Prompts(points=[[120.0, 140.0], [330.0, 210.0]], labels=[1, 0]), False),
    "box": (Prompts(boxes=[[60.0, 50.0, 280.0, 230.0]]), False),
    "points+box": (Prompts(points=[[150.0, 120.0]], labels=[1], boxes=[[60.0, 50.0, 280.0, 230.0]]), False),
    "multimask boxes": (Prompts(points=[[150.0, 120.0]], labels=[1],
                                boxes=[[60.0, 50.0, 280.0, 230.0], [10.0, 5.0, 480.0, 290.0]]), True),
    "multimask point": (Prompts(points=[[400.0, 60.0]], labels=[1]), True),
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(H, W, seed=3)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory, tiny_checkpoint):
    """The tiny random model's fp32 pair, exported once by `samgis export-onnx`."""
    out = tmp_path_factory.mktemp("onnx") / "fp32"
    assert main(["export-onnx", TINY.model_id, "--checkpoint", str(tiny_checkpoint), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def onnx_engine(pair_dir) -> OnnxEngine:
    return load_pair(pair_dir, device="cpu", threads=1)


@pytest.fixture(scope="module")
def uint8_engine(pair_dir, tmp_path_factory) -> OnnxEngine:
    out = tmp_path_factory.mktemp("onnx") / "uint8"
    quantize_pair(pair_dir, out)
    return load_pair(out, device="cpu", threads=1)


@pytest.fixture(scope="module")
def embeddings(image, onnx_engine, tiny_engine):
    return onnx_engine.embed(image), tiny_engine.embed(image)


def test_manifest_describes_the_pair(pair_dir, tiny_checkpoint):
    m = json.loads((pair_dir / "manifest.json").read_text())
    assert m["model_id"] == TINY.model_id and m["backend"] == "onnx" and m["family"] == "sam1"
    assert m["opset"] == 17 and m["quantization"] is None
    assert m["input"]["size"] == 1024 and m["input"]["resize"] == "longest_side"
    assert m["source"]["checkpoint"] == str(tiny_checkpoint)
    assert set(m["files"]) == {"encoder.onnx", "decoder.onnx"}
    for name, entry in m["files"].items():
        assert entry["size"] == (pair_dir / name).stat().st_size
        assert entry["sha256"] == file_sha256(pair_dir / name)
    assert m["capabilities"] == {"points": True, "boxes": True, "mask_input": True, "multimask": True,
                                 "automatic": True, "text": False, "exemplars": False}


def test_export_command_refuses_bad_input_before_exporting(tmp_path, tiny_checkpoint, capsys):
    assert main(["export-onnx", "no_such_model", "-o", str(tmp_path / "a")]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert main(["export-onnx", TINY.model_id, "--checkpoint", str(tmp_path / "none.pth"), "-o",
                 str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: only uint8
        main(["export-onnx", TINY.model_id, "-o", str(tmp_path / "c"), "--quantize", "int4"])
    assert not any(tmp_path.iterdir())


def test_card_capabilities_come_from_the_decoder(onnx_engine):
    card = onnx_engine.describe()
    assert card.backend == "onnx" and card.model_id == TINY.model_id and card.input_size == 1024
    assert card.device == "cpu" and card.dtype == "fp32" and card.resize == "longest-side"
    assert card.low_res_size == 256 and card.embedding_version.startswith("onnx-sam1-nchw-1024-")
    assert card.capabilities.as_dict() == {"points": True, "boxes": True, "mask_input": True, "multimask": True,
                                           "automatic": True, "text": False, "exemplars": False}
    assert card.extra["providers"] == ["CPUExecutionProvider"]
    assert onnx_engine.batched and onnx_engine.masks_per_query == 4


def test_factory_builds_the_onnx_backend(pair_dir, embeddings):
    """What `build_engine` does for a models-file entry `{"backend": "onnx"}` with `--checkpoint DIR`."""
    spec = ModelSpec(model_id="tiny_onnx", backend="onnx", config={"threads": 1})
    engine = EngineRecipe(spec, str(pair_dir), device="cpu")()
    assert isinstance(engine, OnnxEngine) and engine.model_id == "tiny_onnx"
    assert engine.describe().extra["exported_model_id"] == TINY.model_id
    with pytest.raises(ValueError, match="exported as fp32; it cannot run in fp16"):
        EngineRecipe(spec, str(pair_dir), device="cpu", precision="fp16")()


def test_embedding_matches_torch(embeddings):
    ours, ref = embeddings
    assert ours.features.shape == (1, 256, 64, 64) and ours.features.dtype == np.float32
    assert ours.input_size == ref.input_size == (614, 1024) and ours.original_size == (H, W)
    np.testing.assert_allclose(ours.features, ref.features.numpy(), atol=1e-4)


@pytest.mark.parametrize("case", list(PROMPTS))
def test_fp32_pair_decodes_like_torch(case, onnx_engine, tiny_engine, embeddings):
    prompts, multimask = PROMPTS[case]
    ours = onnx_engine.decode(embeddings[0], prompts, multimask)
    ref = tiny_engine.decode(embeddings[1], prompts, multimask)
    assert ours.masks.shape == ref.masks.shape == (prompts.n_queries, 3 if multimask else 1, H, W)
    assert ours.logits.shape == ref.logits.shape and ours.masks.dtype == bool
    assert 0.01 < ref.masks.mean() < 0.99  # a real mask, not an empty or full one
    for q in range(ours.masks.shape[0]):
        for m in range(ours.masks.shape[1]):
            assert iou(ours.masks[q, m], ref.masks[q, m]) >= 0.999
    np.testing.assert_allclose(ours.scores, ref.scores, atol=1e-4)
    np.testing.assert_allclose(ours.logits, ref.logits, atol=1e-3)


def test_fp32_pair_with_mask_input_decodes_like_torch(onnx_engine, tiny_engine, embeddings):
    first = tiny_engine.decode(embeddings[1], PROMPTS["points"][0])
    prompts = Prompts(points=[[200.0, 150.0]], labels=[1], mask_input=first.logits[0, :1])
    ours = onnx_engine.decode(embeddings[0], prompts)
    ref = tiny_engine.decode(embeddings[1], prompts)
    without = tiny_engine.decode(embeddings[1], Prompts(points=[[200.0, 150.0]], labels=[1]))
    assert not np.allclose(ref.logits, without.logits, atol=1e-2)  # the mask input changes the result
    assert iou(ours.masks[0, 0], ref.masks[0, 0]) >= 0.999
    np.testing.assert_allclose(ours.scores, ref.scores, atol=1e-4)


def test_point_batch_equals_decode(onnx_engine, embeddings):
    points = np.array([[[50.0, 40.0]], [[250.0, 150.0]], [[480.0, 290.0]], [[10.0, 200.0]], [[300.0, 20.0]]])
    low, scores = onnx_engine.decode_point_batch(embeddings[0], points, np.ones((5, 1)), multimask=True)
    assert isinstance(low, torch.Tensor) and low.shape == (5, 3, 256, 256) and scores.shape == (5, 3)
    for b in (0, 4):
        one = onnx_engine.decode(embeddings[0], Prompts(points=points[b], labels=[1]), multimask=True)
        np.testing.assert_allclose(low[b].numpy(), one.logits[0], atol=1e-4)
        np.testing.assert_allclose(scores[b].numpy(), one.scores[0], atol=1e-5)


def test_set_threads_reopens_the_sessions(onnx_engine, embeddings):
    """The ONNX engine's threads policy: a new intra-op count reopens both sessions (a session's pool is
    fixed when it opens); the same count changes nothing; decodes give the same result either way."""
    from samgis.engine.factory import set_engine_threads

    prompts = PROMPTS["points"][0]
    before, decoder = onnx_engine.decode(embeddings[0], prompts), onnx_engine.decoder
    assert set_engine_threads(onnx_engine, 2) == 1  # the fixture opened it with one thread
    try:
        assert onnx_engine.threads == 2 and onnx_engine.decoder is not decoder
        reopened = onnx_engine.decoder
        assert onnx_engine.set_threads(2) == 2 and onnx_engine.decoder is reopened
        after = onnx_engine.decode(embeddings[0], prompts)
        assert iou(after.masks[0, 0], before.masks[0, 0]) >= 0.999
        np.testing.assert_allclose(after.scores, before.scores, atol=1e-5)
    finally:
        onnx_engine.set_threads(1)
    assert onnx_engine.threads == 1
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            onnx_engine.set_threads(bad)


def test_concurrent_calls_give_the_sequential_results(onnx_engine, image, embeddings):
    cases = list(PROMPTS.values())
    alone = [onnx_engine.decode(embeddings[0], p, m) for p, m in cases]
    with ThreadPoolExecutor(4) as pool:
        emb = pool.submit(onnx_engine.embed, image)
        together = list(pool.map(lambda c: onnx_engine.decode(embeddings[0], *c), cases * 2))
        np.testing.assert_array_equal(emb.result().features, embeddings[0].features)
    for a, b in zip(alone * 2, together):
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.slow
def test_uint8_pair_reaches_an_iou_we_report(uint8_engine, tiny_engine, image, embeddings, pair_dir):
    card = uint8_engine.describe()
    assert card.dtype == "uint8" and card.extra["quantization"]["weight_type"] == "QUInt8"
    assert card.embedding_version != load_pair(pair_dir, "cpu").describe().embedding_version
    emb = uint8_engine.embed(image)
    ious = []
    for case, (prompts, multimask) in PROMPTS.items():
        ours = uint8_engine.decode(emb, prompts, multimask).masks
        ref = tiny_engine.decode(embeddings[1], prompts, multimask).masks
        ious += [iou(ours[q, m], ref[q, m]) for q in range(ref.shape[0]) for m in range(ref.shape[1])]
    print(f"\nuint8 pair vs torch (tiny random model): mean IoU {np.mean(ious):.4f}, min {np.min(ious):.4f} "
          f"over {len(ious)} masks")
    assert np.mean(ious) > 0.5  # a sanity floor only: the figure is what the test reports


@pytest.mark.slow
def test_automatic_masks_have_sam1_records(onnx_engine, tiny_engine, embeddings):
    opts = AmgOptions(**AMG_PARAMS)
    ours = onnx_engine.generate(embeddings[0], opts)
    ref = generate_with_point_batches(tiny_engine, embeddings[1], opts)
    assert len(ref) >= 3 and len(ours) == len(ref)
    assert all(set(o) == set(r) for o, r in zip(ours, ref))
    assert ours[0]["segmentation"].shape == (H, W) and ours[0]["segmentation"].dtype == bool
    assert_same_records(ours, ref)


def test_tampered_or_truncated_file_is_refused(pair_dir, tmp_path):
    copy = tmp_path / "pair"
    shutil.copytree(pair_dir, copy)
    data = bytearray((copy / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"decoder\.onnx: SHA-256 .* does not match"):
        load_pair(copy, "cpu")
    (copy / "encoder.onnx").write_bytes((pair_dir / "encoder.onnx").read_bytes()[:1000])
    with pytest.raises(ManifestError, match=r"encoder\.onnx has 1000 bytes"):
        load_pair(copy, "cpu")
    (copy / "encoder.onnx").unlink()
    with pytest.raises(ManifestError, match="missing"):
        load_pair(copy, "cpu")


def decoder_variant(model, pair_dir, out, **flags):
    """A pair of `pair_dir`'s encoder and a decoder exported with `Sam1Decoder` `flags`."""
    out.mkdir()
    fields = export_sam1_files(model, out, encoder=False, **flags)
    shutil.copy(pair_dir / "encoder.onnx", out / "encoder.onnx")
    write_manifest(out, {"model_id": TINY.model_id, "backend": "onnx", **fields, "quantization": None})


@pytest.mark.slow
def test_pairs_without_a_capability_refuse_it_with_422(tiny_checkpoint, pair_dir, tmp_path):
    model = load_sam(TINY, tiny_checkpoint)
    decoder_variant(model, pair_dir, tmp_path / "nomask", with_mask_input=False)
    decoder_variant(model, pair_dir, tmp_path / "single", single_mask=True)
    no_mask, single = load_pair(tmp_path / "nomask", "cpu"), load_pair(tmp_path / "single", "cpu")
    caps = no_mask.describe().capabilities
    assert caps.mask_input is False and caps.multimask is True
    caps = single.describe().capabilities
    assert caps.mask_input is True and caps.multimask is False and caps.automatic is False
    image = textured_image(H, W, seed=3)
    emb = no_mask.embed(image)
    with pytest.raises(MissingCapability) as err:
        no_mask.decode(emb, Prompts(points=[[10.0, 10.0]], labels=[1], mask_input=np.zeros((1, 256, 256))))
    assert status_for(err.value) == 422 and "does not support mask_input" in error_body(err.value)["detail"]
    assert no_mask.decode(emb, Prompts(points=[[10.0, 10.0]], labels=[1]), multimask=True).masks.shape == (1, 3, H, W)
    emb = single.embed(image)
    for call, capability in [(lambda: single.decode(emb, Prompts(points=[[9.0, 9.0]], labels=[1]), True), "multimask"),
                             (lambda: single.generate(emb, AmgOptions(points_per_side=2)), "automatic")]:
        with pytest.raises(MissingCapability) as err:
            call()
        assert status_for(err.value) == 422 and f"does not support {capability}" in err.value.message
    assert single.decode(emb, Prompts(points=[[9.0, 9.0]], labels=[1])).masks.shape == (1, 1, H, W)


@pytest.mark.slow
def test_serves_a_samexporter_pair(tiny_checkpoint, tiny_engine, tmp_path, embeddings):
    """samexporter's format: preprocessing inside the encoder, Meta's single-mask decoder with orig_im_size."""
    write_samexporter_pair(load_sam(TINY, tiny_checkpoint), tmp_path, "tiny_vit")
    engine = load_pair(tmp_path, "cpu")
    card = engine.describe()
    assert card.model_id == "tiny_vit" and card.extra["format"] == "samexporter" and card.dtype == "fp32"
    assert engine.input_layout == "hwc" and not engine.batched and engine.has_orig_im_size
    assert card.capabilities.as_dict() == {"points": True, "boxes": True, "mask_input": True,
                                           "multimask": False, "automatic": False, "text": False, "exemplars": False}
    image = textured_image(H, W, seed=3)
    emb = engine.embed(image)
    np.testing.assert_allclose(emb.features, embeddings[1].features.numpy(), atol=1e-4)
    # With one point (and the padding point) Meta's select_masks returns the best-scored multimask output.
    prompts = Prompts(points=[[120.0, 140.0]], labels=[1])
    ours = engine.decode(emb, prompts)
    ref = tiny_engine.decode(embeddings[1], prompts, multimask=True)
    best = int(np.argmax(ref.scores[0]))
    assert iou(ours.masks[0, 0], ref.masks[0, best]) >= 0.999
    assert ours.scores[0, 0] == pytest.approx(ref.scores[0, best], abs=1e-4)
    boxes = engine.decode(emb, Prompts(boxes=[[60.0, 50.0, 280.0, 230.0], [10.0, 5.0, 480.0, 290.0]]))
    assert boxes.masks.shape == (2, 1, H, W)  # one decoder run per query: the decoder's batch axis is fixed


def test_samexporter_folder_must_hold_one_pair(tmp_path):
    (tmp_path / "a.encoder.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"exactly one \*\.decoder\.onnx"):
        load_pair(tmp_path, "cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pair(tmp_path / "nothing", "cpu")


def test_providers():
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert onnx_providers("auto")[0] == "CUDAExecutionProvider"
    else:
        assert onnx_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ValueError, match="CUDAExecutionProvider"):
            onnx_providers("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        onnx_providers("tpu")


# --- SAM 2.1 -----------------------------------------------------------------------------------------

SAM2_SMALLER = ["++model.image_encoder.trunk.stages=[1,1,2,1]", "++model.image_encoder.trunk.global_att_blocks=[3]"]
"""SAM 2.1 hiera_t with fewer Hiera blocks (one global-attention block): same decoder, a quicker export."""


@pytest.fixture(scope="module")
def sam2_pair(tmp_path_factory):
    pytest.importorskip("sam2")
    from sam2.build_sam import build_sam2

    from samgis.engine.backends.onnx.export import export_sam2

    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", mode="eval",
                       hydra_overrides_extra=SAM2_SMALLER)
    out = tmp_path_factory.mktemp("onnx") / "sam2"
    export_sam2(model, "sam2.1_test", out)
    return model, load_pair(out, "cpu", threads=1)


@pytest.mark.slow
def test_sam2_pair_decodes_like_the_sam2_predictor(sam2_pair, image):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model, engine = sam2_pair
    card = engine.describe()
    assert card.extra["family"] == "sam2" and card.resize == "square"
    assert card.capabilities.as_dict() == {"points": True, "boxes": True, "mask_input": True, "multimask": True,
                                           "automatic": False, "text": False, "exemplars": False}
    predictor = SAM2ImagePredictor(model)
    with torch.inference_mode():
        predictor.set_image(image)
    emb = engine.embed(image)
    assert emb.input_size == (1024, 1024)
    np.testing.assert_allclose(emb.features["image_embed"], predictor._features["image_embed"].numpy(), atol=1e-4)
    # our pair carries the cached-constant decoder: per-window constants in `aux`, used without a mask input
    manifest = json.loads((engine.encoder_path.parent / "manifest.json").read_text())
    assert manifest["fast_decoder"]["file"] == "decoder_fast.onnx" and engine.fast_decoder is not None
    assert set(emb.aux) == {"src", "k0", "v0", "q0", "s0", "s1"}
    assert emb.nbytes == sum(a.nbytes for a in (*emb.features.values(), *emb.aux.values()))
    # the high-res maps are kept once, in the fast decoder's layout: give them back to `decoder.onnx` as is
    assert set(emb.features) == {"image_embed"}
    nchw = _high_res_nchw(emb.aux, 64)
    for k in range(2):
        np.testing.assert_allclose(nchw[f"high_res_feats_{k}"], predictor._features["high_res_feats"][k].numpy(),
                                   atol=1e-4)
    full = dataclasses.replace(emb, aux=None, features={**emb.features, **nchw})  # through `decoder.onnx`
    cases = [([[120.0, 140.0]], [1], None), ([[120.0, 140.0], [330.0, 210.0]], [1, 0], None),
             (None, None, [60.0, 50.0, 280.0, 230.0]), ([[150.0, 120.0]], [1], [60.0, 50.0, 280.0, 230.0])]
    for points, labels, box in cases:
        for multimask in (False, True):
            prompts = Prompts(points=points if points else np.zeros((0, 2)), labels=labels or [],
                              boxes=[box] if box else np.zeros((0, 4)))
            ours = engine.decode(emb, prompts, multimask)
            with torch.inference_mode():
                masks, scores, low = predictor.predict(
                    point_coords=None if points is None else np.array(points, np.float32),
                    point_labels=None if labels is None else np.array(labels),
                    box=None if box is None else np.array(box, np.float32), multimask_output=multimask)
            assert ours.masks.shape == (1, *masks.shape) and 0.01 < masks.mean() < 0.99
            for k in range(masks.shape[0]):
                assert iou(ours.masks[0, k], masks[k] > 0) >= 0.999
            np.testing.assert_allclose(ours.scores[0], scores, atol=1e-4)
            np.testing.assert_allclose(ours.logits[0], low, atol=1e-3)
            slow = engine.decode(full, prompts, multimask)
            for k in range(masks.shape[0]):
                assert iou(ours.masks[0, k], slow.masks[0, k]) >= 0.999
            np.testing.assert_allclose(ours.scores, slow.scores, atol=1e-5)
    with torch.inference_mode():
        masks, scores, _ = predictor.predict(point_coords=np.array([[200.0, 150.0]], np.float32),
                                             point_labels=np.array([1]), mask_input=low[:1], multimask_output=False)
    ours = engine.decode(emb, Prompts(points=[[200.0, 150.0]], labels=[1], mask_input=low[:1]))
    assert iou(ours.masks[0, 0], masks[0] > 0) >= 0.999
    with pytest.raises(MissingCapability, match="does not support automatic"):
        engine.generate(emb, AmgOptions(points_per_side=2))


@pytest.mark.slow
def test_serves_a_samexporter_sam2_pair(sam2_pair, image, tmp_path):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from tests.support.samexporter_pair import write_samexporter_sam2_pair

    model, _ = sam2_pair
    write_samexporter_sam2_pair(model, tmp_path, "sam2.1_tiny")
    engine = load_pair(tmp_path, "cpu", threads=1)
    card = engine.describe()
    assert card.extra["format"] == "samexporter" and card.extra["family"] == "sam2" and card.resize == "square"
    assert card.capabilities.multimask and not card.capabilities.automatic and "single_mask" in card.extra
    predictor = SAM2ImagePredictor(model)
    with torch.inference_mode():
        predictor.set_image(image)
    emb = engine.embed(image)
    for points, labels, box in [([[120.0, 140.0]], [1], None), ([[150.0, 120.0]], [1], [60.0, 50.0, 280.0, 230.0])]:
        prompts = Prompts(points=points, labels=labels, boxes=[box] if box else np.zeros((0, 4)))
        ours = engine.decode(emb, prompts, multimask=True)
        with torch.inference_mode():
            masks, scores, _ = predictor.predict(point_coords=np.array(points, np.float32), point_labels=np.array(labels),
                                                 box=None if box is None else np.array(box, np.float32),
                                                 multimask_output=True)
        for k in range(3):  # its logits come clamped to ±32, which can move the upscaled edge a little
            assert iou(ours.masks[0, k], masks[k] > 0) >= 0.99
        np.testing.assert_allclose(ours.scores[0], scores, atol=1e-4)
        one = engine.decode(emb, prompts)
        best = int(np.argmax(scores))
        assert one.masks.shape == (1, 1, H, W) and iou(one.masks[0, 0], masks[best] > 0) >= 0.99


@pytest.mark.slow
def test_export_onnx_command_exports_a_sam2_checkpoint(tmp_path):
    """`samgis export-onnx sam2.1_hiera_tiny --checkpoint FILE`: the official checkpoint format in, a pair out."""
    from samgis.engine.backends.sam2 import build_model
    from samgis.engine.registry import get_model_spec
    from samgis.engine.threads import in_fresh_thread

    torch.manual_seed(1)
    model = in_fresh_thread(build_model, get_model_spec("sam2.1_hiera_tiny").config)
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    out = tmp_path / "pair"
    assert main(["export-onnx", "sam2.1_hiera_tiny", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_id"] == "sam2.1_hiera_tiny" and manifest["family"] == "sam2"
    engine = load_pair(out, "cpu")
    result = engine.decode(engine.embed(textured_image(64, 80)), Prompts(points=[[30, 20]], labels=[1]))
    assert result.masks.shape == (1, 1, 64, 80)
