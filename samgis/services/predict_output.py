"""The masks of a plain-image answer, encoded: COCO RLE, PNG or pixel polygons (`encode_mask`), regularized /
smoothed outlines (`samgis.vector.postprocess`), and for georeferenced images each mask's geometry in lng/lat and
in the image's CRS; and the answer as JSON bytes within `max_answer_bytes`.

Frame of outlines: *pixel edges, rasterio convention*: pixel (row i, col j) covers x in [j, j+1), y in [i, i+1)
(a prompt at (x, y), SAM convention, sits at (x + 0.5, y + 0.5) in this frame).
"""

from __future__ import annotations

import json

import numpy as np
import shapely

from samgis.errors import LimitExceeded
from samgis.imaging.geotiff import GeoRef
from samgis.imaging.masks import encode_mask
from samgis.services.limits import PredictLimits
from samgis.services.predict_request import Instance
from samgis.vector.polygons import (geojson_geometry, mask_to_geometry, mask_to_px_geometry, pixel_polygons,
                                    px_geometry_to_lnglat, rounded)
from samgis.vector.postprocess import PostProcess, apply as postprocess_apply, check_budget

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


def mask_answer(mask: np.ndarray, inst: Instance) -> tuple:
    """(encoded mask, lng/lat geometry, CRS geometry) of one (H, W) bool mask of `inst`, image px: the geometries
    only `with_geo(inst)` (else None, None); a post-processed outline is made once for all three."""
    processed = _UNSET
    if inst.postprocess is not None and inst.mask_format == "polygon":
        processed = processed_px_geometry(mask, inst.postprocess)
    encoded = encode_outline(mask, inst.mask_format, inst.postprocess, processed)
    if not with_geo(inst):
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



def with_geo(inst: Instance) -> bool:
    """Whether `inst`'s masks also come back as geometry in lng/lat and in the image's CRS: mask_format
    "polygon" on a georeferenced image."""
    return inst.geo is not None and inst.mask_format == "polygon"


def answer_fields(inst: Instance, lnglat: list | None = None, native: list | None = None) -> dict:
    """What an answer carries after its masks: `postprocess` (the step and its parameters) when `inst` has one;
    with geometries (`with_geo`) `crs`, the image CRS's name, and, when given, `masks_lnglat` / `masks_crs` (the
    masks' `geo_geometries`, shaped as `masks`)."""
    out = {}
    if inst.postprocess is not None:
        out["postprocess"] = inst.postprocess.describe()
    if with_geo(inst):
        out["crs"] = inst.geo.name
        if lnglat is not None:
            out["masks_lnglat"], out["masks_crs"] = lnglat, native
    return out


def answer_bytes(content, limits: PredictLimits, field: str = "instances") -> bytes:
    """`content` as compact UTF-8 JSON, refused when over `limits.max_answer_bytes`."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    if limits.max_answer_bytes is not None and len(body) > limits.max_answer_bytes:
        raise LimitExceeded(field, f"the answer would be {len(body)} bytes, over the limit of "
                                   f"{limits.max_answer_bytes}; ask for fewer masks, rle masks or no logits",
                            "max_answer_bytes")
    return body
