"""Plain-image prediction: a base64 image and SAM prompts in → masks (COCO RLE, PNG or pixel polygons) out.

No HTTP here: `api/routers/predict.py` (our API, KServe, Vertex, Azure) and `samgis predict` are thin layers
over this module. `ImagePredictService` runs requests through the shared embedding cache (plain images are
keyed by the SHA-256 of their pixels) and the model's bounded encoder queue.

Frames:

- *image px, SAM convention* (prompts): (x, y) = (column, row) in pixels of the decoded image after its
  EXIF orientation is applied; integer values are pixel centres, exactly what `SamPredictor` takes.
- *pixel edges, rasterio convention* (polygons): pixel (row i, col j) covers x in [j, j+1), y in [i, i+1),
  so a prompt at (x, y) sits at (x + 0.5, y + 0.5) in the polygon frame.

An instance (one image) decodes either its prompts (points shared by every query, one query per box, as
`Engine.decode`) or, with no prompts at all, the engine's automatic masks over a point grid, or, with concept
prompts (`text`, and/or `exemplar_boxes` with `exemplar_labels`), finds every instance of the concept
(`Engine.find`; rules in `samgis.services.concepts`; never mixed with points/boxes).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
import shapely

from samgis.engine.cache import EmbeddingCache
from samgis.engine.protocol import (AmgOptions, ConceptPrompt, DecodeResult, Embedding, Engine, Prompts, require,
                                    required_capabilities)
from samgis.services.concepts import (DEFAULT_SCORE_THRESHOLD, check_score_threshold, check_text, concept_label,
                                      require_concept)
from samgis.errors import InvalidRequest, LimitExceeded
from samgis.imaging.geotiff import GeoRef, decode_any_image
from samgis.imaging.images import DEFAULT_MAX_PIXELS, image_digest
from samgis.imaging.masks import MASK_FORMATS, decode_array, encode_array, encode_mask
from samgis.vector.polygons import (geojson_geometry, mask_to_geometry, mask_to_px_geometry, pixel_polygons,
                                    px_geometry_to_lnglat, rounded)
from samgis.vector.postprocess import PostProcess, apply as postprocess_apply, check_budget
from samgis.vector.postprocess import choose as choose_postprocess

LOW_RES = 256
"""Side of SAM's low-resolution logits (and of `mask_input`)."""


@dataclass(frozen=True)
class PredictLimits:
    """Bounds on what one instance may cost.

    `max_pixels`: image width × height. `max_prompts`: points + boxes per instance. `max_points_per_side`,
    `max_crop_layers`, `max_grid_points`: automatic mode (grid points summed over all crops).
    `decode_bytes`: full-resolution float32 logits held at once; bigger batches are split.
    `max_mask_pixels`: prompted masks decoded × pixels per mask; `max_answer_bytes`: bytes of the answer
    (both None = unbounded; the server sets them, see `check_work`).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
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
    """One image to segment. `image`: (H, W, 3) uint8 RGB. `prompts`: None → automatic mode. `valid`: (H, W)
    bool, False on the image's nodata px (masks are clipped to it), None when all valid. `geo`: the image's
    georeferencing (GeoTIFF), None for plain images."""

    image: np.ndarray
    prompts: Prompts | None = None
    multimask: bool = False
    mask_format: str = "rle"
    return_logits: bool = False
    amg: AmgOptions = field(default_factory=AmgOptions)
    valid: np.ndarray | None = None
    geo: GeoRef | None = None
    concept: ConceptPrompt | None = None
    """Concept prompts (then `prompts` is None): find every instance instead of decoding or automatic masks."""
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    postprocess: PostProcess | None = None
    """`regularize` / `smooth` of mask_format "polygon" outlines (samgis.vector.postprocess), in image px."""


POSTPROCESS_KEYS = ("regularize", "smooth")
OPTION_KEYS = ("multimask", "mask_format", "return_logits", "score_threshold", *(f.name for f in fields(AmgOptions)),
               *POSTPROCESS_KEYS)
CONCEPT_KEYS = ("text", "exemplar_boxes", "exemplar_labels")
PROMPT_KEYS = ("points", "points_lnglat", "labels", "boxes", "boxes_lnglat", "mask_input", *CONCEPT_KEYS)


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


def _lnglat_prompts(pts_ll: np.ndarray, boxes_ll: np.ndarray, size: tuple[int, int], field_name: str,
                    geo: GeoRef | None) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 2), boxes (B, 4)) float64 image px, SAM convention, of `pts_ll` ((N, 2) float64 [lng, lat],
    EPSG:4326) and `boxes_ll` ((B, 4) float64 [west, south, east, north]; the px envelope of its four corners).
    Continuous image px through `geo` (rasterio convention) minus 0.5 is SAM's frame (integer = pixel centre).
    A prompt outside the image is refused (422 naming it), never moved."""
    if not len(pts_ll) and not len(boxes_ll):
        return np.zeros((0, 2)), np.zeros((0, 4))
    if geo is None:
        name = "points_lnglat" if len(pts_ll) else "boxes_lnglat"
        raise InvalidRequest(f"{field_name}.{name}", "the image has no georeferencing (send a GeoTIFF with a CRS "
                                                     "and geotransform), so lng/lat prompts cannot be placed; "
                                                     "use points/boxes in image px")
    h, w = size
    for name, rows in (("points_lnglat", pts_ll), ("boxes_lnglat", boxes_ll)):
        bad = np.flatnonzero((np.abs(rows[:, 1::2]) > 90).any(axis=1) | (np.abs(rows[:, 0::2]) > 180).any(axis=1))
        if len(bad):
            k = int(bad[0])
            raise InvalidRequest(f"{field_name}.{name}[{k}]", f"{rows[k].tolist()} is not lng/lat degrees "
                                                             "(lng in [-180, 180], lat in [-90, 90])")
    bad = np.flatnonzero((boxes_ll[:, 2] < boxes_ll[:, 0]) | (boxes_ll[:, 3] < boxes_ll[:, 1]))
    if len(bad):
        k = int(bad[0])
        raise InvalidRequest(f"{field_name}.boxes_lnglat[{k}]", f"{boxes_ll[k].tolist()} is not "
                                                                "[west, south, east, north]")
    corners = boxes_ll[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)
    px = geo.lnglat_to_px(np.concatenate([pts_ll, corners]))
    for name, rows, part, per in (("points_lnglat", pts_ll, px[:len(pts_ll)], 1),
                                  ("boxes_lnglat", boxes_ll, px[len(pts_ll):], 4)):
        out = ~np.isfinite(part).all(axis=1) | (part[:, 0] < 0) | (part[:, 0] > w) | (part[:, 1] < 0) | (part[:, 1] > h)
        if out.any():
            k = int(np.argmax(out)) // per
            raise InvalidRequest(f"{field_name}.{name}[{k}]", f"{rows[k].tolist()} is outside the image "
                                                              f"({w} × {h} px in {geo.name})")
    points = px[:len(pts_ll)] - 0.5
    quads = px[len(pts_ll):].reshape(-1, 4, 2) - 0.5
    boxes = np.concatenate([quads.min(axis=1), quads.max(axis=1)], axis=1).reshape(-1, 4)
    return points, boxes


