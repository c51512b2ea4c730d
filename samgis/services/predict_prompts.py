"""The prompts of one plain image, as sent → as the engine takes them: points, boxes and `mask_input` (`Prompts`),
or concept prompts (`ConceptPrompt`), checked against the image and the limits; every refusal names its field
(e.g. `instances[2].boxes[0]`).

Frame: image px, SAM convention: (x, y) = (column, row) in pixels of the decoded image after its EXIF orientation
is applied; integer values are pixel centres, exactly what `SamPredictor` takes. Lng/lat prompts (EPSG:4326) are
placed through the image's georeferencing (continuous px, rasterio convention, minus 0.5).
"""

from __future__ import annotations

import math

import numpy as np

from samgis.engine.protocol import ConceptPrompt, Prompts
from samgis.errors import InvalidRequest
from samgis.imaging.geotiff import GeoRef
from samgis.imaging.masks import decode_array
from samgis.services.concepts import check_text
from samgis.services.limits import LOW_RES

CLICK_KEYS = ("points", "points_lnglat", "boxes", "boxes_lnglat", "labels", "mask_input")
"""The keys of an instance's point/box prompts (one object), never mixed with concept prompts (every instance)."""


def _is_label_list(value) -> bool:
    """Whether `value` is a list of the ints 0 and 1 (not floats, not booleans)."""
    return isinstance(value, list | tuple) and all(v in (0, 1) and not isinstance(v, float | bool) for v in value)


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
    if labels_in is not None and not _is_label_list(labels_in):
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
    if labels_in is not None and (boxes_in or text_in is not None) and not _is_label_list(labels_in):
        raise InvalidRequest(f"{field_name}.exemplar_labels", "expected a list of 1 (positive) or 0 (negative)")
    clicks = [k for k in CLICK_KEYS if obj.get(k) is not None]
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
