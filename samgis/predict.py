"""Plain-image prediction: a base64 image and SAM prompts in → masks (COCO RLE, PNG or pixel polygons) out.

No HTTP here: `api/routers/predict.py` and `samgis predict` are thin layers over these functions.

Frames:

- *image px, SAM convention* (prompts): (x, y) = (column, row) in pixels of the decoded image after its
  EXIF orientation is applied; integer values are pixel centres, exactly what `SamPredictor` takes.
- *pixel edges, rasterio convention* (polygons): pixel (row i, col j) covers x in [j, j+1), y in [i, i+1),
  so a prompt at (x, y) sits at (x + 0.5, y + 0.5) in the polygon frame.

An instance (one image) decodes either its prompts (points shared by every query, one query per box, as
`Engine.decode`) or, with no prompts at all, runs Meta's automatic mask generator over a point grid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
import time
import warnings
from dataclasses import dataclass, field, fields, replace

import numpy as np
import shapely
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from pycocotools import mask as coco_mask

from samgis.engine.protocol import AmgOptions, DecodeResult, Embedding, Engine, Prompts, require, required_capabilities
from samgis.errors import InvalidRequest, LimitExceeded
from samgis.vector.polygons import geojson_geometry, pixel_polygons

MASK_FORMATS = ("rle", "png", "polygon")
IMAGE_FORMATS = ("PNG", "JPEG")
LOW_RES = 256
"""Side of SAM's low-resolution logits (and of `mask_input`)."""


class ImageTooLarge(InvalidRequest):
    """The image has more pixels than the configured limit (HTTP 413)."""


@dataclass(frozen=True)
class PredictLimits:
    """Bounds on what one instance may cost.

    `max_pixels`: image width × height. `max_prompts`: points + boxes per instance. `max_points_per_side`,
    `max_crop_layers`, `max_grid_points`: automatic mode (grid points summed over all crops).
    `decode_bytes`: full-resolution float32 logits held at once; bigger batches are split.
    `max_mask_pixels`: prompted masks decoded × pixels per mask; `max_answer_bytes`: bytes of the answer
    (both None = unbounded; the server sets them, see `check_work`).
    """

    max_pixels: int = 4096 * 4096
    max_prompts: int = 100
    max_instances: int = 16
    max_points_per_side: int = 32
    max_crop_layers: int = 1
    max_grid_points: int = 1024
    decode_bytes: int = 256 << 20
    max_mask_pixels: int | None = None
    max_answer_bytes: int | None = None


@dataclass(frozen=True)
class Instance:
    """One image to segment. `image`: (H, W, 3) uint8 RGB. `prompts`: None → automatic mode."""

    image: np.ndarray
    prompts: Prompts | None = None
    multimask: bool = False
    mask_format: str = "rle"
    return_logits: bool = False
    amg: AmgOptions = field(default_factory=AmgOptions)


OPTION_KEYS = ("multimask", "mask_format", "return_logits", *(f.name for f in fields(AmgOptions)))
PROMPT_KEYS = ("points", "labels", "boxes", "mask_input")


# --- images -------------------------------------------------------------------------------------------

def image_bytes(data, field_name: str = "image") -> bytes:
    """The bytes of a base64 image: a string, a `data:` URL or `{"b64": "..."}`; whitespace is ignored."""
    if isinstance(data, dict) and set(data) == {"b64"}:
        data = data["b64"]
    if not isinstance(data, str):
        raise InvalidRequest(field_name, "expected a base64 string (or {\"b64\": \"...\"})")
    text = data.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if text.startswith(("http://", "https://")):
        raise InvalidRequest(field_name, "image URLs are not fetched; send the image itself, base64-encoded")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(field_name, f"not valid base64 ({exc})") from None


