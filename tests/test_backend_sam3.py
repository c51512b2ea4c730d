"""SAM 3 backend vs the `sam3` package's own `Sam3Processor` (concept prompts) and instance predictor (clicks), on
random weights of the real architecture built by the package's `build_sam3_image_model` (no checkpoint, no
network); the gated download and the server's health when access is refused, over local HTTP servers.

Cost: the model (3.4 GB) and one image's features come from the session fixture `sam3_case`
(tests/support/sam3_case.py), built once and shared with every SAM 3 module; its one ViT-L pass at 1008² (both
the package's `set_image` and our `embed`, through one memoised backbone call) dominates: ~40 s on an idle 2-core
CPU. A concept prompt goes through the detector (encoder, decoder, mask head: ~5 s) once for the processor and
our `find` together, the same way. The checkpoint test writes the model once in the official format and loads it back memory-mapped.
The package's reference path runs inside `cpu_only()` too: as published it cannot run box prompts on a
machine without CUDA (`pin_memory`), which is what that shim is for.
"""

from __future__ import annotations

import gc
import time

import httpx
import numpy as np
import pytest
import torch
from timm.layers import trunc_normal_

from samgis.engine.backends.sam3.compat import CpuOnly, FastInit, cpu_only, plain_tensor_devices, to_device
from samgis.engine.backends.sam3.engine import (INPUT_SIZE, LOW_RES_SIZE, Sam3Engine, Sam3Features, build_model,
                                                checkpoint_state, feature_dtype)
from samgis.engine.devices import load_state
from samgis.engine.protocol import ConceptPrompt, Engine, Prompts
from samgis.engine.registry import ModelSpec, WeightFile, get_model_spec, register_model
from samgis.engine.weights import resolve_weights
from samgis.errors import WeightsUnavailable
from tests.support.gated_server import GatedFileServer


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# --- compatibility layer (fast) ---------------------------------------------------------------------------


def test_cpu_only_maps_cuda_devices_and_pinning_on_this_thread_only():
    with cpu_only():
        t = torch.zeros(2, device="cuda")
        assert t.device.type == "cpu" and t.pin_memory() is t
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.zeros(1, device="cuda")  # outside the block the package's CUDA calls fail as before
    with cpu_only(False):
        pass  # a no-op context on CUDA machines


def test_fast_init_fills_with_the_asked_distribution_and_none_leaves_memory():
    def draw(seed):
        torch.manual_seed(0)
        w, n, k = torch.empty(300, 700), torch.empty(500, 500), torch.empty(256, 1024)
        with FastInit("fast", seed=seed):
            torch.nn.init.uniform_(w, -0.2, 0.2)
            torch.nn.init.normal_(n, mean=1.0, std=0.5)
            torch.nn.init.kaiming_uniform_(k, a=5 ** 0.5)  # nn.Linear's default: U(±1/sqrt(fan_in))
        return w, n, k

    w, n, k = draw(1)
    assert all(torch.equal(a, b) for a, b in zip((w, n, k), draw(1)))  # seeded
    assert not torch.equal(w, draw(2)[0])
    torch.manual_seed(0)
    assert not torch.equal(w, torch.empty(300, 700).uniform_(-0.2, 0.2))  # the bank, not torch's generator
    assert k.abs().max() <= 1 / 32 and k.std() > 0.8 / 32 / 3 ** 0.5
    big, strided = torch.empty(1200, 1000), torch.empty(1000, 30).t()  # longer than the bank; not contiguous
    with FastInit("fast", seed=3):
        torch.nn.init.normal_(big, std=2.0)
        torch.nn.init.uniform_(strided, 5.0, 6.0)
    assert abs(big.std() - 2.0) < 0.02 and abs(big.mean()) < 0.02
    assert strided.min() >= 5.0 and strided.max() <= 6.0 and strided.std() > 0.25
    assert w.min() >= -0.2 and w.max() <= 0.2 and abs(w.mean()) < 0.01 and w.std() > 0.1
    assert abs(n.mean() - 1.0) < 0.01 and abs(n.std() - 0.5) < 0.01
    assert not torch.equal(w[0], w[1])  # rows do not repeat
    x, y, z = torch.full((10,), 7.0), torch.full((10,), 7.0), torch.full((10,), 3.0)
    with FastInit("none"):
        torch.nn.init.uniform_(x)
        torch.nn.init.constant_(y, 0.0)
        trunc_normal_(x, std=0.02)  # timm's: uniform_, then erfinv_, mul_, add_, clamp_ in place
        z.mul_(2.0)  # a tensor no draw was skipped on: computed as written
    assert torch.equal(x, torch.full((10,), 7.0)) and torch.equal(y, x) and torch.equal(z, torch.full((10,), 6.0))


