"""Concept prompts on the map (`SegmentQuery` with text and/or exemplar boxes): every instance of the concept in
the bbox, found with `Engine.find` on the window holding the whole bbox (the area searched, clipped to the
source's footprint, e.g. a raster's extent); instances whose mask has a pixel in the bbox are returned whole.
The window and its embedding are the ones clicks use (`samgis.services.map_windows`), so a concept on a window
already clicked does not embed again. Rules every route follows: `samgis.services.concepts`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import shapely

from samgis.engine.protocol import ConceptPrompt
from samgis.errors import InvalidRequest
from samgis.geo.sources import TileSource
from samgis.geo.tiles import Window
from samgis.services.concepts import check_score_threshold, check_text, concept_label, require_concept
from samgis.services.limits import MapLimits
from samgis.services.map_features import answer, answer_meta, concept_features, concept_meta
from samgis.services.map_query import BBox, SegmentQuery
from samgis.services.map_windows import MapWindows
from samgis.services.timing import Timer


def validate_concept(windows: MapWindows, limits: MapLimits, q: SegmentQuery) -> tuple[TileSource, ConceptPrompt]:
    """The source and the concept of a concept query (its exemplar boxes not yet in px: `boxes` empty, the
    caller places them on the window); every refusal names its field."""
    source = windows.source(q.source, q.zoom)
    q.bbox.check()
    if q.postprocess is not None:
        q.postprocess.check()
    if q.points or q.boxes:
        raise InvalidRequest("prompts", "text/exemplar prompts (find every instance of a concept) and point/box "
                                        "prompts (segment one object) cannot be mixed in one request; send "
                                        "them separately")
    if len(q.texts) > 1:
        i = q.texts[1].index
        raise InvalidRequest(f"prompts[{i}]" if i is not None else "prompts",
                             "one text prompt per request: a concept is one noun phrase (combine words in it, "
                             "e.g. \"red roof\")")
    if len(q.exemplars) > limits.max_prompts:
        raise InvalidRequest("prompts", f"{len(q.exemplars)} exemplar boxes; at most {limits.max_prompts} are "
                                        "allowed")
    if q.multimask:
        raise InvalidRequest("multimask", "concept prompts answer one mask per instance; multimask applies to "
                                          "point/box prompts")
    check_score_threshold(q.score_threshold)
    for t in q.texts:
        check_text(t.text, f"prompts[{t.index}].text" if t.index is not None else "prompts")
    for j, e in enumerate(q.exemplars):
        name = f"prompts[{e.index if e.index is not None else j}]"
        if not (e.south < e.north and e.west < e.east):
            raise InvalidRequest(name, "exemplar box sw must be south-west of ne")
        if not (q.bbox.contains(e.west, e.south) and q.bbox.contains(e.east, e.north)):
            raise InvalidRequest(name, "exemplar box is not inside the bbox")
        footprint = windows.readers(source).footprint_lnglat()
        if footprint is not None and not footprint.intersects(shapely.box(e.west, e.south, e.east, e.north)):
            raise InvalidRequest(name, f"exemplar box is off source {source.id!r} (no pixels there)")
        if e.label not in (0, 1):
            raise InvalidRequest(f"{name}.label", "must be 1 (positive) or 0 (negative)")
    text = check_text(q.texts[0].text, "prompts") if q.texts else None
    # the px boxes come later; a placeholder box keeps ConceptPrompt's own check (text or boxes) honest
    concept = ConceptPrompt(text=text, boxes=np.zeros((len(q.exemplars), 4), np.float32),
                            labels=np.array([e.label for e in q.exemplars], np.int32))
    text_field = f"prompts[{q.texts[0].index}].text" if q.texts and q.texts[0].index is not None else "prompts"
    ex_field = (f"prompts[{q.exemplars[0].index}]" if q.exemplars and q.exemplars[0].index is not None
                else "prompts")
    require_concept(windows.engine.describe(), concept, text_field, ex_field)
    return source, concept


def concept_window(windows: MapWindows, source: TileSource, corners: np.ndarray, zoom: int, field: str) -> Window:
    """`choose_window` for the lng/lat `corners` ((N, 2) float64) of the area to search; a refusal names
    `field` (the area, not a prompt)."""
    try:
        return windows.choose_window(source, corners, zoom)
    except InvalidRequest as e:
        if e.field != "prompts" and not e.field.startswith("prompts["):
            raise
        raise InvalidRequest(field, e.message.split(": ", 1)[-1].replace("the prompts span",
                                                                         "the area to search spans")) from None


def search_area(windows: MapWindows, source: TileSource, b: BBox) -> tuple[np.ndarray, shapely.Polygon | None]:
    """Where a concept query searches: the bbox, clipped to where the source has pixels (its reader's
    `footprint_lnglat`, e.g. a raster's extent), so a map view reaching past a raster's edge searches the part
    on it. Returns (the lng/lat points the window must hold, (N, 2) float64 EPSG:4326: the bbox's corners,
    or the clipped area's vertices; the clipped area, None when the bbox lies wholly on the source).
    A bbox that does not overlap the source is a 422 naming `bbox`."""
    corners = np.array([[b.west, b.north], [b.east, b.south]], np.float64)
    footprint = windows.readers(source).footprint_lnglat()
    view = shapely.box(b.west, b.south, b.east, b.north)
    if footprint is None or footprint.covers(view):
        return corners, None
    area = view.intersection(footprint)
    if area.is_empty or area.area <= 0:
        w, s, e, n = (round(v, 6) for v in footprint.bounds)
        raise InvalidRequest("bbox", f"the bbox does not overlap source {source.id!r} (it lies within lng {w} to "
                                     f"{e}, lat {s} to {n}); move the view onto it")
    return shapely.get_coordinates(area), area


async def find(windows: MapWindows, limits: MapLimits, q: SegmentQuery, deadline: float | None) -> dict:
    """Every instance of the query's concept in the bbox: the window is the one holding the whole bbox, or
    its part on the source (`search_area`), stepping out from `q.zoom` as clicks do; instances with a pixel
    inside the bbox are kept, whole. `deadline`: `time.monotonic()` instant for the tile fetch."""
    t_start = time.perf_counter()
    timer = Timer()
    source, concept = validate_concept(windows, limits, q)
    threshold = check_score_threshold(q.score_threshold)
    b = q.bbox
    bbox_corners = np.array([[b.west, b.north], [b.east, b.south]], np.float64)
    # exemplar corners top-left then bottom-right, so in px each box is (x0, y0, x1, y1), y down
    ex_corners = np.array([((e.west, e.north), (e.east, e.south)) for e in q.exemplars],
                          np.float64).reshape(-1, 2)
    search_pts, clipped = search_area(windows, source, b)
    window = concept_window(windows, source, search_pts, q.zoom, "bbox")
    try:
        valid = await windows.valid(source, window, np.zeros((0, 2)), [])
    except InvalidRequest as e:  # a window of nodata only: the area searched is what is wrong
        if e.field != "prompts":
            raise
        raise InvalidRequest("bbox", e.message.split(": ", 1)[-1].replace("around the prompts",
                                                                         "holding the bbox")) from None
    t0 = timer.add("validate", t_start)

    embedding, hit = await windows.embedding_for(source, window, timer, deadline)
    t0 = time.perf_counter()
    if len(ex_corners):  # continuous window px (rasterio) → SAM convention (integer = pixel centre)
        concept = dataclasses.replace(concept, boxes=window.lnglat_to_px(ex_corners).reshape(-1, 4) - 0.5)
    found = await asyncio.to_thread(windows.engine.find, embedding, concept, threshold)
    t0 = timer.add("find", t0)

    # instances must touch the bbox: its px rectangle in the window (continuous px, rasterio convention)
    (c0, r0), (c1, r1) = window.lnglat_to_px(bbox_corners)
    h, w = embedding.original_size
    inside = np.zeros((h, w), bool)
    rows = slice(max(0, int(np.floor(r0))), max(0, int(np.ceil(r1))))
    inside[rows, max(0, int(np.floor(c0))):max(0, int(np.ceil(c1)))] = True
    masks = np.asarray(found.masks, dtype=bool)
    if valid is not None:  # masks never include nodata px
        masks = masks & valid
    keep = [k for k in range(len(found)) if (masks[k] & inside).any()]
    model_id = windows.engine.model_id
    features = await asyncio.to_thread(concept_features, masks[keep], np.asarray(found.scores)[keep], window,
                                       source, model_id, concept_label(concept), q.simplify_px, q.min_area_px,
                                       postprocess=q.postprocess)
    timer.add("vectorize", t0)
    searched = (b.west, b.south, b.east, b.north) if clipped is None else clipped.bounds
    meta = {**answer_meta(window, q.zoom, hit, timer, model_id, source, q.postprocess),
            **concept_meta(concept, threshold, features),
            "n_found": len(found), "bbox_clipped": clipped is not None,
            "area_searched": [round(float(v), 7) for v in searched]}
    return answer(features, meta, timer, t_start, limits.max_answer_vertices)
