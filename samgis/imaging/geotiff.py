"""GeoTIFF in: base64 / file bytes → (H, W, 3) uint8 RGB, validity and georeferencing, bounded before reading.

The GeoTIFF is opened from memory (rasterio `MemoryFile`); its size is checked from the header before any pixel
is read. Bands 1, 2, 3 are used when the file has three or more (band 1 as grey otherwise); data that is not
uint8 gets the raster reader's percentile stretch (`samgis.geo.readers.raster.stretch_ranges`, over the whole
image), so a GeoTIFF sent here looks as it does as a configured raster source. Pixels the file marks as nodata
(or alpha 0) are invalid: black in the RGB, and masks are clipped to the valid pixels by the caller.

Frames: `rgb[row, col]` is image px (row 0 at the top, as the file stores it); `transform` maps continuous
image px (col, row; rasterio convention, pixel (i, j) spans x in [j, j+1), y in [i, i+1)) to `crs`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pyproj
import rasterio
import rasterio.io
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from samgis.errors import ImageTooLarge, InvalidRequest
from samgis.geo.readers.raster import bands_to_rgb, stretch_ranges

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff(raw: bytes) -> bool:
    """Whether `raw` starts as a TIFF (classic or BigTIFF, either byte order)."""
    return raw[:4] in TIFF_MAGIC


@dataclass(frozen=True)
class GeoRef:
    """Georeferencing of an image: `transform` (continuous image px (col, row) → `crs`), `crs` (a pyproj CRS)
    and `name` (the CRS as rasterio's `CRS.to_string()` spells it, e.g. "EPSG:32632")."""

    transform: Affine
    crs: pyproj.CRS
    name: str

    def lnglat_to_px(self, lnglat: np.ndarray) -> np.ndarray:
        """(N, 2) float64 lng/lat degrees (EPSG:4326) → (N, 2) float64 continuous image px (col, row),
        rasterio convention (pixel (i, j) spans [j, j+1) × [i, i+1)); NaN/inf where the CRS cannot take them."""
        pts = np.asarray(lnglat, np.float64).reshape(-1, 2)
        t = pyproj.Transformer.from_crs(4326, self.crs, always_xy=True)
        with np.errstate(invalid="ignore"):
            x, y = t.transform(pts[:, 0], pts[:, 1], errcheck=False)
            col, row = ~self.transform @ (np.asarray(x, np.float64), np.asarray(y, np.float64))
        return np.column_stack([col, row]).astype(np.float64)


@dataclass(frozen=True)
class DecodedGeoTiff:
    """`rgb` (H, W, 3) uint8, image px; `valid` (H, W) bool (False where nodata) or None when all valid;
    `geo` None when the file has no CRS or no geotransform."""

    rgb: np.ndarray
    valid: np.ndarray | None
    geo: GeoRef | None


def read_geotiff(raw: bytes, field_name: str = "image", max_pixels: int | None = None) -> DecodedGeoTiff:
    """Decode TIFF/GeoTIFF file bytes (see the module docstring). `InvalidRequest(field_name)` for anything
    undecodable or of an unusable band layout, `ImageTooLarge` when W × H is over `max_pixels` (from the
    header)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.io.MemoryFile(raw) as mem, mem.open() as ds:
                w, h = ds.width, ds.height
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageTooLarge(field_name, f"the image is {w} × {h} = {w * h} pixels, over the limit of "
                                                    f"{max_pixels} pixels; send a smaller image")
                if ds.count < 1:
                    raise InvalidRequest(field_name, "the TIFF has no bands")
                bands = [1, 2, 3] if ds.count >= 3 else [1]
                dtype = np.dtype(ds.dtypes[0])
                if dtype.kind not in "uif":
                    raise InvalidRequest(field_name, f"unsupported TIFF data type {dtype} (need integers or floats)")
                data = ds.read(bands, masked=True)
                crs, transform = ds.crs, ds.transform
    except (ImageTooLarge, InvalidRequest):
        raise
    except (RasterioError, ValueError, MemoryError) as exc:
        raise InvalidRequest(field_name, f"not a decodable TIFF/GeoTIFF ({exc})") from None
    valid = ~np.ma.getmaskarray(data).all(axis=0)
    # uint8 stays as it is; anything else is stretched in float32 (half float64's memory: an image at the
    # default pixel limit is ~200 MB of float32 values, and display stretching needs no more precision)
    values = np.ma.getdata(data)
    values = values if dtype == np.uint8 else values.astype(np.float32)
    if values.dtype.kind == "f":
        valid &= np.isfinite(values).all(axis=0)
    values[:, ~valid] = 0
    ranges = None if dtype == np.uint8 else stretch_ranges(values, valid)
    rgb = bands_to_rgb(values, valid, ranges)
    geo = None
    if crs is not None and transform != Affine.identity():
        try:
            geo = GeoRef(transform, pyproj.CRS.from_user_input(crs.to_wkt()), crs.to_string())
        except pyproj.exceptions.CRSError as exc:
            raise InvalidRequest(field_name, f"the GeoTIFF's CRS cannot be read ({exc})") from None
    return DecodedGeoTiff(rgb, None if valid.all() else valid, geo)


def decode_any_image(data, field_name: str = "image", max_pixels: int | None = None) -> DecodedGeoTiff:
    """A base64 PNG, JPEG or (Geo)TIFF (as `samgis.imaging.images.image_bytes` takes it) decoded: TIFFs by
    `read_geotiff`, PNG/JPEG by `samgis.imaging.images.read_image` (no validity, no georeferencing)."""
    from samgis.imaging.images import DEFAULT_MAX_PIXELS, image_bytes, read_image

    raw = image_bytes(data, field_name)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if is_tiff(raw):
        return read_geotiff(raw, field_name, limit)
    return DecodedGeoTiff(read_image(raw, field_name, limit), None, None)