def test_assign_load_keeps_the_files_pages_and_converts_what_differs(tmp_path):
    """`load_state(assign=True)` (how `load_model` loads sam3.pt): the model takes the memory-mapped tensors
    themselves; a tensor of another dtype or layout is converted as the copying load would; names and shapes
    are checked as before."""
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    path = tmp_path / "w.pt"
    torch.save({"0.weight": torch.randn(4, 3).t(), "0.bias": torch.randn(3).half(),  # transposed: not contiguous
                "1.weight": torch.randn(3), "1.bias": torch.randn(3)}, path)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    expected = {k: v.float() for k, v in state.items()}
    load_state(m, dict(state), path, "tiny", assign=True)
    assert m[1].weight.data_ptr() == state["1.weight"].data_ptr()  # no copy: the file's page
    assert m[0].weight.is_contiguous() and m[0].bias.dtype is torch.float32
    assert all(torch.equal(v, expected[k]) for k, v in m.state_dict().items())
    assert all(p.requires_grad for p in m.parameters()) and not m.training
    with pytest.raises(ValueError, match=r"w\.pt does not match tiny: size mismatch for 1\.bias"):
        load_state(m, {**state, "1.bias": torch.zeros(4)}, path, "tiny", assign=True)
    with pytest.raises(ValueError, match="1 missing keys"):
        load_state(m, {k: v for k, v in state.items() if k != "1.bias"}, path, "tiny", assign=True)


def test_to_device_moves_plain_attribute_tensors():
    m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    m[0].cache = {(2, 2): torch.zeros(2)}
    m[0].coords = (torch.zeros(1), torch.ones(1))
    to_device(m, torch.device("meta"))
    assert plain_tensor_devices(m) == {"meta"} and m[0].weight.device.type == "meta"


def test_feature_dtype_is_half_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert feature_dtype(cuda, "bf16") is torch.bfloat16 and feature_dtype(cuda, "fp16") is torch.float16
    assert feature_dtype(cuda, "fp32") is torch.float32 and feature_dtype(cpu, "bf16") is torch.float32
    f = Sam3Features(concept=(torch.zeros(1, 256, 4, 4),), image_embed=torch.zeros(1, 256, 2, 2),
                     high_res_feats=(torch.zeros(1, 32, 8, 8),))
    half = f.to(torch.bfloat16)
    assert half.nbytes * 2 == f.nbytes == 4 * (256 * 16 + 256 * 4 + 32 * 64)
    assert {t.dtype for t in (*half.concept, half.image_embed, *half.high_res_feats)} == {torch.bfloat16}


# --- gated weights and the server's health (fast) ---------------------------------------------------------


def gated_spec(url: str) -> ModelSpec:
    return register_model(ModelSpec("sam3_gated_test", backend="sam3", files=(WeightFile("sam3.pt", url),),
                                    extra=dict(get_model_spec("sam3").extra)), replace=True)


def test_registry_entry_is_gated_hf():
    spec = get_model_spec("sam3")
    assert spec.backend == "sam3" and spec.files[0].url == "https://huggingface.co/facebook/sam3/resolve/main/sam3.pt"
    assert spec.extra["gated"] and spec.extra["token_env"] == "HF_TOKEN"


