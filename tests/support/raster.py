"""Synthetic GeoTIFFs with shapes of known coordinates, written with rasterio.

A raster is a flat background with flat-coloured shapes (polygons in the raster's CRS, burnt in by their pixel
centres), optional nodata margins and nearest-neighbour overviews (so every level keeps exact colours for the
colour-region test engine). `RasterShape.lnglat()` is the shape in EPSG:4326, densified before reprojection so
that curved edges of projected rectangles are followed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyproj
import rasterio
import rasterio.windows
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class RasterShape:
    """A flat shape: `polygon` in the raster's CRS; `values`: its value in each band."""

    name: str
    polygon: BaseGeometry
    values: tuple[float, ...]
    crs: str

    def lnglat(self) -> BaseGeometry:
        """The shape in EPSG:4326 lng/lat degrees."""
        dense = shapely.segmentize(self.polygon, max_segment_length=_span(self.polygon) / 200)
        t = pyproj.Transformer.from_crs(self.crs, 4326, always_xy=True)
        return shapely.transform(dense, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))

    def inside_lnglat(self) -> tuple[float, float]:
        """(lng, lat) of a point well inside the shape."""
        p = self.lnglat().representative_point()
        return p.x, p.y


def _span(geom: BaseGeometry) -> float:
    x0, y0, x1, y1 = geom.bounds
    return max(x1 - x0, y1 - y0)


@dataclass
class SyntheticRaster:
    """What `write_raster` wrote: the file, its grid and its shapes."""

    path: Path
    crs: str
    transform: Affine
    width: int
    height: int
    shapes: list[RasterShape] = field(default_factory=list)

    def shape(self, name: str) -> RasterShape:
        return next(s for s in self.shapes if s.name == name)

    def px_to_crs(self, col: float, row: float) -> tuple[float, float]:
        return self.transform @ (col, row)

    def px_to_lnglat(self, col: float, row: float) -> tuple[float, float]:
        x, y = self.px_to_crs(col, row)
        return pyproj.Transformer.from_crs(self.crs, 4326, always_xy=True).transform(x, y)

    def data_area_lnglat(self, col0: int, row0: int, col1: int, row1: int) -> BaseGeometry:
        """The px rectangle [col0, col1) × [row0, row1) in EPSG:4326."""
        x0, y0 = self.px_to_crs(col0, row0)
        x1, y1 = self.px_to_crs(col1, row1)
        rect = RasterShape("area", shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), (), self.crs)
        return rect.lnglat()


def write_raster(path: Path, *, crs: str, origin: tuple[float, float], res: float, width: int, height: int,
                 shapes: list[tuple[str, BaseGeometry, tuple[float, ...]]], background: tuple[float, ...],
                 dtype: str = "uint8", nodata: float | None = None,
                 valid_px: tuple[int, int, int, int] | None = None, overviews: tuple[int, ...] = (),
                 georeferenced: bool = True, alpha: bool = False) -> SyntheticRaster:
    """Write a tiled GeoTIFF and describe it.

    `origin`: (x, y) of the top-left corner in `crs` units; `res`: px size in those units (north up).
    `shapes`: (name, polygon in `crs`, values per band), painted in order. `valid_px`: (col0, row0, col1,
    row1): px outside it are set to `nodata` in every band (the margins). `overviews`: factors built with
    nearest resampling. `alpha`: the last of 4 bands is an alpha band (GTiff ALPHA=YES,
    PHOTOMETRIC=RGB). `georeferenced=False` writes no CRS (a broken file for configuration tests).
    """
    count = len(background)
    transform = Affine(res, 0.0, origin[0], 0.0, -res, origin[1])
    data = np.empty((count, height, width), dtype)
    for b in range(count):
        data[b] = background[b]
    out_shapes = []
    for name, polygon, values in shapes:
        burnt = rasterize([(polygon, 1)], out_shape=(height, width), transform=transform, fill=0, dtype="uint8")
        for b in range(count):
            data[b][burnt == 1] = values[b]
        out_shapes.append(RasterShape(name, polygon, tuple(values), crs))
    if valid_px is not None:
        c0, r0, c1, r1 = valid_px
        keep = np.zeros((height, width), bool)
        keep[r0:r1, c0:c1] = True
        data[:, ~keep] = nodata
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
               "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    if georeferenced:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if alpha:
        profile.update(photometric="RGB", alpha="YES")
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if overviews:
            ds.build_overviews(list(overviews), Resampling.nearest)
    return SyntheticRaster(Path(path), crs, transform, width, height, out_shapes)


def write_big_sparse_raster(path: Path, *, side: int = 20000, block: int = 512,
                            patches: tuple[tuple[int, int], ...] = ((0, 0), (9472, 9472), (18976, 18976))
                            ) -> SyntheticRaster:
    """A `side` × `side` px RGB uint8 tiled GeoTIFF in EPSG:32632 (0.5 m px), sparse (blocks never written are
    nodata 0 and take no space), with overviews 2..32 (nearest). Each patch (col, row) is a 1024² px block of
    grey 120 holding a 400² px square "patch@col,row" of red 200 at (300..700, 300..700) of the block."""
    transform = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32632",
               "transform": transform, "tiled": True, "blockxsize": block, "blockysize": block,
               "compress": "deflate", "sparse_ok": True, "nodata": 0}
    tile = np.full((3, 1024, 1024), 120, np.uint8)
    tile[0, 300:700, 300:700] = 200
    tile[1:, 300:700, 300:700] = 30
    shapes = []
    with rasterio.open(path, "w", **profile) as ds:
        for col, row in patches:
            ds.write(tile, window=rasterio.windows.Window(col, row, 1024, 1024))
            x0, y0 = transform @ (col + 300, row + 700)
            x1, y1 = transform @ (col + 700, row + 300)
            shapes.append(RasterShape(f"patch@{col},{row}", shapely.box(x0, y0, x1, y1), (200, 30, 30), "EPSG:32632"))
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4, 8, 16, 32], Resampling.nearest)
    return SyntheticRaster(Path(path), "EPSG:32632", transform, side, side, shapes)