def decode_image(data, field_name: str = "image", max_pixels: int = PredictLimits.max_pixels) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a base64 PNG/JPEG, rows top to bottom, EXIF orientation applied.

    Raises `InvalidRequest(field_name, …)` for anything undecodable and `ImageTooLarge` when W × H is over
    `max_pixels` (checked from the header, before any pixel is decoded).
    """
    return read_image(image_bytes(data, field_name), field_name, max_pixels)


def read_image(raw: bytes, field_name: str = "image", max_pixels: int = PredictLimits.max_pixels) -> np.ndarray:
    """(H, W, 3) uint8 RGB of PNG/JPEG file bytes; as `decode_image` without the base64 step."""
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLarge(field_name, f"the image is {w} × {h} = {w * h} pixels, over the limit of "
                                                f"{max_pixels} pixels; send a smaller image")
            im.load()
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(field_name, str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(field_name, f"not a decodable PNG or JPEG image ({_no_reprs(exc)})") from None
    return np.asarray(rgb, dtype=np.uint8)


def _no_reprs(exc: Exception) -> str:
    """An exception's message without object reprs such as "<_io.BytesIO object at 0x7f…>"."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(exc)) or type(exc).__name__


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an (H, W, C) uint8 image's shape and pixels: the embedding cache key of plain images."""
    h = hashlib.sha256(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


# --- pictures -----------------------------------------------------------------------------------------

PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], np.uint8)


def overlay(image: np.ndarray, masks: list[np.ndarray], points: np.ndarray | None = None,
            labels: np.ndarray | None = None, boxes: np.ndarray | None = None, alpha: float = 0.5) -> Image.Image:
    """RGB picture of `image` (H, W, 3) uint8 with each (H, W) bool mask tinted and outlined in its colour,
    points (image px, SAM convention) as green (include) / red (exclude) dots and boxes as rectangles."""
    out = image.astype(np.float32)
    edges = np.zeros(image.shape[:2], np.int32) - 1
    for k, mask in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        edges[mask & ~inner] = k
    picture = out.round().astype(np.uint8)
    on_edge = edges >= 0
    picture[on_edge] = PALETTE[edges[on_edge] % len(PALETTE)]
    pil = Image.fromarray(picture)
    draw = ImageDraw.Draw(pil)
    r = max(3, round(max(image.shape[:2]) / 150))
    for (x0, y0, x1, y1) in ([] if boxes is None else boxes):
        draw.rectangle([x0, y0, x1, y1], outline=(255, 255, 0), width=max(1, r // 2))
    for (x, y), lab in zip([] if points is None else points, [] if labels is None else labels):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 200, 0) if lab == 1 else (220, 0, 0),
                     outline=(255, 255, 255))
    return pil


# --- masks and arrays out -------------------------------------------------------------------------------

def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of an (H, W) bool mask: `{"size": [H, W], "counts": str}` (pycocotools' own
    encoding, column-major, as `SamAutomaticMaskGenerator(output_mode="coco_rle")` returns)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: dict) -> np.ndarray:
    """(H, W) bool mask of a COCO RLE (compressed string counts, or uncompressed list counts)."""
    with warnings.catch_warnings(action="ignore", category=DeprecationWarning):  # pycocotools vs numpy 2
        if isinstance(rle.get("counts"), list):
            rle = coco_mask.frPyObjects(rle, *rle["size"])
        else:
            rle = {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}
        return coco_mask.decode(rle).astype(bool)


def png_encode(mask: np.ndarray) -> str:
    """Base64 of an 8-bit grayscale PNG of an (H, W) bool mask: 255 foreground, 0 background."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def png_decode(data: str | bytes) -> np.ndarray:
    """(H, W) bool mask (nonzero = foreground) of a base64 string or raw bytes of a PNG."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("L")) > 0


def polygon_encode(mask: np.ndarray) -> dict | None:
    """GeoJSON-style Polygon/MultiPolygon of an (H, W) bool mask's foreground, in pixel-edge coordinates
    (rasterio convention: pixel (i, j) spans x in [j, j+1), y in [i, i+1)), holes kept; None if empty."""
    parts = pixel_polygons(mask)
    if len(parts) == 0:
        return None
    return geojson_geometry(parts[0] if len(parts) == 1 else shapely.multipolygons(parts))


