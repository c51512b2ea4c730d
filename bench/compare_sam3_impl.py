"""SAM 3 on the CPU: our backend (Meta's `sam3` package + `backends/sam3/compat.py`) against `transformers`'
implementation (`Sam3Model` for concept prompts, `Sam3TrackerModel` for clicks), on the same random weights.

Random weights of the real architecture (no download): our model is built with the seeded fast init, its state
dict is renamed into transformers' layout with the key mapping of transformers' own conversion script
(`convert_sam3_video_to_hf.py`: it maps the detector, the tracker neck and the tracker together) and loaded into
`Sam3Model` / `Sam3TrackerModel` built from their default configs, sharing the tensors (`assign=True`; the tracker
reuses the detector's ViT, as transformers' `Sam3VideoModel` does). The conversion script is not in the
`transformers` wheel or sdist: pass a transformers source checkout's file with `--convert-script` (or set
SAMGIS_SAM3_CONVERT_SCRIPT); without it the parity rows are skipped and the timings still run.

Printed, side by side in one process (timings) and in one child process per implementation (peak RSS):
architecture build (no weight init: what a checkpoint load builds), peak RSS (build + set-image + find + click),
set-image per 1008² window (preprocessing + ViT + both necks), one text prompt (cold: text encoder + detector +
masks at window size; warm: text features reused), one point prompt (multimask, masks at window size), the bytes
one window's state holds, bf16 on the CPU (set-image), install size of each stack, and parity: raw scores/boxes
of all 200 queries, the top-k instances' masks matched by IoU (Hungarian), and the click's three masks.
Transformers' side runs through its public model API (`get_vision_features`, `forward(vision_embeds=…)`,
`Sam3TrackerModel.forward(image_embeddings=…)`); the tracker features come from the tracker neck on the shared
ViT output exactly as `Sam3VideoModel.get_vision_features_for_tracker` computes them (one ViT pass, not two).

Run (transformers lives outside the shared venv; see README "SAM 3 vs transformers"):
  PYTHONPATH=/tmp/tf5:$PWD .venv/bin/python bench/compare_sam3_impl.py --convert-script /path/convert_sam3_video_to_hf.py
Exits 0 with a one-line message when `transformers` (with Sam3Model) is not importable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

INPUT = 1008
DETECTOR_PREFIX = "sam3_model."  # the conversion script's name for the detector's keys
TRACKER_PREFIX = "sam2_predictor.model."  # … and for the tracker's
OUR_TRACKER = "inst_interactive_predictor.model."  # where our package model keeps the tracker

OUR_DISTS = ["sam3", "timm", "ftfy", "einops", "open-clip-torch", "psutil"]  # what only our backend needs
HF_DISTS = ["transformers", "tokenizers"]  # what only transformers needs (typer: its CLI, not imported here)
VIDEO_ONLY = ("memory_", "mask_downsample", "object_pointer_proj", "no_memory_positional_encoding", "no_object_pointer",
              "occlusion_spatial_embedding_parameter", "temporal_positional_encoding_projection_layer")
SHARED_DISTS = ["torch", "torchvision", "huggingface-hub", "regex", "safetensors", "pyyaml", "tqdm", "numpy"]


# --- small helpers (tested in tests/test_compare_sam3_impl.py) -----------------------------------------------

def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def match_instances(a: np.ndarray, b: np.ndarray) -> tuple[list[tuple[int, int]], list[float]]:
    """Pair the instances of (Na, H, W) and (Nb, H, W) bool masks one-to-one maximising total IoU (Hungarian,
    scipy's `linear_sum_assignment`). Returns min(Na, Nb) pairs (i in a, j in b) and their IoUs."""
    from scipy.optimize import linear_sum_assignment

    if len(a) == 0 or len(b) == 0:
        return [], []
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(i), int(j)) for i, j in zip(rows, cols)], [float(iou[i, j]) for i, j in zip(rows, cols)]


def to_original_keys(state: dict) -> dict:
    """Our package model's state dict → the names transformers' video conversion script reads: the detector's
    tensors under "sam3_model.", the tracker's (ours: "inst_interactive_predictor.model.") under
    "sam2_predictor.model."."""
    out = {}
    for k, v in state.items():
        if k.startswith(OUR_TRACKER):
            out[TRACKER_PREFIX + k[len(OUR_TRACKER):]] = v
        else:
            out[DETECTOR_PREFIX + k] = v
    return out


