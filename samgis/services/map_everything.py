"""Automatic masks on the map (`EverythingQuery`): every mask the engine's automatic generator finds in the
window holding one lng/lat point, or, with `text`, every instance of that phrase there (`Engine.find`). The
window is the one a click there would get, so the embedding is shared with clicks through the cache.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np

from samgis.engine.protocol import ConceptPrompt, Embedding, FoundInstances, require
from samgis.errors import InvalidRequest, LimitExceeded
from samgis.geo.sources import TileSource
from samgis.geo.tiles import MAX_LAT, Window
from samgis.services.concepts import check_score_threshold, check_text, concept_label
from samgis.services.limits import MapLimits, counted_grid_points
from samgis.services.map_features import DEDUPE_IOU, answer, answer_meta, concept_features, record_features
from samgis.services.map_query import EverythingQuery
from samgis.services.map_windows import MapWindows
from samgis.services.timing import Timer


def validate_everything(windows: MapWindows, limits: MapLimits, q: EverythingQuery) -> TileSource:
    """The source of an automatic-mask query, every option checked (422 naming it; over a limit: 413)."""
    if not (math.isfinite(q.lat) and abs(q.lat) < MAX_LAT):
        raise InvalidRequest("lat", f"{q.lat} is outside the Web Mercator map (|lat| < {MAX_LAT})")
    if not (math.isfinite(q.lng) and abs(q.lng) <= 180):
        raise InvalidRequest("lng", f"{q.lng} is outside [-180, 180]")
    source = windows.source(q.source, q.zoom)
    if q.text is not None:
        check_text(q.text, "text")
        if q.grid_options_given:
            name = q.grid_options_given[0]
            raise InvalidRequest(name, "applies to automatic masks; with text the model finds the phrase's "
                                       "instances (use score_threshold)")
        check_score_threshold(q.score_threshold)
        require(windows.engine.describe(), ["text"], "text")
    elif q.score_threshold is not None:
        raise InvalidRequest("score_threshold", "applies with text only (automatic masks use pred_iou_thresh)")
    else:
        require(windows.engine.describe(), ["automatic"], "model")
    for name in ("simplify_px", "min_area_px", "min_area_m2"):
        value = getattr(q, name)
        if not (math.isfinite(value) and value >= 0):
            raise InvalidRequest(name, f"must be a number ≥ 0, got {value}")
    if q.postprocess is not None:
        q.postprocess.check()
    if q.text is not None:  # no grid is decoded (and no grid option was given)
        return source
    if not 1 <= q.points_per_side <= limits.max_points_per_side:
        raise InvalidRequest("points_per_side", f"must be in [1, {limits.max_points_per_side}] (this server's "
                                                f"max_points_per_side), got {q.points_per_side}")
    for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
        value = getattr(q, name)
        if not 0.0 <= value <= 1.0:
            raise InvalidRequest(name, f"must be in [0, 1], got {value}")
    grid, px = q.amg_options().grid_points(), windows.window_px(source)
    counted = counted_grid_points(grid, px)
    if limits.max_grid_points is not None and counted > limits.max_grid_points:
        raise LimitExceeded("points_per_side", f"a {q.points_per_side} × {q.points_per_side} grid decodes "
                                               f"{grid} points on a {px} px window ({counted:.0f} counted per "
                                               f"1024 × 1024 px), over the limit of {limits.max_grid_points}",
                            "max_grid_points")
    return source


async def segment_everything(windows: MapWindows, limits: MapLimits, q: EverythingQuery,
                             deadline: float | None) -> dict:
    """Every mask SAM's automatic generator finds in the window holding (q.lng, q.lat) at q.zoom; see
    `SegmentService.segment_everything`. `deadline`: `time.monotonic()` instant for the tile fetch."""
    t_start = time.perf_counter()
    timer = Timer()
    source = validate_everything(windows, limits, q)
    try:
        window = windows.choose_window(source, np.array([[q.lng, q.lat]], np.float64), q.zoom)
    except InvalidRequest as e:  # only a point on the very edge of the tile grid fits no window
        if e.field != "prompts":  # a reader's own refusal (e.g. outside a raster), already naming the field
            raise
        field = "lng" if abs(q.lng) == 180 else "lat"
        raise InvalidRequest(field, f"(lat {q.lat}, lng {q.lng}) is on the edge of the tile grid; "
                                    "move it inside") from None
    valid = await windows.valid(source, window, np.array([[q.lng, q.lat]], np.float64), [1])
    timer.add("validate", t_start)

    embedding, hit = await windows.embedding_for(source, window, timer, deadline)
    t0 = time.perf_counter()
    if q.text is not None:
        return await _everything_text(windows, limits, q, source, window, valid, embedding, hit, timer, t_start, t0)
    options = q.amg_options()
    records = await asyncio.to_thread(windows.engine.generate, embedding, options)
    if valid is not None:  # masks never include nodata px
        records = [{**r, "segmentation": np.asarray(r["segmentation"], bool) & valid} for r in records]
    t0 = timer.add("generate", t0)

    model_id = windows.engine.model_id
    features = await asyncio.to_thread(record_features, records, window, source, model_id, q)
    timer.add("vectorize", t0)
    generator = {
        "points_per_side": options.points_per_side, "grid_points": options.grid_points(),
        "pred_iou_thresh": options.pred_iou_thresh, "stability_score_thresh": options.stability_score_thresh,
        "stability_score_offset": options.stability_score_offset, "box_nms_thresh": options.box_nms_thresh,
        "crop_n_layers": options.crop_n_layers, "dedupe_iou": DEDUPE_IOU, "min_area_m2": q.min_area_m2,
        "min_area_px": q.min_area_px, "simplify_px": q.simplify_px,
    }
    meta = {**answer_meta(window, q.zoom, hit, timer, model_id, source, q.postprocess),
            "n_masks": len(features), "n_generated": len(records), "generator": generator}
    return answer(features, meta, timer, t_start, limits.max_answer_vertices)


async def _everything_text(windows: MapWindows, limits: MapLimits, q: EverythingQuery, source: TileSource,
                           window: Window, valid: np.ndarray | None, embedding: Embedding, hit: bool, timer: Timer,
                           t_start: float, t0: float) -> dict:
    """`segment_everything` with `text`: every instance of the phrase in the window (`Engine.find`). `valid`:
    (size, size) bool window px, False on nodata (None: all valid)."""
    concept = ConceptPrompt(text=check_text(q.text, "text"))
    threshold = check_score_threshold(q.score_threshold)
    found: FoundInstances = await asyncio.to_thread(windows.engine.find, embedding, concept, threshold)
    masks = np.asarray(found.masks, dtype=bool)
    if valid is not None:  # masks never include nodata px
        masks = masks & valid
    t0 = timer.add("find", t0)
    model_id = windows.engine.model_id
    features = await asyncio.to_thread(concept_features, masks, np.asarray(found.scores), window, source, model_id,
                                       concept_label(concept), q.simplify_px, q.min_area_px, q.min_area_m2,
                                       q.postprocess)
    timer.add("vectorize", t0)
    generator = {"score_threshold": threshold, "min_area_m2": q.min_area_m2, "min_area_px": q.min_area_px,
                 "simplify_px": q.simplify_px}
    meta = {**answer_meta(window, q.zoom, hit, timer, model_id, source, q.postprocess),
            "n_masks": len(features), "n_generated": len(found), "generator": generator, "concept": concept.text,
            "score_threshold": threshold, "n_instances": len(features)}
    return answer(features, meta, timer, t_start, limits.max_answer_vertices)