def encode_mask(mask: np.ndarray, mask_format: str):
    """An (H, W) bool mask as `mask_format`: "rle" → dict, "png" → base64 str, "polygon" → dict | None."""
    if mask_format == "rle":
        return rle_encode(mask)
    if mask_format == "png":
        return png_encode(mask)
    if mask_format == "polygon":
        return polygon_encode(mask)
    raise ValueError(f"unknown mask format {mask_format!r}")


def encode_array(a: np.ndarray) -> dict:
    """A float array as `{"shape", "dtype": "float32", "data": base64 of little-endian bytes}`:
    `np.frombuffer(base64.b64decode(data), "<f4").reshape(shape)` reads it back."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "dtype": "float32", "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj, field_name: str) -> np.ndarray:
    """float32 array of `encode_array`'s dict or of nested lists; `InvalidRequest(field_name)` otherwise."""
    try:
        if isinstance(obj, dict):
            if obj.get("dtype", "float32") != "float32":
                raise ValueError(f"dtype must be float32, not {obj.get('dtype')!r}")
            flat = np.frombuffer(base64.b64decode(obj["data"], validate=True), dtype="<f4")
            return flat.reshape(obj["shape"]).astype(np.float32)
        return np.asarray(obj, dtype=np.float32)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise InvalidRequest(field_name, f"expected {{shape, dtype: float32, data: base64}} or nested lists "
                                         f"of numbers ({exc})") from None


# --- parsing an instance --------------------------------------------------------------------------------

def _number_rows(value, width: int, field_name: str) -> np.ndarray:
    """(N, width) float64 of a list of `width`-long lists of finite numbers."""
    if not isinstance(value, list | tuple):
        raise InvalidRequest(field_name, "expected a list of " + ("[x, y]" if width == 2 else "[x0, y0, x1, y1]"))
    for k, row in enumerate(value):
        if (not isinstance(row, list | tuple) or len(row) != width
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in row)):
            raise InvalidRequest(f"{field_name}[{k}]", f"expected {width} finite numbers, got {row!r}")
    return np.asarray(value, dtype=np.float64).reshape(-1, width)


def parse_prompts(obj: dict, size: tuple[int, int], field_name: str, max_prompts: int) -> Prompts | None:
    """The `Prompts` of an instance dict (`points`, `labels`, `boxes`, `mask_input`), None when it has none.

    `size`: (H, W) of the image. Points are (x, y) and boxes (x0, y0, x1, y1), image px, SAM convention.
    Labels default to 1 (include) for every point.
    """
    points = _number_rows(obj.get("points") or [], 2, f"{field_name}.points")
    boxes = _number_rows(obj.get("boxes") or [], 4, f"{field_name}.boxes")
    labels_in = obj.get("labels")
    if labels_in is None:
        labels = np.ones(len(points), np.int32)
    else:
        if not isinstance(labels_in, list | tuple) or not all(v in (0, 1) and not isinstance(v, float | bool)
                                                               for v in labels_in):
            raise InvalidRequest(f"{field_name}.labels", "expected a list of 1 (include) or 0 (exclude)")
        if len(labels_in) != len(points):
            raise InvalidRequest(f"{field_name}.labels", f"{len(labels_in)} labels for {len(points)} points")
        labels = np.asarray(labels_in, np.int32)
    if len(points) + len(boxes) > max_prompts:
        raise InvalidRequest(field_name, f"{len(points)} points + {len(boxes)} boxes is over the limit of "
                                         f"{max_prompts} prompts per instance")
    h, w = size
    for name, xy, per in (("points", points, 1), ("boxes", boxes.reshape(-1, 2), 2)):
        bad = np.flatnonzero((xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h))
        if len(bad):
            k = int(bad[0]) // per
            raise InvalidRequest(f"{field_name}.{name}[{k}]", f"{(points if per == 1 else boxes)[k].tolist()} is "
                                 f"outside the {w} × {h} image (x must be in [0, {w}], y in [0, {h}])")
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(bad):
        k = int(bad[0])
        raise InvalidRequest(f"{field_name}.boxes[{k}]", f"{boxes[k].tolist()} is not [x0, y0, x1, y1] "
                                                         "with x0 ≤ x1 and y0 ≤ y1")
    mask_input = None
    if obj.get("mask_input") is not None:
        mask_input = decode_array(obj["mask_input"], f"{field_name}.mask_input")
        if mask_input.size != LOW_RES * LOW_RES:
            raise InvalidRequest(f"{field_name}.mask_input", f"expected {LOW_RES} × {LOW_RES} low-res logits "
                                                             f"(as returned with return_logits), got shape "
                                                             f"{list(mask_input.shape)}")
        mask_input = mask_input.reshape(1, LOW_RES, LOW_RES)
    if len(points) == 0 and len(boxes) == 0:
        if mask_input is not None:
            raise InvalidRequest(f"{field_name}.mask_input", "a mask input needs at least one point or box")
        return None
    return Prompts(points=points.astype(np.float32), labels=labels, boxes=boxes.astype(np.float32),
                   mask_input=mask_input)


