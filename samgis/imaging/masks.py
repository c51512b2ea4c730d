"""Mask and array codecs: COCO RLE (pycocotools-compatible), PNG, pixel polygons, base64 float arrays.

Masks are (H, W) bool in image px (row, col); polygons are in pixel edges, rasterio convention (pixel
(row i, col j) covers x in [j, j+1), y in [i, i+1)).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
import shapely
from PIL import Image
from pycocotools import mask as coco_mask

from samgis.errors import InvalidRequest
from samgis.vector.polygons import geojson_geometry, pixel_polygons

MASK_FORMATS = ("rle", "png", "polygon")


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
