"""The answer of a map request: window masks → GeoJSON features (EPSG:4326) with their properties, and the
`samgis` foreign member saying how the answer was made (window, cache, timings, model, source).

Masks are (H, W) bool in window px (rasterio convention: pixel (row i, col j) covers x in [j, j+1), y in
[i, i+1)); the window's affine and CRS take their outlines to lng/lat.
"""

from __future__ import annotations

import numpy as np

from samgis.engine.protocol import ConceptPrompt
from samgis.errors import LimitExceeded
from samgis.geo.sources import TileSource
from samgis.geo.tiles import Window
from samgis.services.concepts import concept_label, exemplar_counts
from samgis.services.map_query import EverythingQuery
from samgis.services.timing import Timer
from samgis.vector.polygons import (drop_near_duplicates, feature_collection, mask_to_px_geometry,
                                    px_geometries_to_features)
from samgis.vector.postprocess import ANSWER_MAX_VERTICES, PostProcess, describe as describe_postprocess

DEDUPE_IOU = 0.9
"""Automatic masks whose polygon overlaps a better-scored one's with at least this IoU are dropped."""


def count_vertices(geometry: dict) -> int:
    """Positions in a GeoJSON Polygon / MultiPolygon (closing positions included)."""
    coords = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        return sum(len(ring) for ring in coords)
    return sum(len(ring) for poly in coords for ring in poly)


def check_vertices(features: list[dict], max_answer_vertices: int | None) -> None:
    """Refuse an answer of more polygon vertices than `max_answer_vertices` (before it is serialised)."""
    if max_answer_vertices is None:
        return
    n = sum(count_vertices(f["geometry"]) for f in features)
    if n > max_answer_vertices:
        raise LimitExceeded("simplify_px", f"the answer would hold {n} polygon vertices, over the limit of "
                                           f"{max_answer_vertices}; raise simplify_px or min_area_px, "
                                           "or ask for fewer masks", "max_answer_vertices")


def answer(features: list[dict], meta: dict, timer: Timer, t_start: float, max_answer_vertices: int | None) -> dict:
    """The RFC 7946 FeatureCollection of `features` with `meta` as its `samgis` foreign member, once the answer
    is checked against `max_answer_vertices`; `timer` (whose `timings` `meta` holds) gets its `total`."""
    check_vertices(features, max_answer_vertices)
    timer.total(t_start)
    return feature_collection(features, samgis=meta)


def answer_meta(window: Window, zoom_requested: int, hit: bool, timer: Timer, model_id: str, source: TileSource,
                postprocess: PostProcess | None = None) -> dict:
    """The `samgis` foreign member: how the answer was made."""
    return {
        "window": window.meta(),
        "zoom_requested": zoom_requested,
        "cache": "hit" if hit else "miss",
        "timings_ms": timer.timings,
        "model": model_id,
        "source": source.id,
        "attribution": source.attribution,
        "postprocess": describe_postprocess(postprocess),
    }


def feature_properties(window: Window, source: TileSource, model_id: str) -> dict:
    """Properties every feature of a window carries."""
    return {"zoom": window.z, "model": model_id, "source": source.id, "attribution": source.attribution}


def concept_meta(concept: ConceptPrompt, threshold: float, features: list[dict]) -> dict:
    """What the `samgis` member of a concept answer adds: the concept, its threshold and the instances found."""
    return {"concept": concept_label(concept), "text": concept.text, "exemplars": exemplar_counts(concept),
            "score_threshold": threshold, "n_instances": len(features)}


def _ranked_features(masks: list[np.ndarray], scores: list, extras: list[dict], window: Window, props: dict,
                     simplify_px: float, min_area_px: float, min_area_m2: float,
                     postprocess: PostProcess | None) -> list[dict]:
    """Masks already in answer order ((H, W) bool each, window px) → GeoJSON features (EPSG:4326) with `props`
    and each mask's `extras`, those smaller than `min_area_m2` dropped (measured after `postprocess`, which
    simplifies on its own: then `simplify_px` is not applied)."""
    simplify = 0.0 if postprocess is not None else simplify_px
    outlines = [mask_to_px_geometry(mask, simplify_px=simplify, min_area_px=min_area_px) for mask in masks]
    features = px_geometries_to_features(outlines, scores, window.affine(), properties=props, crs=window.crs,
                                         postprocess=postprocess, per_feature=extras,
                                         postprocess_max_vertices=ANSWER_MAX_VERTICES)
    return [f for f in features if f["properties"]["area_m2"] >= min_area_m2]


def concept_features(masks: np.ndarray, scores: np.ndarray, window: Window, source: TileSource, model_id: str,
                     label: str, simplify_px: float, min_area_px: float, min_area_m2: float = 0.0,
                     postprocess: PostProcess | None = None) -> list[dict]:
    """Found instances → GeoJSON features (EPSG:4326), one per instance, best score first.

    `masks`: (N, H, W) bool in window px (rasterio convention), `scores`: (N,) float. Properties: those of
    clicks (`score`, `area_m2`, `zoom`, `model`, `source`, `attribution`) plus `concept` (`label`),
    `instance` (0-based rank in the answer, also `mask_index`) and `at_window_edge` (the mask touches the
    window's border, so the object may go on outside it). Instances left empty by `min_area_px`, or smaller
    than `min_area_m2`, are dropped before numbering. `postprocess`: as in `SegmentQuery` (one batch).
    """
    props = {**feature_properties(window, source, model_id), "concept": label}
    order = sorted(range(len(scores)), key=lambda k: -float(scores[k]))  # stable: ties keep the engine's order
    ranked = [masks[k] for k in order]
    extras = [{"at_window_edge": bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())}
              for m in ranked]
    features = _ranked_features(ranked, [scores[k] for k in order], extras, window, props, simplify_px,
                                min_area_px, min_area_m2, postprocess)
    for i, f in enumerate(features):
        f["properties"]["instance"] = f["properties"]["mask_index"] = i
    return features


def record_features(records: list[dict], window: Window, source: TileSource, model_id: str,
                    q: EverythingQuery) -> list[dict]:
    """Automatic-mask records → GeoJSON features (EPSG:4326), best first, filtered and deduplicated.

    `records`: `Engine.generate`'s, `segmentation` (H, W) bool in window px (rasterio
    convention), `bbox` XYWH window px. Order: predicted IoU, then stability score, descending;
    `mask_index` is the rank in the answer. `at_window_edge`: the mask touches the window's border,
    so the object may go on outside it.
    """
    ranked = sorted(records, key=lambda r: (-r["predicted_iou"], -r["stability_score"]))
    extras = []
    for r in ranked:
        mask = r["segmentation"]
        x, y, w, h = r["bbox"]
        edge = x <= 0 or y <= 0 or x + w >= mask.shape[1] - 1 or y + h >= mask.shape[0] - 1
        extras.append({"stability_score": round(float(r["stability_score"]), 4), "at_window_edge": bool(edge)})
    features = _ranked_features([r["segmentation"] for r in ranked], [r["predicted_iou"] for r in ranked], extras,
                                window, feature_properties(window, source, model_id), q.simplify_px,
                                q.min_area_px, q.min_area_m2, q.postprocess)
    features = drop_near_duplicates(features, DEDUPE_IOU)
    for k, f in enumerate(features):
        f["properties"]["mask_index"] = k
    return features
