"""One plain-image instance as sent → `Instance`, what `samgis.services.image_predict.predict` runs: the image
decoded, its prompts checked against it (`samgis.services.predict_prompts`), its options typed and checked against
this server's limits. Every refusal names its field, e.g. `instances[2].boxes[0]`.

Two edges: HTTP requests come typed by the pydantic models of `api/` (`InstanceQuery` → `build_instance`);
callers without a typed model (the CLI, tests) hand in dicts (`parse_instance`).

An instance decodes either its prompts (points shared by every query, one query per box, as `Engine.decode`) or,
with no prompts at all, the engine's automatic masks over a point grid, or, with concept prompts (`text`, and/or
`exemplar_boxes` with `exemplar_labels`), finds every instance of the concept (`Engine.find`; rules in
`samgis.services.concepts`; never mixed with points/boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from samgis.engine.protocol import AmgOptions, ConceptPrompt, Prompts
from samgis.errors import InvalidRequest, LimitExceeded
from samgis.imaging.geotiff import GeoRef, decode_any_image
from samgis.imaging.masks import MASK_FORMATS
from samgis.services.concepts import DEFAULT_SCORE_THRESHOLD, check_score_threshold
from samgis.services.limits import PredictLimits
from samgis.services.predict_prompts import (CLICK_KEYS, checked_concept, checked_prompts, parse_concept,
                                             parse_prompts)
from samgis.vector.postprocess import PostProcess
from samgis.vector.postprocess import choose as choose_postprocess


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


def _option(value, default, field_name: str):
    """`value` checked to be of `default`'s type (bool, int, or a finite number as float)."""
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
    out["postprocess"] = _postprocess_option(steps, fn, out["mask_format"])
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


def _postprocess_option(steps: dict, fn: str, mask_format: str) -> PostProcess | None:
    """`regularize` / `smooth` (each (value, "parameters" or the instance's field name)) as one step, which
    needs `mask_format` "polygon"; errors name the field where the offending value was given (e.g.
    `instances[0].smooth.iterations`)."""
    try:
        step = choose_postprocess(steps["regularize"][0], steps["smooth"][0])
    except InvalidRequest as e:
        prefix = steps[e.field.split(".")[0]][1] if e.field != "smooth" else fn
        raise InvalidRequest(f"{prefix}.{e.field}", e.message.split(": ", 1)[1]) from None
    if step is not None and mask_format != "polygon":
        key = step.name
        raise InvalidRequest(f"{steps[key][1]}.{key}", f"applies to polygon outlines: set mask_format to "
                                                       f"\"polygon\" (it is {mask_format!r})")
    return step


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


def build_instance(q: InstanceQuery, field_name: str, limits: PredictLimits, image: np.ndarray,
                   valid: np.ndarray | None = None, geo: GeoRef | None = None) -> Instance:
    """The `Instance` of a typed query whose image is decoded (`image` (H, W, 3) uint8 RGB, `valid` (H, W) bool
    or None, `geo`): prompts checked against the image, options and work against `limits`."""
    given = [k for k in (*CLICK_KEYS, *CONCEPT_KEYS)
             if getattr(q, k) is not None and (isinstance(getattr(q, k), str | dict) or len(getattr(q, k)))]
    opts = checked_options(q.options, field_name, limits, automatic=not given)  # no prompt: the automatic grid
    steps = {k: (q.options.get(k) or False, "parameters" if k in q.from_parameters else field_name)
             for k in POSTPROCESS_KEYS}
    opts["postprocess"] = _postprocess_option(steps, field_name, opts["mask_format"])
    clicks = [k for k in CLICK_KEYS if getattr(q, k) is not None]
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
    """The `Instance` of checked options and `prompts` (None: the automatic-mask grid, checked against
    `max_grid_points`) on `image` (H, W, 3) uint8 RGB with `valid` ((H, W) bool or None) and `geo`."""
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
    """The `Instance` of checked options and a `concept` on `image` (H, W, 3) uint8 RGB with `valid` ((H, W) bool
    or None) and `geo`; the click-only options (multimask, return_logits) are refused."""
    for key in ("multimask", "return_logits"):
        if opts[key]:
            raise InvalidRequest(f"{field_name}.{key}", "concept prompts answer one mask per instance, without "
                                                        f"logits; {key} applies to point/box prompts")
    return Instance(image=image, mask_format=opts["mask_format"], valid=valid, geo=geo, concept=concept,
                    score_threshold=check_score_threshold(opts["score_threshold"], f"{field_name}.score_threshold"),
                    postprocess=opts["postprocess"])