def _option(value, default, field_name: str):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidRequest(field_name, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(field_name, f"expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidRequest(field_name, f"expected a number, got {value!r}")
        return float(value)
    return value


def parse_options(obj: dict, base: dict, field_name: str, limits: PredictLimits) -> dict:
    """Options of an instance: `base` (e.g. the request's `parameters`) overridden by `obj`'s keys."""
    defaults = {"multimask": False, "mask_format": "rle", "return_logits": False,
                **{f.name: f.default for f in fields(AmgOptions)}}
    out = dict(defaults)
    for source, prefix in ((base, "parameters"), (obj, field_name)):
        for key, value in source.items():
            if key in defaults and value is not None:
                out[key] = _option(value, defaults[key], f"{prefix}.{key}")
    fn = field_name
    if out["mask_format"] not in MASK_FORMATS:
        raise InvalidRequest(f"{fn}.mask_format", f"must be one of {', '.join(MASK_FORMATS)}, "
                                                  f"not {out['mask_format']!r}")
    if not 1 <= out["points_per_side"] <= limits.max_points_per_side:
        raise InvalidRequest(f"{fn}.points_per_side", f"must be in [1, {limits.max_points_per_side}], "
                                                      f"got {out['points_per_side']}")
    if not 0 <= out["crop_n_layers"] <= limits.max_crop_layers:
        raise InvalidRequest(f"{fn}.crop_n_layers", f"must be in [0, {limits.max_crop_layers}], "
                                                    f"got {out['crop_n_layers']}")
    if out["crop_n_points_downscale_factor"] < 1:
        raise InvalidRequest(f"{fn}.crop_n_points_downscale_factor", "must be ≥ 1")
    for key in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
        if not 0.0 <= out[key] <= 1.0:
            raise InvalidRequest(f"{fn}.{key}", f"must be in [0, 1], got {out[key]}")
    if not 0.0 <= out["crop_overlap_ratio"] < 1.0:
        raise InvalidRequest(f"{fn}.crop_overlap_ratio", "must be in [0, 1)")
    if out["min_mask_region_area"] < 0 or out["stability_score_offset"] < 0:
        raise InvalidRequest(fn, "min_mask_region_area and stability_score_offset must be ≥ 0")
    return out


def parse_instance(obj: dict, field_name: str = "instances[0]", parameters: dict | None = None,
                   limits: PredictLimits = PredictLimits(), image: np.ndarray | None = None) -> Instance:
    """Validate one instance dict (see the module docstring) into an `Instance`.

    `parameters` holds defaults for every option; the instance's own keys win. Every error names its field,
    e.g. `instances[2].boxes[0]`. `image` skips decoding `obj["image"]` (already decoded by the caller).
    """
    if not isinstance(obj, dict):
        raise InvalidRequest(field_name, "expected an object with an image and optional prompts")
    unknown = sorted(set(obj) - {"image", *PROMPT_KEYS, *OPTION_KEYS})
    if unknown:
        raise InvalidRequest(f"{field_name}.{unknown[0]}", f"unknown key; known keys: image, "
                                                           f"{', '.join(PROMPT_KEYS + OPTION_KEYS)}")
    unknown = sorted(set(parameters or {}) - set(OPTION_KEYS))
    if unknown:
        raise InvalidRequest(f"parameters.{unknown[0]}", f"unknown parameter; known: {', '.join(OPTION_KEYS)}")
    opts = parse_options(obj, parameters or {}, field_name, limits)
    if image is None:
        if "image" not in obj:
            raise InvalidRequest(f"{field_name}.image", "missing: a base64 PNG or JPEG is required")
        image = decode_image(obj["image"], f"{field_name}.image", limits.max_pixels)
    prompts = parse_prompts(obj, image.shape[:2], field_name, limits.max_prompts)
    amg = AmgOptions(**{f.name: opts[f.name] for f in fields(AmgOptions)})
    if prompts is None and amg.grid_points() > limits.max_grid_points:
        raise LimitExceeded(f"{field_name}.points_per_side", f"automatic mode would decode {amg.grid_points()} "
                                                             f"grid points, over the limit of "
                                                             f"{limits.max_grid_points}", "max_grid_points")
    return Instance(image=image, prompts=prompts, multimask=opts["multimask"], mask_format=opts["mask_format"],
                    return_logits=opts["return_logits"], amg=amg)


def check_work(prompts: Prompts | None, multimask: bool, amg: AmgOptions, size: tuple[int, int],
               field_name: str, limits: PredictLimits, return_logits: bool = False) -> int:
    """Refuse, before any decoding, an instance of image `size` (H, W) that would cost more than `limits`
    allow; returns its decoded mask pixels (for a per-request total).

    Automatic mode (`prompts` None): grid points × max(1, H × W / 1024²) against `max_grid_points` (work grows
    with both). Prompts: queries (one per box, or one) × masks per query (3 with `multimask`) × max(H × W,
    256²) against `max_mask_pixels`; with `return_logits`, their base64 bytes against `max_answer_bytes`.
    """
    h, w = size
    if prompts is None:
        grid = amg.grid_points()
        counted = grid * max(1.0, h * w / 2**20)
        if counted > limits.max_grid_points:
            raise LimitExceeded(f"{field_name}.points_per_side",
                                f"automatic mode would decode {grid} grid points on a {w} × {h} image, "
                                f"{counted:.0f} counted per 1024 × 1024 px, over the limit of "
                                f"{limits.max_grid_points}; lower points_per_side or send a smaller image",
                                "max_grid_points")
        return 0
    queries = len(prompts.boxes) or 1
    per_query = 3 if multimask else 1
    cost = queries * per_query * max(h * w, LOW_RES * LOW_RES)
    if limits.max_mask_pixels is not None and cost > limits.max_mask_pixels:
        raise LimitExceeded(field_name, f"{queries} queries × {per_query} masks × {h * w} px = {cost} decoded "
                                        f"mask pixels, over the limit of {limits.max_mask_pixels}; send fewer "
                                        "boxes, no multimask or a smaller image", "max_mask_pixels")
    logit_bytes = queries * per_query * LOW_RES * LOW_RES * 4 * 4 // 3
    if return_logits and limits.max_answer_bytes is not None and logit_bytes > limits.max_answer_bytes:
        raise LimitExceeded(f"{field_name}.return_logits", f"{queries * per_query} masks' logits would be "
                                                           f"{logit_bytes} bytes of answer, over the limit of "
                                                           f"{limits.max_answer_bytes}", "max_answer_bytes")
    return cost


# --- decoding -------------------------------------------------------------------------------------------

def decode_prompts(engine: Engine, embedding: Embedding, prompts: Prompts, multimask: bool,
                   decode_bytes: int = PredictLimits.decode_bytes) -> DecodeResult:
    """`engine.decode`, with the boxes split into batches whose full-size logits fit in `decode_bytes`.

    Shapes as `DecodeResult`: masks (Q, M, H, W) bool in image px, scores (Q, M), logits (Q, M, 256, 256).
    """
    h, w = embedding.original_size
    n = engine.describe().image_size  # logits pass through the model's n × n input frame
    per_query = (3 if multimask else 1) * (4 * (n * n + h * w) + h * w)  # float32 logits + bool masks
    step = max(1, decode_bytes // per_query)
    if len(prompts.boxes) <= step:
        return engine.decode(embedding, prompts, multimask)
    parts = [engine.decode(embedding, replace(prompts, boxes=prompts.boxes[i:i + step]), multimask)
             for i in range(0, len(prompts.boxes), step)]
    return DecodeResult(masks=np.concatenate([p.masks for p in parts]),
                        scores=np.concatenate([p.scores for p in parts]),
                        logits=np.concatenate([p.logits for p in parts]))


# --- one instance end to end ----------------------------------------------------------------------------

def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def predict(engine: Engine, inst: Instance, embedding: Embedding | None = None,
            limits: PredictLimits = PredictLimits()) -> dict:
    """The prediction for one instance.

    With prompts: `{"mode": "prompts", "masks": [[mask] * M] * Q, "scores": [[float] * M] * Q,
    "logits"?: encode_array((Q, M, 256, 256)), "image_size": [H, W], "timings_ms"}` — Q = one query per
    box (or one when there are only points), M = 3 with `multimask` else 1, in the engine's (Q, M) order.
    Without: `{"mode": "automatic", "masks": [{"segmentation", "bbox", "area", "predicted_iou",
    "stability_score", "point_coords", "crop_box"}], "grid_points", "image_size", "timings_ms"}`.
    Masks are encoded as `inst.mask_format` (see `encode_mask`).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    card = engine.describe()
    require(card, required_capabilities(inst.prompts), "prompts")
    require(card, ["multimask"] if inst.multimask and inst.prompts is not None else [], "multimask")
    if embedding is None:
        t0 = time.perf_counter()
        embedding = engine.embed(inst.image)
        timings["embed"] = _ms(t0)
    h, w = inst.image.shape[:2]
    if inst.prompts is None:
        t0 = time.perf_counter()
        records = engine.generate(embedding, inst.amg, inst.image)
        timings["generate"] = _ms(t0)
        t0 = time.perf_counter()
        masks = [{**{k: v for k, v in r.items() if k != "segmentation"},
                  "segmentation": encode_mask(r["segmentation"], inst.mask_format)} for r in records]
        timings["encode"] = _ms(t0)
        timings["total"] = _ms(t_start)
        return {"mode": "automatic", "masks": masks, "grid_points": inst.amg.grid_points(),
                "image_size": [h, w], "timings_ms": timings}
    t0 = time.perf_counter()
    result = decode_prompts(engine, embedding, inst.prompts, inst.multimask, limits.decode_bytes)
    timings["decode"] = _ms(t0)
    t0 = time.perf_counter()
    out = {
        "mode": "prompts",
        "masks": [[encode_mask(m, inst.mask_format) for m in query] for query in result.masks],
        "scores": result.scores.astype(float).tolist(),
        "image_size": [h, w],
    }
    if inst.return_logits:
        out["logits"] = encode_array(result.logits)
    timings["encode"] = _ms(t0)
    timings["total"] = _ms(t_start)
    out["timings_ms"] = timings
    return out
