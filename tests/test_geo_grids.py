"""Pixel grids of sources (samgis.geo.grids): tile windows at any px, raster levels."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import shapely

import samgis.geo.grids as grids_module
from samgis.errors import InvalidRequest
from samgis.geo.grids import PxWindow, RasterGrid, TileGrid
from samgis.geo.tiles import Window
from tests.support.raster import write_raster


def test_doctests():
    result = doctest.testmod(grids_module)
    assert result.attempted > 0 and result.failed == 0


def test_px_window_is_a_crop_of_its_enclosing_tile_window():
    w = PxWindow(z=12, col=64 + 256 * 5, row=200 + 256 * 9, size=1024)
    enc = w.enclosing()
    assert (enc.x, enc.y, enc.tiles) == (5, 9, 5)  # 64 + 1024 px need 5 tiles; 200 + 1024 too
    pixels = np.arange(enc.size * enc.size).reshape(enc.size, enc.size)
    crop = w.crop(pixels)
    assert crop.shape == (1024, 1024) and crop[0, 0] == pixels[200, 64] and crop.flags.c_contiguous
    # the same lng/lat point sits at the same px in both frames, shifted by the crop
    ll = np.array([[10.123, 45.678]])
    assert np.allclose(w.lnglat_to_px(ll), enc.lnglat_to_px(ll) - (64, 200))
    assert np.allclose(w.affine() @ (10, 20), enc.affine() @ (74, 220))


def test_tile_grid_refuses_points_off_the_map():
    with pytest.raises(InvalidRequest) as e:
        TileGrid(5).lnglat_to_px([[0.0, 89.0]], "area")
    assert e.value.field == "area"
    assert TileGrid(5).extent == (8192, 8192) and TileGrid(5).bounded


def test_raster_grid_levels_and_windows(tmp_path):
    o, r = (500000.0, 5000000.0), 0.5
    ras = write_raster(tmp_path / "r.tif", crs="EPSG:32632", origin=o, res=r, width=600, height=400,
                       background=(1, 2, 3), shapes=[("dot", shapely.box(500100, 4999900, 500110, 4999910), (9, 9, 9))])
    g = RasterGrid(level=2, z=17, transform=ras.transform, crs=ras.crs, width=600, height=400)
    assert g.extent == (300, 200) and not g.bounded
    lng, lat = ras.px_to_lnglat(200.0, 100.0)  # native px → level-2 px (100, 50)
    assert np.allclose(g.lnglat_to_px([[lng, lat]]), [[100.0, 50.0]], atol=1e-6)
    w = g.window(-512, 0, 1024)  # lattice windows may overhang the raster
    assert w.key() == ("raster-level", 2, -512, 0, 1024) and w.affine() == g.affine_at(-512, 0)
    with pytest.raises(InvalidRequest):
        g.lnglat_to_px([[float("nan"), 0.0]])
    assert isinstance(TileGrid(3).window(0, 0, 512), Window)