def split_converted(state: dict) -> tuple[dict, dict]:
    """A `Sam3VideoModel`-layout state dict → (`Sam3Model` state, `Sam3TrackerModel` state without the ViT it
    shares). The tracker's renaming is the one transformers applies when it loads a video checkpoint into
    `Sam3TrackerModel` (conversion_mapping.py, "sam3_tracker": tracker_neck. → vision_encoder.neck.,
    tracker_model.X → X)."""
    det, trk = {}, {}
    for k, v in state.items():
        if k.startswith("detector_model."):
            det[k[len("detector_model."):]] = v
        elif k.startswith("tracker_neck."):
            trk["vision_encoder.neck." + k[len("tracker_neck."):]] = v
        elif k.startswith("tracker_model."):
            trk[k[len("tracker_model."):]] = v
    return det, trk


def dist_bytes(name: str) -> int | None:
    """Installed size of a distribution (sum of its RECORD's files), None when it is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total


def table(rows: list[tuple[str, str, str]]) -> str:
    """Rows (what, ours, transformers) as a Markdown table."""
    head = [("", "sam3 package + compat.py (ours)", "transformers Sam3Model + Sam3TrackerModel"), ("---",) * 3]
    return "\n".join("| " + " | ".join(r) + " |" for r in head + rows)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- transformers side -----------------------------------------------------------------------------------------

def load_convert_script(path: str | None):
    """transformers' `convert_sam3_video_to_hf` module from `path`, or None."""
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("convert_sam3_video_to_hf", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def convert_state(package_state: dict, conv) -> dict:
    """Our package state → `Sam3VideoModel` layout with the conversion script's key mapping and its
    `split_qkv`; the three value edits its `convert_sam3_checkpoint` makes inline (not importable) are repeated:
    the ViT position embedding loses its cls slot, the four point embeddings are concatenated (and shared with
    `shared_image_embedding`), the CLIP text projection is transposed. Tensors are views (no copy)."""
    import torch

    orig = to_original_keys(package_state)
    mapping = conv.convert_old_keys_to_new_keys(list(orig))
    new = {}
    for old, v in orig.items():
        k = mapping.get(old, old)
        if k == "detector_model.vision_encoder.backbone.embeddings.position_embeddings":
            v = v[:, 1:, :]
        new[k] = v
    new["tracker_model.shared_image_embedding.positional_embedding"] = \
        new["tracker_model.prompt_encoder.shared_embedding.positional_embedding"]
    new["tracker_model.prompt_encoder.point_embed.weight"] = torch.cat(
        [new.pop(f"tracker_model.prompt_encoder.point_embed.{i}.weight") for i in range(4)], dim=0)
    new = conv.split_qkv(new)
    key = "detector_model.text_encoder.text_projection.weight"
    if key in new:
        new[key] = new[key].T
    return new


TOKEN_CHECK = ["swimming pool", "Red Car!", "greenhouses near the road", "café  übung 3D-print", "a b " * 40,
               'it\'s a "test"  with   spaces']


def hf_tokenizer(package_tokenizer):
    """transformers' `CLIPTokenizer` built in-process from the vocabulary our package tokenizer read (open-clip's
    BPE file): the same token → id table, merges in rank order, the package's own start / end tokens (the
    `facebook/sam3` repository ships `vocab.json` / `merges.txt` instead, fetched at run time by
    `Sam3Processor.from_pretrained`)."""
    from transformers import CLIPTokenizer

    t = package_tokenizer
    sot, eot = t.decoder[t.sot_token_id], t.decoder[t.eot_token_id]
    return CLIPTokenizer(vocab=dict(t.encoder), merges=sorted(t.bpe_ranks, key=t.bpe_ranks.get),
                         bos_token=sot, eos_token=eot, unk_token=eot, pad_token=eot)


def build_hf_models():
    """`Sam3Model` and `Sam3TrackerModel` from their default configs without weight init (what
    `from_pretrained` does before reading a checkpoint), the tracker's ViT replaced by the detector's."""
    from transformers import Sam3Config, Sam3Model, Sam3TrackerConfig, Sam3TrackerModel
    from transformers.initialization import no_init_weights

    with no_init_weights():
        det = Sam3Model(Sam3Config()).eval()
        trk = Sam3TrackerModel(Sam3TrackerConfig()).eval()
    trk.vision_encoder.backbone = det.vision_encoder.backbone
    return det, trk


def load_hf(det, trk, det_state: dict, trk_state: dict) -> dict:
    """Load both (sharing tensors); returns the missing / unexpected keys (the tracker's ViT is shared, so its
    keys are not expected)."""
    m1, u1 = det.load_state_dict(det_state, strict=False, assign=True)
    m2, u2 = trk.load_state_dict(trk_state, strict=False, assign=True)
    m2 = [k for k in m2 if not k.startswith("vision_encoder.backbone.")]
    trk.vision_encoder.backbone = det.vision_encoder.backbone  # assign=True rebinds parameters: keep it shared
    return {"detector_missing": list(m1), "tracker_missing": m2,
            # the package's precomputed RoPE tables (transformers computes them from the config)
            "detector_unexpected": [k for k in u1 if not k.endswith("rotary_emb.rope_embeddings")],
            # the tracker's video-only modules (memory attention / encoder, object pointers)
            "tracker_unexpected": [k for k in u2 if not k.startswith(VIDEO_ONLY)]}


class HfSide:
    """The transformers models with the per-window steps our engine has (embed / find / decode)."""

    def __init__(self, det, trk, token_fn):
        from transformers import Sam3ImageProcessor

        self.det, self.trk = det, trk
        self.processor = Sam3ImageProcessor()
        self.token_fn = token_fn  # phrase → (input_ids (1, 32), attention_mask (1, 32))

    def pixels(self, image: np.ndarray):
        return self.processor(images=image, return_tensors="pt")["pixel_values"]

    def embed_pixels(self, px):
        """(1, 3, 1008, 1008) float → dict(vision=Sam3VisionEncoderOutput, tracker=[hr0, hr1, embed])."""
        import torch

        with torch.inference_mode():
            vision = self.det.get_vision_features(pixel_values=px)
            h = vision.last_hidden_state  # (1, 72*72, 1024)
            spatial = h.view(1, 72, 72, -1).permute(0, 3, 1, 2)
            fpn, _ = self.trk.vision_encoder.neck(spatial)
            fpn = list(fpn[:-1])
            fpn[0] = self.trk.mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.trk.mask_decoder.conv_s1(fpn[1])
            fpn[-1] = fpn[-1] + self.trk.no_memory_embedding.view(1, -1, 1, 1)
        return {"vision": vision, "tracker": fpn}

    def text(self, phrase: str):
        import torch

        ids, mask = self.token_fn(phrase)
        with torch.inference_mode():
            return self.det.get_text_features(input_ids=ids, attention_mask=mask, return_dict=True), mask

    def find_raw(self, state, phrase: str, text=None, cls: bool = False):
        """`Sam3Model.forward` on the cached vision output. `cls`: add one padding box (label -10), which makes
        the geometry encoder run and append its CLS token to the prompt, as the official model always does
        (its empty geometric prompt still yields that token); transformers skips the geometry encoder for a
        text-only prompt."""
        import torch

        ids, mask = self.token_fn(phrase)
        extra = {}
        if cls:
            extra = {"input_boxes": torch.zeros(1, 1, 4),
                     "input_boxes_labels": torch.full((1, 1), -10, dtype=torch.long)}
        with torch.inference_mode():
            if text is None:
                return self.det(vision_embeds=state["vision"], input_ids=ids, attention_mask=mask, **extra)
            return self.det(vision_embeds=state["vision"], text_embeds=text[0], attention_mask=text[1], **extra)

    def find(self, state, phrase: str, size, threshold: float, text=None):
        out = self.find_raw(state, phrase, text)
        res = self.processor.post_process_instance_segmentation(out, threshold=threshold, mask_threshold=0.5,
                                                                target_sizes=[size])[0]
        return out, res

    def click(self, state, xy, size):
        import torch
        import torch.nn.functional as F

        h, w = size
        pts = torch.tensor([[[[xy[0] * INPUT / w, xy[1] * INPUT / h]]]], dtype=torch.float32)
        with torch.inference_mode():
            out = self.trk(image_embeddings=state["tracker"], input_points=pts,
                           input_labels=torch.ones(1, 1, 1, dtype=torch.int), multimask_output=True)
            masks = F.interpolate(out.pred_masks[0].float(), (h, w), mode="bilinear", align_corners=False) > 0
        return masks[0].numpy(), out.iou_scores[0, 0].float().numpy()


def state_bytes_hf(state) -> tuple[int, int]:
    """(bytes of what the public API hands back for one window: the whole `Sam3VisionEncoderOutput` + the
    tracker's three maps, bytes of the minimum a cache needs: detector levels 0–2 + tracker maps)."""
    v = state["vision"]
    nb = lambda t: t.element_size() * t.nelement()  # noqa: E731
    tracker = sum(nb(t) for t in state["tracker"])
    full = nb(v.last_hidden_state) + sum(nb(t) for t in v.fpn_hidden_states) \
        + sum(nb(t) for t in v.fpn_position_encoding) + tracker
    minimum = sum(nb(t) for t in v.fpn_hidden_states[:-1]) + tracker
    return full, minimum


# --- runs --------------------------------------------------------------------------------------------------

def image(h: int = 1024, w: int = 1024, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 RGB: smooth colour blobs plus noise (`tests.conftest.textured_image`)."""
    from tests.conftest import textured_image

    return textured_image(h, w, seed)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def fill_(model) -> None:
    """Touch every weight (small uniform values) so RSS counts it; for the child runs."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.02, 0.02)


def child(which: str, phrase: str) -> dict:
    """One implementation alone: build (no init), fill the weights, one set-image, one text find, one click;
    RSS after build and peak."""
    import torch

    img = image()
    out = {"impl": which}
    if which == "ours":
        from samgis.engine.backends.sam3 import Sam3Engine, build_model
        from samgis.engine.protocol import ConceptPrompt, Prompts

        model, out["build_s"] = timed(lambda: build_model(init="none"))
        fill_(model)
        out["rss_built_mib"] = rss_mib()
        engine = Sam3Engine(model, "sam3", device="cpu")
        emb, out["embed_s"] = timed(lambda: engine.embed(img))
        engine.find(emb, ConceptPrompt(phrase), 0.5)
        engine.decode(emb, Prompts(points=[[512, 512]], labels=[1]), multimask=True)
    else:
        (det, trk), out["build_s"] = timed(build_hf_models)
        fill_(det)
        fill_(trk.prompt_encoder), fill_(trk.mask_decoder), fill_(trk.vision_encoder.neck)
        out["rss_built_mib"] = rss_mib()
        ids = torch.zeros(1, 32, dtype=torch.long)
        ids[0, :3] = torch.tensor([49406, 320, 49407])
        hf = HfSide(det, trk, lambda p: (ids, (ids != 0).long()))
        st, out["embed_s"] = timed(lambda: hf.embed_pixels(hf.pixels(img)))
        hf.find(st, phrase, img.shape[:2], 0.5)
        hf.click(st, (512, 512), img.shape[:2])
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_child(which: str, args) -> dict | None:
    log(f"child run: {which}")
    cmd = [sys.executable, __file__, "--child", which, "--phrase", args.phrase, "--threads", str(args.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if p.returncode != 0:
        print(f"[child {which} failed: {p.stderr.strip().splitlines()[-1:]}]")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--convert-script", default=os.environ.get("SAMGIS_SAM3_CONVERT_SCRIPT"),
                    help="transformers' src/transformers/models/sam3_video/convert_sam3_video_to_hf.py")
    ap.add_argument("--phrase", default="swimming pool")
    ap.add_argument("--topk", type=int, default=10, help="instances compared for parity (best scores)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--no-rss", action="store_true", help="skip the two child runs (peak RSS)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 set-image runs")
    ap.add_argument("--child", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    try:
        import transformers
        from transformers import Sam3Model  # noqa: F401
    except ImportError as exc:
        print(f"transformers with Sam3Model is not importable ({exc}); nothing to compare. Install it outside "
              "the project venv (pip install --target DIR transformers==5.23.0 tokenizers==0.23.3 --no-deps) and "
              "run with PYTHONPATH=DIR:$PWD.")
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.phrase)))
        return

    from samgis.engine.backends.sam3 import Sam3Engine, build_model
    from samgis.engine.protocol import ConceptPrompt, Prompts

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"CUDA available: {torch.cuda.is_available()}; random weights (real timings, meaningless masks)")
    rows: list[tuple[str, str, str]] = []
    children = {} if args.no_rss else {w: run_child(w, args) for w in ("ours", "hf")}

    if children.get("ours") and children.get("hf"):  # build (architecture only, no init) in the children
        c1, c2 = children["ours"], children["hf"]
        rows.append(("architecture build (no init, as a checkpoint load)", f"{c1['build_s']:.1f} s",
                     f"{c2['build_s']:.1f} s"))
        rows.append(("set-image in the child (fresh process, weights filled)", f"{c1['embed_s']:.1f} s",
                     f"{c2['embed_s']:.1f} s"))
        rows.append(("RSS after build / peak (build + set-image + find + click), own process",
                     f"{c1['rss_built_mib'] / 1024:.2f} / {c1['peak_rss_mib'] / 1024:.2f} GiB",
                     f"{c2['rss_built_mib'] / 1024:.2f} / {c2['peak_rss_mib'] / 1024:.2f} GiB"))
    else:
        m, t_ours_build = timed(lambda: build_model(init="none"))
        del m
        (d, t), t_hf_build = timed(build_hf_models)
        del d, t
        rows.append(("architecture build (no init, as a checkpoint load)", f"{t_ours_build:.1f} s",
                     f"{t_hf_build:.1f} s"))

    log("building the random-weight model (ours, fast init) and transferring its weights")
    model = build_model(seed=0, init="fast")
    engine = Sam3Engine(model, "sam3", device="cpu")
    conv = None
    try:
        conv = load_convert_script(args.convert_script)
    except Exception as exc:  # a script from another transformers version
        print(f"[conversion script not usable: {type(exc).__name__}: {exc}]")
    if conv is None:
        print("no --convert-script: the transformers model keeps uninitialised weights; timings only, no parity")
        det, trk = build_hf_models()
        fill_(det), fill_(trk.prompt_encoder), fill_(trk.mask_decoder), fill_(trk.vision_encoder.neck)
    else:
        det, trk = build_hf_models()
        det_state, trk_state = split_converted(convert_state(model.state_dict(), conv))
        keys = load_hf(det, trk, det_state, trk_state)
        print("weight transfer: " + ", ".join(f"{k} {len(v)}{(' ' + str(v[:4])) if v else ''}"
                                              for k, v in keys.items()))

    tok = model.backbone.language_backbone.tokenizer
    htok = hf_tokenizer(tok)
    same = sum(tok([p], context_length=32)[0][tok([p], context_length=32)[0] != 0].tolist()
               == htok(p, max_length=32, truncation=True)["input_ids"] for p in TOKEN_CHECK)
    rows.append(("tokenizer (no download)", "sam3 `SimpleTokenizer` + open-clip's BPE file",
                 f"`CLIPTokenizer` built from the same table: ids equal on {same}/{len(TOKEN_CHECK)} phrases"))

    def token_fn(phrase: str):
        enc = htok([phrase], max_length=32, padding="max_length", truncation=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    hf = HfSide(det, trk, token_fn)
    img = image()
    size = img.shape[:2]

    # set-image; transformers' ViT runs on our preprocessing's pixels (parity below compares like with like),
    # its own preprocessing is timed apart and its difference reported
    log("set-image (ours)")
    emb, t_ours = timed(lambda: engine.embed(img))
    px_hf, t_pre = timed(lambda: hf.pixels(img))
    x = torch.from_numpy(img).permute(2, 0, 1)
    px_ours = engine.transform(x).unsqueeze(0)
    log("set-image (transformers)")
    st, t_vis = timed(lambda: hf.embed_pixels(px_ours))
    rows.append(("set-image per 1008² window (preprocess + ViT + both necks)", f"{t_ours:.1f} s",
                 f"{t_pre + t_vis:.1f} s (preprocess {t_pre:.2f} s)"))
    full, minimum = state_bytes_hf(st)
    rows.append(("per-window state (fp32)", f"{emb.nbytes / 2**20:.1f} MiB (`Sam3Features`)",
                 f"{full / 2**20:.1f} MiB as returned (ViT tokens, 4 levels + their position encodings); "
                 f"{minimum / 2**20:.1f} MiB needed"))
    pre_diff = float((px_hf - px_ours).abs().max())

    log("text prompts")
    found, t_find_cold = timed(lambda: engine.find(emb, ConceptPrompt(args.phrase), 0.5))
    _, t_find_warm = timed(lambda: engine.find(emb, ConceptPrompt(args.phrase), 0.5))
    (out_hf, res_hf), t_hf_cold = timed(lambda: hf.find(st, args.phrase, size, 0.5))
    text = hf.text(args.phrase)
    _, t_hf_warm = timed(lambda: hf.find(st, args.phrase, size, 0.5, text))
    rows.append(("one text prompt: cold (text encoder) / text features reused", f"{t_find_cold:.2f} / {t_find_warm:.2f} s",
                 f"{t_hf_cold:.2f} / {t_hf_warm:.2f} s"))

    log("clicks")
    dec = [timed(lambda: engine.decode(emb, Prompts(points=[[300 + 50 * i, 512]], labels=[1]), multimask=True))
           for i in range(4)]
    clk = [timed(lambda: hf.click(st, (300 + 50 * i, 512), size)) for i in range(4)]
    rows.append(("one point prompt (multimask, masks at 1024²), median of 3 after a warm-up",
                 f"{1000 * float(np.median([t for _, t in dec[1:]])):.0f} ms",
                 f"{1000 * float(np.median([t for _, t in clk[1:]])):.0f} ms"))

    # parity on the same pixels (the processors' resizes differ slightly: reported separately)
    if conv is not None:
        log("parity")
        st_same = st
        c_ours = torch.cat([t.flatten() for t in emb.features.concept])
        c_hf = torch.cat([t.flatten() for t in st_same["vision"].fpn_hidden_states[:-1]])
        rows.append(("parity: concept features, max abs Δ (same pixels)", "reference",
                     f"{float((c_ours - c_hf).abs().max()):.2e} (largest value {float(c_ours.abs().max()):.1f})"))
        ours_raw = _our_raw(engine, emb, args.phrase)
        for cls in (False, True):
            r = hf.find_raw(st_same, args.phrase, cls=cls)
            s_r = (r.pred_logits.sigmoid() * r.presence_logits.sigmoid()).flatten()
            how = "text + padding box (official prompt layout)" if cls else "text only (as transformers' docs call it)"
            rows.append((f"parity: 200 query scores / presence logit / mask logits, max abs Δ; {how}", "reference",
                         f"{float((ours_raw['scores'] - s_r).abs().max()):.2e} / "
                         f"{float((ours_raw['presence'] - r.presence_logits.flatten()).abs().max()):.2e} / "
                         f"{float((ours_raw['masks'] - r.pred_masks[0]).abs().max()):.2e}"))
        raw = hf.find_raw(st_same, args.phrase, cls=True)
        s_hf = (raw.pred_logits.sigmoid() * raw.presence_logits.sigmoid()).flatten()
        k = min(args.topk, len(s_hf))
        thr = float(torch.sort(ours_raw["scores"], descending=True).values[k - 1]) - 1e-6
        a = engine.find(emb, ConceptPrompt(args.phrase), thr)
        b = hf.processor.post_process_instance_segmentation(raw, threshold=thr, mask_threshold=0.5,
                                                            target_sizes=[size])[0]
        pairs, ious = match_instances(a.masks, b["masks"].numpy().astype(bool))
        ds = [abs(float(a.scores[i]) - float(b["scores"][j])) for i, j in pairs]
        same_rank = sum(i == j for i, j in pairs)
        rows.append((f"parity: top-{k} instances (padding box), masks at 1024² matched by IoU", f"{len(a)} instances",
                     f"{len(b['scores'])} instances; IoU mean {np.mean(ious):.4f}, min {np.min(ious):.4f}; "
                     f"max abs Δscore {max(ds):.1e}; same rank {same_rank}/{len(pairs)}" if pairs else "no instances"))
        ra = engine.decode(emb, Prompts(points=[[400, 512]], labels=[1]), multimask=True)
        mb, sb = hf.click(st_same, (400, 512), size)
        ious = [mask_iou(ra.masks[0, i], mb[i]) for i in range(3)]
        rows.append(("parity: click (3 masks), IoU / max abs Δ predicted IoU", "reference",
                     f"{', '.join(f'{v:.4f}' for v in ious)} / {float(np.abs(ra.scores[0] - sb).max()):.1e}"))
    rows.append(("preprocessing: max abs Δ pixel vs ours (both Resize to 1008², mean = std = 0.5)", "reference",
                 f"{pre_diff:.3f}"))

    # bf16 on the CPU: set-image
    if not args.no_bf16:
        log("bf16")
        eng16 = Sam3Engine(model, "sam3", device="cpu", precision="bf16")
        try:
            e16, t16 = timed(lambda: eng16.embed(img))
            _, t16f = timed(lambda: eng16.find(e16, ConceptPrompt(args.phrase + " "), 0.5))  # not the cached phrase
            ours16 = f"{t16:.1f} s (autocast; features kept fp32); a text find {t16f:.2f} s"
            del e16
        except Exception as exc:
            ours16 = f"fails: {type(exc).__name__}: {str(exc)[:80]}"
        try:
            det.to(torch.bfloat16), trk.to(torch.bfloat16)  # new bf16 tensors; ours keep the fp32 ones
            st16, t16h = timed(lambda: hf.embed_pixels(px_ours.to(torch.bfloat16)))
            _, t16f = timed(lambda: hf.find(st16, args.phrase, size, 0.5))
            hf16 = f"{t16h:.1f} s (weights in bf16); a text find {t16f:.2f} s"
        except Exception as exc:
            hf16 = f"fails: {type(exc).__name__}: {str(exc)[:80]}"
        rows.append(("bf16 on the CPU: set-image", ours16, hf16))

    sizes = {n: dist_bytes(n) for n in OUR_DISTS + HF_DISTS}
    fmt = lambda ns: ", ".join(f"{n} {sizes[n] / 2**20:.0f} MiB" if sizes[n] else f"{n} (missing)" for n in ns)  # noqa: E731
    rows.append(("install size beyond the shared stack (torch, hub, regex, …)",
                 f"{sum(sizes[n] or 0 for n in OUR_DISTS) / 2**20:.0f} MiB ({fmt(OUR_DISTS)})",
                 f"{sum(sizes[n] or 0 for n in HF_DISTS) / 2**20:.0f} MiB ({fmt(HF_DISTS)})"))
    print(table(rows))


def _our_raw(engine, emb, phrase: str) -> dict:
    """All 200 queries of our engine's grounding pass: scores (Q,), boxes (Q, 4) normalised xyxy, the presence
    logit (1,) and the mask logits (Q, 288, 288)."""
    import torch
    from sam3.model import box_ops
    from sam3.model.data_misc import FindStage

    from samgis.engine.backends.sam3.compat import cpu_only

    feats = list(emb.features.concept)
    m = engine.model
    with torch.inference_mode(), cpu_only(engine._shim):
        pos = m.backbone.vision_backbone.position_encoding(feats[-1])
        bo = {"vision_features": feats[-1], "backbone_fpn": feats, "vision_pos_enc": [pos],
              "sam2_backbone_out": None, **engine._text_features(phrase)}
        ids = torch.tensor([0], dtype=torch.long)
        fi = FindStage(img_ids=ids, text_ids=ids, input_boxes=None, input_boxes_mask=None, input_boxes_label=None,
                       input_points=None, input_points_mask=None)
        out = m.forward_grounding(backbone_out=bo, find_input=fi, geometric_prompt=m._get_dummy_prompt(),
                                  find_target=None)
    scores = (out["pred_logits"].sigmoid() * out["presence_logit_dec"].sigmoid().unsqueeze(1)).flatten()
    return {"scores": scores, "boxes": box_ops.box_cxcywh_to_xyxy(out["pred_boxes"][0]),
            "presence": out["presence_logit_dec"].flatten(), "masks": out["pred_masks"][0]}


if __name__ == "__main__":
    main()