def test_gated_download_needs_a_granted_token(tmp_path, monkeypatch):
    with GatedFileServer(b"x" * 1000, granted_token="hf_granted") as server:
        spec = gated_spec(server.url("sam3.pt"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(WeightsUnavailable) as err:
            resolve_weights(spec, cache_dir=tmp_path, progress=False)
        msg = err.value.message
        assert "401" in msg and "no token is set in HF_TOKEN" in msg and "request access" in msg
        assert "https://huggingface.co/facebook/sam3" in msg  # the access page
        assert "--checkpoint PATH" in msg and "\n" not in msg
        monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
        with pytest.raises(WeightsUnavailable, match="HTTP 403: the token in HF_TOKEN has no access"):
            resolve_weights(spec, cache_dir=tmp_path, progress=False)
        monkeypatch.setenv("HF_TOKEN", "hf_granted")
        path = resolve_weights(spec, cache_dir=tmp_path, progress=False)
        assert path.read_bytes() == b"x" * 1000
        assert server.auth_headers == [None, "Bearer hf_not_granted", "Bearer hf_granted"]
    assert not list(tmp_path.glob("*.part"))


def test_server_stays_up_with_health_503_explaining_access(tmp_path, monkeypatch):
    from api.app import create_app
    from samgis.settings import Settings
    from tests.live_server import LiveServer

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with GatedFileServer(b"", granted_token="hf_granted") as files:
        spec = gated_spec(files.url("sam3.pt"))
        app = create_app(Settings(model=spec.model_id, cache_dir=tmp_path, tile_cache=False))
        with LiveServer(app) as server:
            deadline = time.monotonic() + 30
            while (r := httpx.get(server.url + "/health")).json()["status"] == "loading":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert r.status_code == 503 and r.json()["status"] == "error"
            detail = r.json()["detail"]
            assert "gated" in detail and "request access" in detail and "HF_TOKEN" in detail
            assert "--checkpoint PATH" in detail
            assert httpx.get(server.url + "/v1/models").status_code == 200  # the server is up


# --- parity with the package (slow: one 1008² ViT-L pass) ---------------------------------------------------


@pytest.fixture
def case(sam3_case):
    """The session's shared model, engine, processor and encoded image (tests/support/sam3_case.py)."""
    return sam3_case


def official_instances(case, run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 200 queries of the package's processor (threshold 0): masks (N, H, W), scores, boxes."""
    case.processor.reset_all_prompts(case.state)
    with cpu_only():
        st = run()
    return st["masks"][:, 0].numpy(), st["scores"].numpy(), st["boxes"].numpy()


def detector_counts(case) -> dict[str, tuple[int, int]]:
    return {name: memo.counts() for name, memo in case.detector_memos.items()}


def assert_one_detector_pass(case, before: dict[str, tuple[int, int]]) -> None:
    """The processor's prompt and our `find` went through the detector's encoder, decoder and mask head once
    between them: our call fed each of them bit-identical arguments, so it was handed the processor's output
    (`CallMemo`; the comparisons that follow then check our pre- and post-processing)."""
    assert detector_counts(case) == {name: (c + 1, r + 1) for name, (c, r) in before.items()}


def threshold_with_gap(scores: np.ndarray) -> float:
    """A threshold halfway in the widest gap between consecutive scores that keeps 3–15 instances. Random weights
    give close scores (all 200 within ~2e-3 of each other), so the gap is small: our scores must land on the
    same side of it, i.e. agree with the package's to within half of it."""
    s = np.sort(scores)[::-1]
    k = 3 + int(np.argmax(s[2:15] - s[3:16]))
    assert s[k - 1] - s[k] > 1e-6, "random scores too close together to pick a threshold"
    return float((s[k - 1] + s[k]) / 2)


def assert_same_instances(ours, ref_masks, ref_scores, ref_boxes, threshold):
    from scipy.optimize import linear_sum_assignment

    keep = ref_scores > threshold
    ref_masks, ref_scores, ref_boxes = ref_masks[keep], ref_scores[keep], ref_boxes[keep]
    assert len(ours) == len(ref_scores) >= 3
    assert np.all(np.diff(ours.scores) <= 0) and np.all(ours.scores >= threshold)  # best first
    cost = np.array([[1 - iou(a, b) for b in ref_masks] for a in ours.masks])
    rows, cols = linear_sum_assignment(cost)
    for i, j in zip(rows, cols):
        assert 1 - cost[i, j] >= 0.99, (i, j, 1 - cost[i, j])
        assert abs(ours.scores[i] - ref_scores[j]) <= 1e-3
        np.testing.assert_allclose(ours.boxes[i], ref_boxes[j], atol=1e-2)
    areas = ours.masks.reshape(len(ours), -1).mean(1)
    assert np.any((areas > 0) & (areas < 1)), "random weights gave trivial masks: the comparison would prove little"


@pytest.mark.slow
def test_embedding_is_the_processors(case):
    assert case.setup_counts == (1, 1, 0)  # same preprocessed input, one backbone pass
    f = case.embedding.features
    ref = case.state["backbone_out"]
    for ours, theirs in zip(f.concept, ref["backbone_fpn"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert [tuple(t.shape) for t in f.concept] == [(1, 256, 288, 288), (1, 256, 144, 144), (1, 256, 72, 72)]
    assert tuple(f.image_embed.shape) == (1, 256, 72, 72)
    assert [tuple(t.shape) for t in f.high_res_feats] == [(1, 32, 288, 288), (1, 64, 144, 144)]
    expected = 4 * (256 * (288**2 + 144**2 + 72**2) + 256 * 72**2 + 32 * 288**2 + 64 * 144**2)
    assert case.embedding.nbytes == expected == 132_710_400
    assert case.embedding.original_size == (300, 400) and case.embedding.input_size == (INPUT_SIZE, INPUT_SIZE)
    assert plain_tensor_devices(case.model) == {"cpu"}


@pytest.mark.slow
def test_text_prompt_parity(case):
    phrase = "solar panel"
    before = detector_counts(case)
    ref = official_instances(case, lambda: case.processor.set_text_prompt(phrase, case.state))
    thr = threshold_with_gap(ref[1])
    assert_same_instances(case.engine.find(case.embedding, ConceptPrompt(phrase), thr), *ref, thr)
    assert_one_detector_pass(case, before)


@pytest.mark.slow
def test_exemplar_box_parity(case):
    h, w = case.image.shape[:2]
    box = np.array([0.2 * w, 0.25 * h, 0.55 * w, 0.7 * h], np.float32)
    before = detector_counts(case)
    # the processor's form, normalised (cx, cy, w, h), rounded in float32 in the order our engine rounds it
    # (÷ size, then centre and size), so the detector receives the same bits (the formula itself is checked
    # independently in test_text_and_exemplars_reach_the_model_as_the_processor_sends_them)
    n = box / np.array([w, h, w, h], np.float32)
    cxcywh = [(n[0] + n[2]) / 2, (n[1] + n[3]) / 2, n[2] - n[0], n[3] - n[1]]
    ref = official_instances(case, lambda: case.processor.add_geometric_prompt(
        [float(v) for v in cxcywh], True, case.state))
    thr = threshold_with_gap(ref[1])
    ours = case.engine.find(case.embedding, ConceptPrompt(boxes=box[None], labels=[1]), thr)
    assert_same_instances(ours, *ref, thr)
    assert_one_detector_pass(case, before)


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_text_and_exemplars_reach_the_model_as_the_processor_sends_them(case, monkeypatch):
    """Phrase + a positive and a negative box: what `forward_grounding` receives (stopped there: the parity tests
    above run the model); the processor's form, one box at a time: normalised (cx, cy, w, h), bool labels."""
    h, w = case.image.shape[:2]
    boxes = np.array([[40, 30, 200, 150], [250, 100, 390, 290]], np.float32)
    seen = []

    def spy(**kwargs):
        seen.append(kwargs)
        raise _Stop

    monkeypatch.setattr(case.model, "forward_grounding", spy)
    with pytest.raises(_Stop):
        case.engine.find(case.embedding, ConceptPrompt("solar panel", boxes=boxes, labels=[1, 0]), 0.5)
    prompt, backbone_out = seen[0]["geometric_prompt"], seen[0]["backbone_out"]
    assert prompt.box_labels.tolist() == [[True], [False]]
    expected = [[(b[0] + b[2]) / 2 / w, (b[1] + b[3]) / 2 / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h] for b in boxes]
    np.testing.assert_allclose(prompt.box_embeddings[:, 0].numpy(), expected, atol=1e-6)
    with cpu_only(), torch.inference_mode():
        ref_text = case.model.backbone.forward_text(["solar panel"], device="cpu")
    torch.testing.assert_close(backbone_out["language_features"], ref_text["language_features"], rtol=0, atol=0)


@pytest.mark.slow
def test_click_and_box_decode_parity(case, monkeypatch):
    h, w = case.image.shape[:2]
    # our choice: no hole filling (on the shared model only for this test)
    monkeypatch.setattr(case.model.inst_interactive_predictor._transforms, "max_hole_area", 0.0)
    pts = np.array([[0.3 * w, 0.4 * h], [0.6 * w, 0.5 * h]], np.float32)
    lab = np.array([1, 0], np.int32)
    box = np.array([0.1 * w, 0.15 * h, 0.7 * w, 0.8 * h], np.float32)
    checked = 0
    for kwargs, prompts in [(dict(point_coords=pts, point_labels=lab), Prompts(pts, lab)),
                            (dict(box=box), Prompts(boxes=box[None])),
                            (dict(point_coords=pts, point_labels=lab, box=box), Prompts(pts, lab, box[None]))]:
        for multimask in (False, True):
            ref_masks, ref_scores, ref_low = case.model.predict_inst(case.state, multimask_output=multimask, **kwargs)
            res = case.engine.decode(case.embedding, prompts, multimask)
            m = 3 if multimask else 1
            assert res.masks.shape == (1, m, h, w) and res.logits.shape == (1, m, LOW_RES_SIZE, LOW_RES_SIZE)
            for j in range(m):
                assert iou(res.masks[0, j], ref_masks[j] > 0) >= 0.999
            np.testing.assert_allclose(res.scores[0], ref_scores, atol=1e-4)
            np.testing.assert_allclose(res.logits[0], ref_low, atol=1e-3)
            checked += int(0 < res.masks.mean() < 1)
        prev = ref_low[int(np.argmax(ref_scores))][None]  # mask_input: the low-res logits fed back
        ref2, ref2_scores, _ = case.model.predict_inst(case.state, mask_input=prev, multimask_output=True, **kwargs)
        res2 = case.engine.decode(case.embedding, Prompts(prompts.points, prompts.labels, prompts.boxes,
                                                          mask_input=prev), True)
        for j in range(3):
            assert iou(res2.masks[0, j], ref2[j] > 0) >= 0.999
        np.testing.assert_allclose(res2.scores[0], ref2_scores, atol=1e-4)
    assert checked >= 3


def anon_rss() -> int:
    """This process's anonymous resident bytes (Linux: /proc/self/status RssAnon): memory of its own, not file
    pages the kernel can drop and read back."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


@pytest.mark.slow
def test_build_engine_loads_an_official_format_checkpoint(case, tmp_path):
    from samgis.engine.factory import build_engine
    from samgis.settings import Settings

    prefix = "inst_interactive_predictor.model."
    state = {("tracker." + k[len(prefix):] if k.startswith(prefix) else "detector." + k): v
             for k, v in case.model.state_dict().items()}
    assert checkpoint_state({"model": state}).keys() == case.model.state_dict().keys()
    path = tmp_path / "sam3.pt"
    torch.save({"model": state}, path)
    del state
    anon = anon_rss()
    engine = build_engine(Settings(model="sam3", checkpoint=path, device="cpu", cache_dir=tmp_path))
    # the weights stay pages of the memory-mapped file: loading 3.4 GB adds ~0.5 GB of the process's own memory
    # (the builder's buffers), not a second copy of the weights (3.6 GB before assign-loading)
    assert anon_rss() - anon < 1.5e9
    try:
        assert isinstance(engine, Sam3Engine) and isinstance(engine, Engine)
        card = engine.describe()
        assert (card.model_id, card.backend, card.input_size, card.resize, card.low_res_size) == (
            "sam3", "sam3", 1008, "square", 288)
        assert card.capabilities.as_dict() == {"points": True, "boxes": True, "mask_input": True, "multimask": True,
                                               "automatic": True, "text": True, "exemplars": True}
        for (k, a), b in zip(engine.model.state_dict().items(), case.model.state_dict().values()):
            assert torch.equal(a, b), k
        pts = Prompts(points=[[120, 100]], labels=[1])
        ours, theirs = engine.decode(case.embedding, pts, True), case.engine.decode(case.embedding, pts, True)
        np.testing.assert_array_equal(ours.logits, theirs.logits)
    finally:
        del engine
        gc.collect()
    path.unlink()
    with pytest.raises(ValueError, match="is not a readable SAM 3 checkpoint"):
        path.write_bytes(b"not a checkpoint")
        build_engine(Settings(model="sam3", checkpoint=path, device="cpu", cache_dir=tmp_path))