def parse_prompts(obj: dict, size: tuple[int, int], field_name: str, max_prompts: int,
                  geo: GeoRef | None = None) -> Prompts | None:
    """The `Prompts` of an instance dict (`points`, `points_lnglat`, `labels`, `boxes`, `boxes_lnglat`,
    `mask_input`), None when it has none.

    `size`: (H, W) of the image. Points are (x, y) and boxes (x0, y0, x1, y1), image px, SAM convention;
    `points_lnglat` / `boxes_lnglat` are placed through `geo` (see `_lnglat_prompts`) and follow the pixel
    ones (labels run over `points` then `points_lnglat`; boxes likewise).
    Labels default to 1 (include) for every point.
    """
    points = _number_rows(obj.get("points") or [], 2, f"{field_name}.points")
    boxes = _number_rows(obj.get("boxes") or [], 4, f"{field_name}.boxes")
    pts_ll = _number_rows(obj.get("points_lnglat") or [], 2, f"{field_name}.points_lnglat")
    boxes_ll = _number_rows(obj.get("boxes_lnglat") or [], 4, f"{field_name}.boxes_lnglat")
    labels_in = obj.get("labels")
    if labels_in is not None and (not isinstance(labels_in, list | tuple) or not all(
            v in (0, 1) and not isinstance(v, float | bool) for v in labels_in)):
        raise InvalidRequest(f"{field_name}.labels", "expected a list of 1 (include) or 0 (exclude)")
    return checked_prompts(points, boxes, pts_ll, boxes_ll, labels_in, obj.get("mask_input"), size, field_name,
                           max_prompts, geo)


