"""Raster sources (GeoTIFF / COG, any CRS rasterio reads), segmented on their own pixel grid.

A window is `size` × `size` px of one *level* of the raster's grid: the native grid (level 1) or an overview
(level f: one px = f × f native px, f one of the file's overview factors). Window origins lie on a fixed
lattice (multiples of half a window at that level), so nearby clicks and panning reuse embeddings exactly as
tile windows do. The window's affine (window px → raster CRS) and CRS carry polygons to EPSG:4326; nothing is
resampled through Web Mercator for segmentation.

Every read is windowed (rasterio `Window`, `out_shape` at the level's resolution, so GDAL reads overviews when
the file has them); no code path reads a whole raster at full resolution. The percentile stretch of "auto"
rescaling is computed once per source from a read of at most `STATS_PX` px on a side (an overview when there
is one), so colours do not change with the window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mercantile
import numpy as np
import pyproj
import rasterio
import rasterio.io
import rasterio.windows
import shapely
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds

from samgis.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from samgis.geo.readers import WindowImage
from samgis.geo.tiles import lattice_cover

#: Percentiles of the default ("auto") stretch for data that is not uint8.
AUTO_PERCENTILES = (2.0, 98.0)
#: Longest side, in px, of the decimated read the "auto" stretch is computed from.
STATS_PX = 1024
#: Validity masks of this many windows are kept per source (packed bits: 128 KiB per 1024² window).
MASK_CACHE_WINDOWS = 64
#: Points per edge of a raster's footprint polygon (edges straight in the raster's CRS curve in lng/lat).
FOOTPRINT_EDGE_POINTS = 64
#: Native px the footprint keeps inside each edge of the raster, so its points, taken back to native px through
#: pyproj, stay on the raster despite rounding and the chords that stand for curved edges.
FOOTPRINT_INSET_PX = 0.5
#: Equatorial circumference of the WGS84 ellipsoid (EPSG:3857's sphere), metres.
_EARTH_M = 2 * math.pi * 6378137.0

#: GDAL settings for rasters read over HTTP (/vsicurl/ range requests): no directory listing on open, bounded
#: timeouts and retries. See https://gdal.org/user/configoptions.html.
HTTP_GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_TIMEOUT": "10",
                     "GDAL_HTTP_CONNECTTIMEOUT": "5", "GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "0.5"}

_ENTRY_KEYS = {"raster", "bands", "rescale", "nodata", "attribution", "min_zoom", "max_zoom"}


@contextmanager
def open_raster(path: str) -> Iterator[rasterio.io.DatasetReader]:
    """Open a local raster file, or an http(s) COG through GDAL's range requests (`HTTP_GDAL_OPTIONS`)."""
    if "://" in path:
        with rasterio.Env(**HTTP_GDAL_OPTIONS), rasterio.open(path) as ds:
            yield ds
    else:
        with rasterio.open(path) as ds:
            yield ds