def checked_prompts(points: np.ndarray, boxes: np.ndarray, pts_ll: np.ndarray, boxes_ll: np.ndarray,
                    labels_in, mask_input, size: tuple[int, int], field_name: str, max_prompts: int,
                    geo: GeoRef | None = None) -> Prompts | None:
    """The `Prompts` of typed prompt values (what the edge validated: types and finiteness), checked against the
    image and the limits; None when there are none.

    `points` (N, 2) and `boxes` (B, 4) float64 image px, SAM convention; `pts_ll` (P, 2) / `boxes_ll` (Q, 4)
    float64 lng/lat degrees (placed through `geo`, see `_lnglat_prompts`); `labels_in`: N + P ints 0/1 or None
    (all include); `mask_input`: encoded low-res logits (`decode_array`'s input) or None. `size`: (H, W).
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ll_points, ll_boxes = _lnglat_prompts(np.asarray(pts_ll, np.float64).reshape(-1, 2),
                                          np.asarray(boxes_ll, np.float64).reshape(-1, 4), size, field_name, geo)
    if labels_in is None:
        labels = np.ones(len(points) + len(ll_points), np.int32)
    else:
        n_points = len(points) + len(ll_points)
        if len(labels_in) != n_points:
            raise InvalidRequest(f"{field_name}.labels", f"{len(labels_in)} labels for {n_points} points")
        labels = np.asarray(labels_in, np.int32).reshape(-1)
    if len(points) + len(ll_points) + len(boxes) + len(ll_boxes) > max_prompts:
        raise InvalidRequest(field_name, f"{len(points) + len(ll_points)} points + {len(boxes) + len(ll_boxes)} "
                                         f"boxes is over the limit of "
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
    points, boxes = np.concatenate([points, ll_points]), np.concatenate([boxes, ll_boxes])
    if mask_input is not None:
        mask_input = decode_array(mask_input, f"{field_name}.mask_input")
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


def parse_concept(obj: dict, size: tuple[int, int], field_name: str, max_prompts: int) -> ConceptPrompt | None:
    """The concept prompts of an instance dict, None when it has none: `text` (a phrase), `exemplar_boxes`
    ([[x0, y0, x1, y1], …] image px, SAM convention, inside the image of `size` (H, W)) and `exemplar_labels`
    (1 positive, 0 negative; default 1 each). Refused (422 naming the field) together with point/box prompts."""
    text_in, boxes_in, labels_in = obj.get("text"), obj.get("exemplar_boxes"), obj.get("exemplar_labels")
    boxes = _number_rows(boxes_in or [], 4, f"{field_name}.exemplar_boxes") if boxes_in else None
    if labels_in is not None and (boxes_in or text_in is not None) and (not isinstance(labels_in, list | tuple) or not all(
            v in (0, 1) and not isinstance(v, float | bool) for v in labels_in)):
        raise InvalidRequest(f"{field_name}.exemplar_labels", "expected a list of 1 (positive) or 0 (negative)")
    clicks = [k for k in ("points", "points_lnglat", "boxes", "boxes_lnglat", "labels", "mask_input")
              if obj.get(k) is not None]
    return checked_concept(text_in, boxes, labels_in, clicks, size, field_name, max_prompts)


def checked_concept(text_in, boxes, labels_in, clicks: list[str], size: tuple[int, int], field_name: str,
                    max_prompts: int) -> ConceptPrompt | None:
    """The `ConceptPrompt` of typed concept values, None when there are none: `text_in` (a phrase, normalised by
    `check_text`) or None; `boxes`: (E, 4) float64 exemplar boxes, image px, SAM convention, or None;
    `labels_in`: E of 0/1 or None (all positive); `clicks`: the names of the point/box prompts also given
    (refused with concepts). Checked against the image of `size` (H, W) and `max_prompts`."""
    if text_in is None and (boxes is None or not len(boxes)):
        if labels_in:
            raise InvalidRequest(f"{field_name}.exemplar_labels", "labels without exemplar_boxes")
        return None
    text = check_text(text_in, f"{field_name}.text") if text_in is not None else None
    boxes = np.asarray(boxes if boxes is not None else [], np.float64).reshape(-1, 4)
    if len(boxes) > max_prompts:
        raise InvalidRequest(f"{field_name}.exemplar_boxes", f"{len(boxes)} exemplar boxes is over the limit of "
                                                             f"{max_prompts} prompts per instance")
    h, w = size
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        if not (0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
            raise InvalidRequest(f"{field_name}.exemplar_boxes[{k}]", f"{boxes[k].tolist()} is not [x0, y0, x1, y1] "
                                                                      f"with x0 ≤ x1, y0 ≤ y1 inside the {w} × {h} "
                                                                      "image")
    if labels_in is None:
        labels = np.ones(len(boxes), np.int32)
    else:
        if len(labels_in) != len(boxes):
            raise InvalidRequest(f"{field_name}.exemplar_labels", f"{len(labels_in)} labels for {len(boxes)} "
                                                                  "exemplar boxes")
        labels = np.asarray(labels_in, np.int32).reshape(-1)
    if clicks:
        name = "text" if text is not None else "exemplar_boxes"
        raise InvalidRequest(f"{field_name}.{name}", f"concept prompts (find every instance) cannot be mixed with "
                                                     f"{clicks[0]} (segment one object); send two instances")
    return ConceptPrompt(text=text, boxes=boxes.astype(np.float32), labels=labels)


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


OPTION_DEFAULTS = {"multimask": False, "mask_format": "rle", "return_logits": False,
                   "score_threshold": DEFAULT_SCORE_THRESHOLD, **{f.name: f.default for f in fields(AmgOptions)}}


def checked_options(given: dict, field_name: str, limits: PredictLimits, automatic: bool = True) -> dict:
    """Every option of an instance: `OPTION_DEFAULTS` overridden by `given` (typed values the edge validated),
    checked against this server's grid limits (`max_points_per_side`, `max_crop_layers`) when the instance runs
    the automatic-mask grid (`automatic`); an instance with prompts does not use the grid options and is not
    refused by them."""
    out = {**OPTION_DEFAULTS, **given}
    fn = field_name
    if not 1 <= out["points_per_side"] <= (limits.max_points_per_side if automatic else math.inf):
        raise InvalidRequest(f"{fn}.points_per_side", f"must be in [1, {limits.max_points_per_side}], "
                                                      f"got {out['points_per_side']}")
    if not 0 <= out["crop_n_layers"] <= (limits.max_crop_layers if automatic else math.inf):
        raise InvalidRequest(f"{fn}.crop_n_layers", f"must be in [0, {limits.max_crop_layers}], "
                                                    f"got {out['crop_n_layers']}")
    return out


def parse_options(obj: dict, base: dict, field_name: str, limits: PredictLimits, automatic: bool = True) -> dict:
    """Options of an instance dict (callers without an edge model: the CLI, tests): `base` (e.g. the request's
    `parameters`) overridden by `obj`'s keys, each type- and range-checked, then `checked_options` (`automatic`:
    see there)."""
    defaults = OPTION_DEFAULTS
    out = dict(defaults)
    steps = {"regularize": (False, "parameters"), "smooth": (False, "parameters")}  # value, where it came from
    for source, prefix in ((base, "parameters"), (obj, field_name)):
        for key, value in source.items():
            if key in defaults and value is not None:
                out[key] = _option(value, defaults[key], f"{prefix}.{key}")
            elif key in steps and value is not None:
                steps[key] = (value, prefix)
    fn = field_name
    out["postprocess"] = _postprocess_option(steps, fn)
    if out["postprocess"] is not None and out["mask_format"] != "polygon":
        key = out["postprocess"].name
        raise InvalidRequest(f"{steps[key][1]}.{key}", f"applies to polygon outlines: set mask_format to "
                                                       f"\"polygon\" (it is {out['mask_format']!r})")
    if out["mask_format"] not in MASK_FORMATS:
        raise InvalidRequest(f"{fn}.mask_format", f"must be one of {', '.join(MASK_FORMATS)}, "
                                                  f"not {out['mask_format']!r}")
    out = checked_options(out, field_name, limits, automatic)
    if out["crop_n_points_downscale_factor"] < 1:
        raise InvalidRequest(f"{fn}.crop_n_points_downscale_factor", "must be ≥ 1")
    for key in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh", "score_threshold"):
        if not 0.0 <= out[key] <= 1.0:
            raise InvalidRequest(f"{fn}.{key}", f"must be in [0, 1], got {out[key]}")
    if not 0.0 <= out["crop_overlap_ratio"] < 1.0:
        raise InvalidRequest(f"{fn}.crop_overlap_ratio", "must be in [0, 1)")
    if out["min_mask_region_area"] < 0 or out["stability_score_offset"] < 0:
        raise InvalidRequest(fn, "min_mask_region_area and stability_score_offset must be ≥ 0")
    return out


def _postprocess_option(steps: dict, fn: str) -> PostProcess | None:
    """`regularize` / `smooth` (each (value, "parameters" or the instance's field name)) as one step; errors
    name the field where the offending value was given (e.g. `instances[0].smooth.iterations`)."""
    try:
        return choose_postprocess(steps["regularize"][0], steps["smooth"][0])
    except InvalidRequest as e:
        prefix = steps[e.field.split(".")[0]][1] if e.field != "smooth" else fn
        raise InvalidRequest(f"{prefix}.{e.field}", e.message.split(": ", 1)[1]) from None


@dataclass(frozen=True)
class InstanceQuery:
    """One instance as the edge (the pydantic models of `api/`) validated it: types, finite numbers, labels
    0/1, option ranges and names. What is left to check needs the image or this server's limits
    (`build_instance`).

    `image`: base64 PNG / JPEG / GeoTIFF (a data: URL or {"b64": …}). `points` (N, 2) / `boxes` (B, 4) float64
    image px, SAM convention; `points_lnglat` (P, 2) / `boxes_lnglat` (Q, 4) float64 lng/lat degrees; `labels`:
    N + P of 0/1; `mask_input`: encoded low-res logits. Concept prompts: `text` (a phrase), `exemplar_boxes`
    (E, 4) float64 image px, SAM convention, `exemplar_labels` E of 0/1. Each None when not given. `options`:
    the options given (the instance's over the request's parameters), typed.
    """

    image: object
    points: np.ndarray | None = None
    boxes: np.ndarray | None = None
    points_lnglat: np.ndarray | None = None
    boxes_lnglat: np.ndarray | None = None
    labels: tuple[int, ...] | None = None
    mask_input: object = None
    text: str | None = None
    exemplar_boxes: np.ndarray | None = None
    exemplar_labels: tuple[int, ...] | None = None
    options: dict = field(default_factory=dict)
    from_parameters: frozenset = frozenset()
    """The keys of `options` whose value came from the request's parameters (errors name them there)."""

    CLICK_KEYS = ("points", "points_lnglat", "boxes", "boxes_lnglat", "labels", "mask_input")


def build_instance(q: InstanceQuery, field_name: str, limits: PredictLimits, image: np.ndarray,
                   valid: np.ndarray | None = None, geo: GeoRef | None = None) -> Instance:
    """The `Instance` of a typed query whose image is decoded (`image` (H, W, 3) uint8 RGB, `valid` (H, W) bool
    or None, `geo`): prompts checked against the image, options and work against `limits`."""
    given = [k for k in (*InstanceQuery.CLICK_KEYS, "text", "exemplar_boxes", "exemplar_labels")
             if getattr(q, k) is not None and (isinstance(getattr(q, k), str | dict) or len(getattr(q, k)))]
    opts = checked_options(q.options, field_name, limits, automatic=not given)  # no prompt: the automatic grid
    steps = {k: (q.options.get(k) or False, "parameters" if k in q.from_parameters else field_name)
             for k in POSTPROCESS_KEYS}
    opts["postprocess"] = _postprocess_option(steps, field_name)
    if opts["postprocess"] is not None and opts["mask_format"] != "polygon":
        key = opts["postprocess"].name
        raise InvalidRequest(f"{steps[key][1]}.{key}", f"applies to polygon outlines: set mask_format to "
                                                       f"\"polygon\" (it is {opts['mask_format']!r})")
    clicks = [k for k in InstanceQuery.CLICK_KEYS if getattr(q, k) is not None]
    concept = checked_concept(q.text, q.exemplar_boxes, q.exemplar_labels, clicks, image.shape[:2], field_name,
                              limits.max_prompts)
    if concept is not None:
        return _concept_instance(opts, concept, image, valid, geo, field_name)

    def rows(value, width: int) -> np.ndarray:
        return np.zeros((0, width)) if value is None else value

    prompts = checked_prompts(rows(q.points, 2), rows(q.boxes, 4), rows(q.points_lnglat, 2),
                              rows(q.boxes_lnglat, 4), q.labels, q.mask_input, image.shape[:2], field_name,
                              limits.max_prompts, geo)
    return _instance(opts, prompts, image, valid, geo, field_name, limits)


def _instance(opts: dict, prompts: Prompts | None, image: np.ndarray, valid, geo, field_name: str,
              limits: PredictLimits) -> Instance:
    amg = AmgOptions(**{f.name: opts[f.name] for f in fields(AmgOptions)})
    if prompts is None and amg.grid_points() > limits.max_grid_points:
        raise LimitExceeded(f"{field_name}.points_per_side", f"automatic mode would decode {amg.grid_points()} "
                                                             f"grid points, over the limit of "
                                                             f"{limits.max_grid_points}", "max_grid_points")
    return Instance(image=image, prompts=prompts, multimask=opts["multimask"], mask_format=opts["mask_format"],
                    return_logits=opts["return_logits"], amg=amg, valid=valid, geo=geo,
                    postprocess=opts["postprocess"])


def parse_instance(obj: dict, field_name: str = "instances[0]", parameters: dict | None = None,
                   limits: PredictLimits = PredictLimits(), image: np.ndarray | None = None,
                   valid: np.ndarray | None = None, geo: GeoRef | None = None) -> Instance:
    """Validate one instance dict (see the module docstring) into an `Instance`: the edge of callers without a
    typed model (the CLI, tests); HTTP requests come typed (`InstanceQuery`, `build_instance`).

    `parameters` holds defaults for every option; the instance's own keys win. Every error names its field,
    e.g. `instances[2].boxes[0]`. `image` skips decoding `obj["image"]` (already decoded by the caller, with
    its `valid` px and `geo` georeferencing when it is a GeoTIFF).
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
    automatic = not any(obj.get(k) for k in PROMPT_KEYS)  # no prompt of any kind: the automatic-mask grid
    opts = parse_options(obj, parameters or {}, field_name, limits, automatic)
    if image is None:
        if "image" not in obj:
            raise InvalidRequest(f"{field_name}.image", "missing: a base64 PNG, JPEG or GeoTIFF is required")
        decoded = decode_any_image(obj["image"], f"{field_name}.image", limits.max_pixels)
        image, valid, geo = decoded.rgb, decoded.valid, decoded.geo
    concept = parse_concept(obj, image.shape[:2], field_name, limits.max_prompts)
    if concept is not None:
        return _concept_instance(opts, concept, image, valid, geo, field_name)
    prompts = parse_prompts(obj, image.shape[:2], field_name, limits.max_prompts, geo)
    return _instance(opts, prompts, image, valid, geo, field_name, limits)


def _concept_instance(opts: dict, concept: ConceptPrompt, image: np.ndarray, valid, geo, field_name: str) -> Instance:
    for key in ("multimask", "return_logits"):
        if opts[key]:
            raise InvalidRequest(f"{field_name}.{key}", "concept prompts answer one mask per instance, without "
                                                        f"logits; {key} applies to point/box prompts")
    return Instance(image=image, mask_format=opts["mask_format"], valid=valid, geo=geo, concept=concept,
                    score_threshold=check_score_threshold(opts["score_threshold"], f"{field_name}.score_threshold"),
                    postprocess=opts["postprocess"])


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


PX_DECIMALS = 3
"""Decimals kept in image-px coordinates of regularized / smoothed outlines (exact outlines are whole px)."""


_UNSET = object()


def encode_outline(mask: np.ndarray, mask_format: str, postprocess: PostProcess | None = None,
                   processed=_UNSET):
    """`encode_mask`, except that "polygon" with a `postprocess` step gives the regularized / smoothed outline
    (image px, pixel-edge frame, rounded to `PX_DECIMALS`, exteriors counter-clockwise); None if empty.
    `processed`: that outline when the caller already has it (`processed_px_geometry`)."""
    if postprocess is None or mask_format != "polygon":
        return encode_mask(mask, mask_format)
    geom = processed_px_geometry(mask, postprocess) if processed is _UNSET else processed
    geom = None if geom is None else rounded(geom, PX_DECIMALS)
    return None if geom is None else geojson_geometry(shapely.orient_polygons(geom, exterior_cw=False))


def processed_px_geometry(mask: np.ndarray, postprocess: PostProcess):
    """The (H, W) bool mask's exact pixel outline, `postprocess`ed, in image px (rasterio convention); None when
    nothing is left. An outline over `ANSWER_MAX_VERTICES` is refused (`InvalidRequest` naming the option)."""
    geom = mask_to_px_geometry(mask, simplify_px=0.0)
    check_budget([geom], postprocess)
    return postprocess_apply(geom, postprocess)


def mask_answer(mask: np.ndarray, inst: Instance, with_geo: bool) -> tuple:
    """(encoded mask, lng/lat geometry, CRS geometry) of one (H, W) bool mask of `inst`: the geometries only
    `with_geo` (else None, None); a post-processed outline is made once for all three."""
    processed = _UNSET
    if inst.postprocess is not None and inst.mask_format == "polygon":
        processed = processed_px_geometry(mask, inst.postprocess)
    encoded = encode_outline(mask, inst.mask_format, inst.postprocess, processed)
    if not with_geo:
        return encoded, None, None
    return (encoded, *geo_geometries(mask, inst.geo, inst.postprocess, processed))


def geo_geometries(mask: np.ndarray, geo: GeoRef, postprocess: PostProcess | None = None, processed=_UNSET
                   ) -> tuple[dict | None, dict | None]:
    """(EPSG:4326 lng/lat geometry, geometry in the image's CRS) of an (H, W) bool mask in image px: GeoJSON
    Polygon/MultiPolygon dicts following pixel edges exactly (no simplification) or, with `postprocess`, the
    regularized / smoothed outline (made in image px, then moved; `processed` when the caller has it),
    exteriors counter-clockwise (RFC 7946); lng/lat rounded to 7 decimals, CRS units to 7 (degrees) or 3
    (metres/feet) decimals; (None, None) for an empty mask."""
    if postprocess is None:
        lnglat = mask_to_geometry(mask, geo.transform, simplify_px=0, crs=geo.crs.to_wkt())
        parts = pixel_polygons(mask) if lnglat is not None else []
        px = None if lnglat is None else parts[0] if len(parts) == 1 else shapely.multipolygons(parts)
    else:
        px = processed_px_geometry(mask, postprocess) if processed is _UNSET else processed
        lnglat = px_geometry_to_lnglat(px, geo.transform, geo.crs.to_wkt())
    if lnglat is None or px is None:
        return None, None
    t = geo.transform
    native = shapely.transform(px, lambda xy: np.column_stack(t @ (xy[:, 0], xy[:, 1])))
    native = rounded(native, 7 if geo.crs.is_geographic else 3)
    native = None if native is None else geojson_geometry(shapely.orient_polygons(native, exterior_cw=False))
    return geojson_geometry(lnglat), native


def predict(engine: Engine, inst: Instance, embedding: Embedding | None = None,
            limits: PredictLimits = PredictLimits()) -> dict:
    """The prediction for one instance.

    With prompts: `{"mode": "prompts", "masks": [[mask] * M] * Q, "scores": [[float] * M] * Q,
    "logits"?: encode_array((Q, M, 256, 256)), "image_size": [H, W], "timings_ms"}` — Q = one query per
    box (or one when there are only points), M = 3 with `multimask` else 1, in the engine's (Q, M) order.
    Without: `{"mode": "automatic", "masks": [{"segmentation", "bbox", "area", "predicted_iou",
    "stability_score", "point_coords", "crop_box"}], "grid_points", "image_size", "timings_ms"}`.
    Masks are encoded as `inst.mask_format` (see `encode_mask`) after clipping to `inst.valid` (nodata px
    are never part of a mask). With `inst.postprocess` (mask_format "polygon" only) every outline is
    regularized / smoothed in image px (`encode_outline`) and the answer carries `postprocess`, the step and its
    parameters. With `mask_format` "polygon" and a georeferenced image (`inst.geo`), each mask
    also comes back as GeoJSON geometry (`geo_geometries`): prompts mode adds `masks_lnglat` and `masks_crs`,
    shaped as `masks`; automatic mode adds `segmentation_lnglat` and `segmentation_crs` to each record; both add
    `crs`, the image CRS's name (e.g. "EPSG:32632", rasterio's `CRS.to_string()`, as segment-geospatial's REST
    API names it, samgeo/api.py `_extract_bboxes_from_raster`).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    card = engine.describe()
    if inst.concept is not None:
        return predict_concept(engine, inst, embedding, t_start)
    require(card, required_capabilities(inst.prompts), "prompts")
    require(card, ["multimask"] if inst.multimask and inst.prompts is not None else [], "multimask")
    if embedding is None:
        t0 = time.perf_counter()
        embedding = engine.embed(inst.image)
        timings["embed"] = _ms(t0)
    h, w = inst.image.shape[:2]
    with_geo = inst.geo is not None and inst.mask_format == "polygon"
    if inst.prompts is None:
        t0 = time.perf_counter()
        records = engine.generate(embedding, inst.amg, inst.image)
        timings["generate"] = _ms(t0)
        t0 = time.perf_counter()
        masks = []
        for r in records:
            seg = r["segmentation"] if inst.valid is None else r["segmentation"] & inst.valid
            encoded, lnglat, native = mask_answer(seg, inst, with_geo)
            rec = {**{k: v for k, v in r.items() if k != "segmentation"}, "segmentation": encoded}
            if with_geo:
                rec["segmentation_lnglat"], rec["segmentation_crs"] = lnglat, native
            masks.append(rec)
        timings["encode"] = _ms(t0)
        timings["total"] = _ms(t_start)
        out = {"mode": "automatic", "masks": masks, "grid_points": inst.amg.grid_points(), "image_size": [h, w]}
        if inst.postprocess is not None:
            out["postprocess"] = inst.postprocess.describe()
        if with_geo:
            out["crs"] = inst.geo.name
        out["timings_ms"] = timings
        return out
    t0 = time.perf_counter()
    result = decode_prompts(engine, embedding, inst.prompts, inst.multimask, limits.decode_bytes)
    timings["decode"] = _ms(t0)
    t0 = time.perf_counter()
    all_masks = result.masks if inst.valid is None else result.masks & inst.valid
    answers = [[mask_answer(m, inst, with_geo) for m in query] for query in all_masks]
    out = {
        "mode": "prompts",
        "masks": [[a[0] for a in query] for query in answers],
        "scores": result.scores.astype(float).tolist(),
        "image_size": [h, w],
    }
    if inst.postprocess is not None:
        out["postprocess"] = inst.postprocess.describe()
    if with_geo:
        out["crs"] = inst.geo.name
        out["masks_lnglat"] = [[a[1] for a in query] for query in answers]
        out["masks_crs"] = [[a[2] for a in query] for query in answers]
    if inst.return_logits:
        out["logits"] = encode_array(result.logits)
    timings["encode"] = _ms(t0)
    timings["total"] = _ms(t_start)
    out["timings_ms"] = timings
    return out


def find_instances(engine: Engine, inst: Instance, embedding: Embedding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every instance of `inst.concept` on the image of `embedding`, as `predict_concept` answers them:
    (masks (N, H, W) bool image px, clipped to `inst.valid`; scores (N,) float64; boxes (N, 4) float64
    x0, y0, x1, y1 image px, SAM convention, as the model predicted them), best score first (ties keep the
    engine's order); instances left empty by the nodata clip are dropped. The caller checks the capability
    (`require_concept`) before embedding."""
    found = engine.find(embedding, inst.concept, inst.score_threshold)
    masks = np.asarray(found.masks, bool)
    if inst.valid is not None:
        masks = masks & inst.valid
    order = sorted((k for k in range(len(found)) if masks[k].any()), key=lambda k: -float(found.scores[k]))
    h, w = inst.image.shape[:2]
    return (masks[order].reshape(len(order), h, w), np.asarray(found.scores, np.float64)[order].reshape(-1),
            np.asarray(found.boxes, np.float64)[order].reshape(-1, 4))


def predict_concept(engine: Engine, inst: Instance, embedding: Embedding | None = None,
                    t_start: float | None = None) -> dict:
    """The prediction for an instance with concept prompts (`inst.concept`): every instance found, best first.

    `{"mode": "concept", "concept": phrase or "exemplar", "score_threshold", "masks": [mask] * N,
    "scores": [float] * N, "boxes": [[x0, y0, x1, y1]] * N (image px, SAM convention, as the model predicted
    them), "image_size": [H, W], "timings_ms"}`; masks encoded as `inst.mask_format` after clipping to
    `inst.valid`; with "polygon" and a georeferenced image also `masks_lnglat`, `masks_crs` and `crs` (as the
    prompts mode). Instances left empty by the nodata clip are dropped.
    """
    t_start = time.perf_counter() if t_start is None else t_start
    timings: dict[str, float] = {}
    concept = inst.concept
    require_concept(engine.describe(), concept, "text", "exemplar_boxes")
    if embedding is None:
        t0 = time.perf_counter()
        embedding = engine.embed(inst.image)
        timings["embed"] = _ms(t0)
    t0 = time.perf_counter()
    masks, scores, boxes = find_instances(engine, inst, embedding)
    timings["find"] = _ms(t0)
    t0 = time.perf_counter()
    h, w = inst.image.shape[:2]
    with_geo = inst.geo is not None and inst.mask_format == "polygon"
    answers = [mask_answer(m, inst, with_geo) for m in masks]
    out = {
        "mode": "concept", "concept": concept_label(concept), "score_threshold": inst.score_threshold,
        "masks": [a[0] for a in answers],
        "scores": [round(float(sc), 6) for sc in scores],
        "boxes": [[float(v) for v in b] for b in boxes],
        "image_size": [h, w],
    }
    if inst.postprocess is not None:
        out["postprocess"] = inst.postprocess.describe()
    if with_geo:
        out["crs"] = inst.geo.name
        out["masks_lnglat"] = [a[1] for a in answers]
        out["masks_crs"] = [a[2] for a in answers]
    timings["encode"] = _ms(t0)
    timings["total"] = _ms(t_start)
    out["timings_ms"] = timings
    return out


# --- the service ----------------------------------------------------------------------------------------

def limits_from_settings(settings) -> PredictLimits:
    """The limits a `samgis.settings.Settings` sets."""
    return PredictLimits(max_pixels=settings.max_image_pixels, max_prompts=settings.max_prompts,
                         max_instances=settings.max_instances, max_points_per_side=settings.max_points_per_side,
                         max_grid_points=settings.max_grid_points, max_mask_pixels=settings.max_mask_pixels,
                         max_answer_bytes=settings.max_answer_bytes)


def add_mask_pixels(total: int, cost: int, field: str, limits: PredictLimits) -> int:
    """`total` + `cost` decoded mask pixels of one request, refused (before decoding) over the limit."""
    total += cost
    if limits.max_mask_pixels is not None and total > limits.max_mask_pixels:
        raise LimitExceeded(field, f"the request would decode {total} mask pixels in all, over the limit of "
                                   f"{limits.max_mask_pixels}; split it", "max_mask_pixels")
    return total


def answer_bytes(content, limits: PredictLimits, field: str = "instances") -> bytes:
    """`content` as compact UTF-8 JSON, refused when over `limits.max_answer_bytes`."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    if limits.max_answer_bytes is not None and len(body) > limits.max_answer_bytes:
        raise LimitExceeded(field, f"the answer would be {len(body)} bytes, over the limit of "
                                   f"{limits.max_answer_bytes}; ask for fewer masks, rle masks or no logits",
                            "max_answer_bytes")
    return body


def image_cache_key(image: np.ndarray, model_id: str, embedding_version) -> tuple:
    """Embedding cache key of a plain (H, W, 3) uint8 image: ("image", SHA-256 of its pixels, model id,
    embedding version)."""
    return ("image", image_digest(image), model_id, embedding_version)


class ImagePredictService:
    """Plain images through one engine, the shared embedding cache and the model's encoder queue.

    `encoder_queue`: a `samgis.encoder_queue.EncoderQueue` (bounded; 503 when full), or None to run encoder
    passes straight on a worker thread (CLI, tests).
    """

    def __init__(self, engine: Engine, cache: EmbeddingCache, limits: PredictLimits = PredictLimits(),
                 encoder_queue=None):
        self.engine = engine
        self.cache = cache
        self.limits = limits
        self.encoder_queue = encoder_queue
        self._version = engine.describe().embedding_version

    async def embedding_for(self, image: np.ndarray) -> tuple[Embedding, bool]:
        """The embedding of (H, W, 3) uint8 `image` and whether it was cached (key: SHA-256 of the pixels,
        model, embedding version)."""
        key = image_cache_key(image, self.engine.model_id, self._version)

        async def compute() -> Embedding:
            if self.encoder_queue is None:
                return await asyncio.to_thread(self.engine.embed, image)
            return await self.encoder_queue.run(self.engine.embed, image)

        return await self.cache.get_or_compute(key, compute)

    async def predict_instances(self, instances: list[InstanceQuery]) -> list[dict]:
        """One prediction per typed instance (validated at the edge), in order; see `predict`.
        Each also gets `cache` (hit/miss), `model` and `timings_ms` with `image` and `embed`."""
        limits = self.limits
        if len(instances) > limits.max_instances:
            raise InvalidRequest("instances", f"{len(instances)} instances is over the limit of "
                                              f"{limits.max_instances} per request")
        out = []
        mask_pixels = 0
        for i, query in enumerate(instances):
            field_name = f"instances[{i}]"
            t_start = time.perf_counter()
            decoded = await asyncio.to_thread(decode_any_image, query.image, f"{field_name}.image",
                                              limits.max_pixels)
            image = decoded.rgb
            t_image = _ms(t_start)
            inst = build_instance(query, field_name, limits, image, decoded.valid, decoded.geo)
            if inst.concept is not None:  # refused before the encoder runs; one window of masks counted
                require_concept(self.engine.describe(), inst.concept, f"{field_name}.text",
                                f"{field_name}.exemplar_boxes")
                cost = max(image.shape[0] * image.shape[1], LOW_RES * LOW_RES)
            else:
                cost = check_work(inst.prompts, inst.multimask, inst.amg, image.shape[:2], field_name, limits,
                                  inst.return_logits)
            mask_pixels = add_mask_pixels(mask_pixels, cost, field_name, limits)
            t0 = time.perf_counter()
            embedding, hit = await self.embedding_for(image)
            t_embed = _ms(t0)
            pred = await asyncio.to_thread(predict, self.engine, inst, embedding, limits)
            timings = {"image": t_image, "embed": t_embed, **pred["timings_ms"]}
            timings["total"] = _ms(t_start)
            pred.update(cache="hit" if hit else "miss", model=self.engine.model_id, timings_ms=timings)
            out.append(pred)
        return out

    def masks_for(self, image: np.ndarray, embedding: Embedding, queries: list[Prompts],
                  multimask: bool) -> list[tuple[list[np.ndarray], list[float]]]:
        """Per query, its masks ((H, W) bool, image px) and scores; no queries → every automatic mask
        (default options) as its own one-mask entry. Blocks (decodes)."""
        if not queries:
            records = self.engine.generate(embedding, AmgOptions(), image)
            return [([r["segmentation"]], [float(r["predicted_iou"])]) for r in records]
        out = []
        for prompts in queries:
            result = decode_prompts(self.engine, embedding, prompts, multimask, self.limits.decode_bytes)
            out.append((list(result.masks[0]), [float(s) for s in result.scores[0]]))
        return out