def stretch_ranges(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, 2) float64 (lo, hi) per band: the `AUTO_PERCENTILES` of its valid values ((0, 1) for a band with
    none; hi > lo always). `data`: (B, ...) band values; `valid`: bool of `data.shape[1:]`."""
    ranges = []
    for band in data:
        values = band[valid]
        if values.size == 0:
            ranges.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, AUTO_PERCENTILES)
        ranges.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return np.array(ranges, np.float64)


def bands_to_rgb(data: np.ndarray, valid: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
    """(B, H, W) band values (B = 1 or 3) → (H, W, 3) uint8 RGB, pixel frame unchanged: each band's (lo, hi)
    of `ranges` ((B, 2), see `stretch_ranges`) mapped linearly to 0..255 and clipped, or, `ranges` None
    (uint8 data), values clipped to 0..255 as they are; invalid px ((H, W) bool `valid` False) black; one band
    is repeated as grey. Float32 `data` is stretched in float32, anything else in float64."""
    if ranges is None:
        scaled = np.clip(data, 0, 255)
    else:
        ftype = np.float32 if data.dtype == np.float32 else np.float64  # float32 data is stretched in float32
        lo, hi = ranges[:, 0][:, None, None].astype(ftype), ranges[:, 1][:, None, None].astype(ftype)
        scaled = np.clip((data - lo) / (hi - lo) * ftype(255.0), 0, 255)
    rgb = np.round(scaled).astype(np.uint8)
    rgb[:, ~valid] = 0
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))


@dataclass(frozen=True)
class RasterSource:
    """One configured raster: `path` (local file, or an http(s) URL the operator configured), `bands` (1-based, 1 or 3 of them), `rescale` ("auto" or one
    (min, max) per band), `nodata` (overrides the file's), `crs_wkt` (the file's CRS, checked at start-up)."""

    id: str
    path: str
    bands: tuple[int, ...]
    crs_wkt: str
    rescale: str | tuple[tuple[float, float], ...] = "auto"
    nodata: float | None = None
    attribution: str = ""
    min_zoom: int = 0
    max_zoom: int = 24
    tile_size: int = 256
    bounds: tuple[float, float, float, float] | None = None
    kind: str = field(default="raster", init=False)

    def public(self) -> dict[str, Any]:
        """What clients may see: no path. `bounds`: the raster's extent as [west, south, east, north] in
        EPSG:4326 degrees (for a map to zoom to), or None when it cannot be computed."""
        return {"id": self.id, "kind": "raster", "min_zoom": self.min_zoom, "max_zoom": self.max_zoom,
                "tile_size": self.tile_size, "attribution": self.attribution,
                "bounds": list(self.bounds) if self.bounds else None}


def raster_source(name: str, entry: Any, base: Path | None = None) -> RasterSource:
    """A RasterSource from a providers-file entry `{"raster": PATH or http(s) URL, "bands": [..], "rescale": "auto" |
    [[min, max], ..], "nodata": N, "attribution": "..", "min_zoom": .., "max_zoom": ..}`, checked by opening
    the file (its header only). Raises ValueError with one line saying what is wrong."""
    if not isinstance(entry, dict) or not isinstance(entry.get("raster"), str) or not entry["raster"]:
        raise ValueError("a raster entry needs 'raster': a file path")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown} for a raster entry; allowed: {sorted(_ENTRY_KEYS)}")
    path = entry["raster"]
    remote = "://" in path
    if remote:
        if urlsplit(path).scheme not in ("http", "https"):
            raise ValueError(f"a raster URL must be http(s), got {urlsplit(path).scheme!r}")
    else:
        if base is not None and not os.path.isabs(path):
            path = str(base / path)
        if not Path(path).is_file():
            raise ValueError(f"raster file {path!r} does not exist")
    try:
        with open_raster(path) as ds:
            count, crs = ds.count, ds.crs
            try:
                crs_wkt = pyproj.CRS.from_user_input(crs.to_wkt()).to_wkt() if crs else ""
            except pyproj.exceptions.CRSError as e:
                raise ValueError(f"raster file {path!r} has a CRS pyproj cannot read ({e})") from None
            bounds = _lnglat_bounds(ds) if crs_wkt else None
    except RasterioError as e:
        raise ValueError(f"raster file {path!r} cannot be read: {e}") from None
    if not crs_wkt:
        raise ValueError(f"raster file {path!r} has no CRS (georeference it, e.g. gdal_edit.py -a_srs)")
    bands = entry.get("bands", [1, 2, 3] if count >= 3 else [1])
    if (not isinstance(bands, list) or len(bands) not in (1, 3)
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bands)):
        raise ValueError(f"'bands' must be a list of 1 or 3 band numbers, got {bands!r}")
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise ValueError(f"band {bad[0]} is out of range: raster file {path!r} has bands 1..{count}")
    rescale = entry.get("rescale", "auto")
    if rescale != "auto":
        ok = (isinstance(rescale, list) and len(rescale) == len(bands)
              and all(isinstance(r, list) and len(r) == 2
                      and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in r)
                      and r[0] < r[1] for r in rescale))
        if not ok:
            raise ValueError(f"'rescale' must be \"auto\" or one [min, max] (min < max) per band, got {rescale!r}")
        rescale = tuple((float(lo), float(hi)) for lo, hi in rescale)
    nodata = entry.get("nodata")
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, int | float)):
        raise ValueError(f"'nodata' must be a number, got {nodata!r}")
    attribution = entry.get("attribution", "")
    if not isinstance(attribution, str):
        raise ValueError("'attribution' must be a string")
    zooms = {k: entry.get(k, d) for k, d in (("min_zoom", 0), ("max_zoom", 24))}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in zooms.values()) or not (
            0 <= zooms["min_zoom"] <= zooms["max_zoom"] <= 30):
        raise ValueError(f"need integers 0 <= min_zoom <= max_zoom <= 30, got {zooms}")
    return RasterSource(id=name, path=path, bands=tuple(bands), crs_wkt=crs_wkt, rescale=rescale,
                        nodata=None if nodata is None else float(nodata), attribution=attribution,
                        bounds=bounds, **zooms)


def _lnglat_bounds(ds: Any) -> tuple[float, float, float, float] | None:
    """The dataset's extent as (west, south, east, north) EPSG:4326 degrees: its bounds in its own CRS,
    densified along the edges (21 points each) so curved edges of projected grids are followed. None when the
    extent cannot be reprojected (e.g. beyond the CRS's area of use)."""
    try:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
    except (RasterioError, pyproj.exceptions.ProjError, ValueError):
        return None
    vals = (w, s, e, n)
    if not all(math.isfinite(v) for v in vals):
        return None
    return tuple(float(v) for v in vals)


@dataclass(frozen=True)
class RasterWindow:
    """`size` × `size` px of level `level` (1 = native; f = one px per f × f native px) of a raster's grid,
    top-left at level px (`col`, `row`) — multiples of `size // 2`, the lattice. `transform`: the raster's
    native px → CRS affine; `crs`: its CRS as WKT. `z`: the web zoom the level was chosen for."""

    level: int
    col: int
    row: int
    size: int
    z: int
    transform: Affine = field(compare=False, repr=False)
    crs: str = field(compare=False, repr=False)

    def key(self) -> tuple:
        """Grid level and lattice cell: ("raster-level", level, col, row, size)."""
        return ("raster-level", self.level, self.col, self.row, self.size)

    def affine(self) -> Affine:
        """Window px (col, row; rasterio convention) → the raster's CRS."""
        f = self.level
        return self.transform @ Affine.translation(self.col * f, self.row * f) @ Affine.scale(f)

    def lnglat_to_px(self, lnglat: np.ndarray) -> np.ndarray:
        """(N, 2) float64 lng/lat degrees EPSG:4326 → (N, 2) float64 continuous window px (col, row)."""
        pts = np.asarray(lnglat, np.float64).reshape(-1, 2)
        x, y = _transformer(4326, self.crs).transform(pts[:, 0], pts[:, 1])
        col, row = ~self.affine() @ (np.asarray(x), np.asarray(y))
        return np.column_stack([col, row]).astype(np.float64)

    def origin_px(self) -> tuple[int, int]:
        """(col, row) of the window's NW pixel in the px of its level's grid."""
        return self.col, self.row

    def neighbour(self, dx: int, dy: int) -> "RasterWindow":
        """The lattice window next to this one in direction (dx, dy) (each -1, 0 or 1; x east, y south) at the
        same level: the next lattice origin (multiples of `size // 2`) beyond this one's on each axis moved.
        Windows may overhang the raster (those px read as invalid)."""
        step = max(1, self.size // 2)

        def move(o: int, d: int) -> int:
            if d > 0:
                return (o // step + 1) * step
            if d < 0:
                return (o // step) * step if o % step else o - step
            return o

        return dataclasses.replace(self, col=move(self.col, dx), row=move(self.row, dy))

    def native_window(self) -> rasterio.windows.Window:
        """The window in native px."""
        f = self.level
        return rasterio.windows.Window(self.col * f, self.row * f, self.size * f, self.size * f)

    def meta(self) -> dict:
        return {"level": self.level, "col": self.col, "row": self.row, "size": self.size, "z": self.z,
                "crs": pyproj.CRS.from_wkt(self.crs).to_string()}


_TRANSFORMERS: dict[tuple, pyproj.Transformer] = {}
_TRANSFORMERS_LOCK = threading.Lock()


def _transformer(src: Any, dst: Any) -> pyproj.Transformer:
    """Cached always-xy transformer, shared between threads: pyproj's Transformer is thread-safe since 3.1
    ("REF: Multithread safe CRS, Proj, & Transformer", pyproj 3.1.0 release notes, issue #782)."""
    with _TRANSFORMERS_LOCK:
        t = _TRANSFORMERS.get((src, dst))
        if t is None:
            t = _TRANSFORMERS[(src, dst)] = pyproj.Transformer.from_crs(src, dst, always_xy=True)
        return t


class RasterReader:
    """Reads windows and display tiles of one `RasterSource` (blocking work in worker threads)."""

    def __init__(self, source: RasterSource, window_px: int = 1024):
        self.source = source
        self.size = window_px
        self.stride = max(1, window_px // 2)
        what = f"raster source {source.id!r}"
        try:
            with open_raster(source.path) as ds:
                self.width, self.height = ds.width, ds.height
                self.transform = ds.transform
                self.dtype = np.dtype(ds.dtypes[source.bands[0] - 1])
                self.levels = [1, *sorted(f for f in ds.overviews(source.bands[0]) if f > 1)]
        except RasterioError as e:
            raise UpstreamError(f"{what} is unreadable", detail=str(e)) from None
        self._stretch: np.ndarray | None = None
        self._masks: OrderedDict[tuple, np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()
        self._footprint: shapely.Polygon | None | bool = False  # False: not computed yet

    # -- windows ------------------------------------------------------------------------------------------
    def window_px(self) -> int:
        return self.size * self.size

    def native_res_m(self, lng: float, lat: float) -> float:
        """Ground size (m, geometric mean of width and height) of the native pixel at (lng, lat)."""
        x, y = _transformer(4326, self.source.crs_wkt).transform(lng, lat)
        col, row = ~self.transform @ (x, y)
        corners = [self.transform @ (col, row), self.transform @ (col + 1, row), self.transform @ (col, row + 1)]
        lngs, lats = _transformer(self.source.crs_wkt, 4326).transform([c[0] for c in corners],
                                                                       [c[1] for c in corners])
        geod = pyproj.Geod(ellps="WGS84")
        _, _, dx = geod.inv(lngs[0], lats[0], lngs[1], lats[1])
        _, _, dy = geod.inv(lngs[0], lats[0], lngs[2], lats[2])
        return math.sqrt(abs(dx * dy))

    def footprint_lnglat(self) -> shapely.Polygon | None:
        """The raster's extent in EPSG:4326 lng/lat degrees, `FOOTPRINT_INSET_PX` native px inside its edges: its
        native px rectangle, `FOOTPRINT_EDGE_POINTS` points an edge, through the affine and pyproj. None when the
        extent does not reproject to a valid polygon (non-finite points, e.g. outside the CRS's area of use, or
        a raster across the antimeridian). Computed once."""
        if self._footprint is not False:
            return self._footprint
        inset = min(FOOTPRINT_INSET_PX, self.width / 4, self.height / 4)
        c0, r0, c1, r1 = inset, inset, self.width - inset, self.height - inset
        t = np.linspace(0.0, 1.0, FOOTPRINT_EDGE_POINTS, endpoint=False)
        cols = np.concatenate([c0 + (c1 - c0) * t, np.full_like(t, c1), c1 - (c1 - c0) * t, np.full_like(t, c0)])
        rows = np.concatenate([np.full_like(t, r0), r0 + (r1 - r0) * t, np.full_like(t, r1), r1 - (r1 - r0) * t])
        x, y = self.transform @ (cols, rows)
        lng, lat = _transformer(self.source.crs_wkt, 4326).transform(np.asarray(x), np.asarray(y))
        footprint = None
        if np.isfinite(lng).all() and np.isfinite(lat).all() and np.ptp(lng) < 180:  # no antimeridian wrap
            polygon = shapely.Polygon(np.column_stack([lng, lat]))
            if polygon.is_valid and polygon.area > 0:
                footprint = shapely.orient_polygons(polygon, exterior_cw=False)
        self._footprint = footprint
        return footprint

    def level_for_zoom(self, lng: float, lat: float, zoom: int) -> int:
        """Index in `levels` of the coarsest level not coarser than a 256-px Web-Mercator view at `zoom`
        (never finer than native)."""
        view_m = _EARTH_M * math.cos(math.radians(lat)) / (256 * 2**zoom)
        native = self.native_res_m(lng, lat)
        best = 0
        for i, f in enumerate(self.levels):
            if native * f <= view_m * 1.0001:
                best = i
        return best

    def grid(self, zoom: int, lng: float, lat: float):
        """The pixel grid of work at `zoom` around (lng, lat) degrees: the level `level_for_zoom` picks there
        (a `samgis.geo.grids.RasterGrid`)."""
        from samgis.geo.grids import RasterGrid

        f = self.levels[self.level_for_zoom(lng, lat, zoom)]
        return RasterGrid(f, zoom, self.transform, self.source.crs_wkt, self.width, self.height)

    def _native_px(self, lnglat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lnglat (N, 2) float64 degrees, native px (N, 2) float64 (col, row)); 422 when off the raster."""
        pts = np.asarray(lnglat, np.float64).reshape(-1, 2)
        if not np.isfinite(pts).all():
            raise InvalidRequest("prompts", "coordinates must be finite numbers")
        x, y = _transformer(4326, self.source.crs_wkt).transform(pts[:, 0], pts[:, 1])
        native = np.column_stack(~self.transform @ (np.asarray(x, np.float64), np.asarray(y, np.float64)))
        if not np.isfinite(native).all():
            raise InvalidRequest("prompts", f"the prompts are outside the area raster source {self.source.id!r} "
                                            "can be projected to")
        outside = (native[:, 0] < 0) | (native[:, 0] > self.width) | (native[:, 1] < 0) | (native[:, 1] > self.height)
        if outside.any():
            i = int(np.argmax(outside))
            raise InvalidRequest(f"prompts[{i}]", f"(lng {pts[i, 0]}, lat {pts[i, 1]}) is outside raster "
                                                  f"source {self.source.id!r}")
        return pts, native

    def window_candidates(self, lnglat: np.ndarray, zoom: int, max_steps: int) -> Iterator[tuple[str, list]]:
        pts, native = self._native_px(lnglat)
        centre = pts.mean(axis=0)
        first = self.level_for_zoom(float(centre[0]), float(centre[1]), zoom)
        for step, i in enumerate(range(first, min(len(self.levels), first + max_steps + 1))):
            f = self.levels[i]
            yield f"{f}x", self._lattice(native / f, f, zoom - step)

    def cover(self, lnglat: np.ndarray, zoom: int) -> list[RasterWindow]:
        """The fewest lattice windows of the level matching `zoom` that together cover the points' extent
        (`lattice_cover` on each axis), row-major. `lnglat`: (N, 2) float64 degrees EPSG:4326."""
        pts, native = self._native_px(lnglat)
        centre = pts.mean(axis=0)
        f = self.levels[self.level_for_zoom(float(centre[0]), float(centre[1]), zoom)]
        px = native / f
        lo, hi = px.min(axis=0), px.max(axis=0)
        cols = lattice_cover(float(lo[0]), float(hi[0]), self.size, self.stride)
        rows = lattice_cover(float(lo[1]), float(hi[1]), self.size, self.stride)
        return [RasterWindow(f, c, r, self.size, zoom, self.transform, self.source.crs_wkt) for r in rows for c in cols]

    def _lattice(self, px: np.ndarray, f: int, z: int) -> list[RasterWindow]:
        """Lattice windows at level f strictly containing level px `px` (N, 2), nearest-centred first. Windows
        may overhang the raster's edges (those px read as invalid)."""
        lo, hi = px.min(axis=0), px.max(axis=0)
        s, n = self.stride, self.size
        first = np.floor((hi - n) / s).astype(np.int64) + 1  # o*s + n > hi
        stop = np.ceil(lo / s).astype(np.int64) - 1  # o*s < lo
        if (first > stop).any():
            return []
        centre = (lo + hi) / 2
        cells = [(cx * s, cy * s) for cy in range(int(first[1]), int(stop[1]) + 1)
                 for cx in range(int(first[0]), int(stop[0]) + 1)]
        cells.sort(key=lambda o: (round((o[0] + n / 2 - centre[0]) ** 2 + (o[1] + n / 2 - centre[1]) ** 2, 6),
                                  o[1], o[0]))
        return [RasterWindow(f, c, r, n, z, self.transform, self.source.crs_wkt) for c, r in cells]

    # -- pixels -------------------------------------------------------------------------------------------
    async def _within(self, deadline: float | None, what: str, fn, *args):
        """`fn(*args)` on a worker thread, awaited until `deadline` (a `time.monotonic()` instant, None: no
        limit). Past it, `UpstreamTimeout` (504) names the source; the read itself cannot be interrupted, so it
        finishes on its thread (bounded by GDAL's own HTTP timeouts for a remote file) and is dropped."""
        if deadline is None:
            return await asyncio.to_thread(fn, *args)
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=left)
        except TimeoutError:
            raise UpstreamTimeout(f"raster source {self.source.id!r}: the request's deadline passed while "
                                  f"reading {what}") from None

    async def read_window(self, window: RasterWindow, deadline: float | None = None) -> WindowImage:
        """The window's RGB and validity, within `deadline` (see `_within`)."""
        return await self._within(deadline, "a window", self._read_window, window)

    async def valid_mask(self, window: RasterWindow) -> np.ndarray | None:
        with self._lock:
            if window.key() in self._masks:
                self._masks.move_to_end(window.key())
                packed = self._masks[window.key()]
                return None if packed is None else np.unpackbits(packed)[: self.size * self.size].reshape(
                    self.size, self.size).astype(bool)
        return (await asyncio.to_thread(self._read_window, window, True)).valid

    def _remember(self, window: RasterWindow, valid: np.ndarray | None) -> None:
        with self._lock:
            self._masks[window.key()] = None if valid is None else np.packbits(valid)
            self._masks.move_to_end(window.key())
            while len(self._masks) > MASK_CACHE_WINDOWS:
                self._masks.popitem(last=False)

    def _read(self, ds, window: rasterio.windows.Window, out: tuple[int, int],
              resampling: Resampling = Resampling.nearest) -> tuple[np.ndarray, np.ndarray]:
        """(bands (B, H, W) float64, valid (H, W) bool) of a native-px window read at `out` (H, W) px; px
        outside the raster are invalid."""
        bands = list(self.source.bands)
        shape = (len(bands), *out)
        # boundless reads (through a VRT) only for windows overhanging the raster
        overhang = (window.col_off < 0 or window.row_off < 0 or window.col_off + window.width > self.width
                    or window.row_off + window.height > self.height)
        if self.source.nodata is not None:
            data = ds.read(bands, window=window, out_shape=shape, boundless=overhang, fill_value=self.source.nodata,
                           resampling=resampling)
            valid = ~(data == self.source.nodata).all(axis=0)
            return data.astype(np.float64), valid
        data = ds.read(bands, window=window, out_shape=shape, boundless=overhang, masked=True, resampling=resampling)
        mask = np.ma.getmaskarray(data)
        return np.ma.getdata(data).astype(np.float64), ~mask.all(axis=0)

    def _read_window(self, window: RasterWindow, mask_only: bool = False) -> WindowImage:
        what = f"raster source {self.source.id!r}"
        try:
            with open_raster(self.source.path) as ds:
                if mask_only:
                    data = None
                    _, valid = self._read(ds, window.native_window(), (window.size, window.size))
                else:
                    data, valid = self._read(ds, window.native_window(), (window.size, window.size))
        except RasterioError as e:
            raise UpstreamError(f"{what} is unreadable", detail=str(e)) from None
        valid_or_none = None if valid.all() else valid
        self._remember(window, valid_or_none)
        if data is None:
            return WindowImage(np.zeros((0, 0, 3), np.uint8), valid_or_none)
        return WindowImage(self._to_rgb(data, valid), valid_or_none)

    def _to_rgb(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(B, H, W) float64 band values → (H, W, 3) uint8 RGB (rescaled; invalid px black)."""
        return bands_to_rgb(data, valid, self._ranges())

    def _ranges(self) -> np.ndarray | None:
        """(B, 2) float64 (min, max) per band mapped to 0..255, or None for uint8 data taken as is."""
        if self.source.rescale != "auto":
            return np.array(self.source.rescale, np.float64)
        if self.dtype == np.uint8:
            return None
        with self._lock:
            if self._stretch is not None:
                return self._stretch
        try:
            with open_raster(self.source.path) as ds:
                data, valid = self._stats_sample(ds)
        except RasterioError as e:
            raise UpstreamError(f"raster source {self.source.id!r} is unreadable", detail=str(e)) from None
        with self._lock:
            self._stretch = stretch_ranges(data, valid)
            return self._stretch

    def _stats_sample(self, ds) -> tuple[np.ndarray, np.ndarray]:
        """(bands (B, N) float64, valid (N,) bool) pixels to compute the stretch from: the whole raster read at
        most `STATS_PX` px a side when an overview is within 4 × that (GDAL reads the overview), else a grid of
        16 × 16 windows of 64² native px spread over the raster (no full scan of a big file without overviews)."""
        coarsest = self.levels[-1]
        if max(self.width, self.height) / coarsest <= 4 * STATS_PX:
            scale = max(1.0, max(self.width, self.height) / STATS_PX)
            out = (max(1, round(self.height / scale)), max(1, round(self.width / scale)))
            data, valid = self._read(ds, rasterio.windows.Window(0, 0, self.width, self.height), out)
            return data.reshape(data.shape[0], -1), valid.reshape(-1)
        parts, masks, n, side = [], [], 16, 64
        for j in range(n):
            for i in range(n):
                col = int((i + 0.5) * self.width / n) - side // 2
                row = int((j + 0.5) * self.height / n) - side // 2
                data, valid = self._read(ds, rasterio.windows.Window(col, row, side, side), (side, side))
                parts.append(data.reshape(data.shape[0], -1))
                masks.append(valid.reshape(-1))
        return np.concatenate(parts, axis=1), np.concatenate(masks)

    # -- display tiles -------------------------------------------------------------------------------------
    async def display_tile(self, z: int, x: int, y: int, deadline: float | None = None) -> bytes:
        """A 256-px RGBA PNG of Web-Mercator tile (z, x, y), transparent where the raster has no data; within
        `deadline` (see `_within`)."""
        return await self._within(deadline, f"tile {z}/{x}/{y}", self._display_tile, z, x, y)

    def _display_tile(self, z: int, x: int, y: int) -> bytes:
        ts = self.source.tile_size
        b = mercantile.xy_bounds(x, y, z)
        dst_transform = Affine((b.right - b.left) / ts, 0, b.left, 0, -(b.top - b.bottom) / ts, b.top)
        # the tile's footprint in native px, read at about the tile's resolution (windowed, overviews used)
        xs, ys = _transformer("EPSG:3857", self.source.crs_wkt).transform(
            [b.left, b.right, b.left, b.right], [b.top, b.top, b.bottom, b.bottom])
        cols, rows = ~self.transform @ (np.asarray(xs), np.asarray(ys))
        c0, c1 = max(0, math.floor(np.min(cols))), min(self.width, math.ceil(np.max(cols)))
        r0, r1 = max(0, math.floor(np.min(rows))), min(self.height, math.ceil(np.max(rows)))
        rgba = np.zeros((4, ts, ts), np.uint8)
        if c1 > c0 and r1 > r0:
            read_w = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
            scale = max(1.0, max(c1 - c0, r1 - r0) / (2 * ts))
            out = (max(1, round((r1 - r0) / scale)), max(1, round((c1 - c0) / scale)))
            try:
                with open_raster(self.source.path) as ds:
                    data, valid = self._read(ds, read_w, out, Resampling.average)
            except RasterioError as e:
                raise UpstreamError(f"raster source {self.source.id!r} is unreadable", detail=str(e)) from None
            src = np.concatenate([self._to_rgb(data, valid).transpose(2, 0, 1), (valid * 255).astype(np.uint8)[None]])
            src_transform = self.transform @ Affine.translation(c0, r0) @ Affine.scale((c1 - c0) / out[1],
                                                                                       (r1 - r0) / out[0])
            reproject(src, rgba, src_transform=src_transform, src_crs=self.source.crs_wkt,
                      dst_transform=dst_transform, dst_crs="EPSG:3857", resampling=Resampling.nearest,
                      src_nodata=None, dst_nodata=None)
        buf = io.BytesIO()
        Image.fromarray(rgba.transpose(1, 2, 0), "RGBA").save(buf, "PNG")
        return buf.getvalue()
