"""Windows and candidate windows in the XYZ tile grid (samgis.geo.tiles)."""

from __future__ import annotations

import doctest
import itertools

import mercantile
import numpy as np
import pytest

from samgis.errors import InvalidRequest
import samgis.geo.tiles as tiles_module
from samgis.geo.tiles import MAX_LAT, Window, candidate_windows, world_px

TOL_PX = 1e-6


def corner_lnglat(x: int, y: int, z: int) -> np.ndarray:
    """(1, 2) lng/lat of the NW corner of tile (z, x, y), from mercantile."""
    ul = mercantile.ul(x, y, z)
    return np.array([[ul.lng, ul.lat]])


def tile_centre_lnglat(x: int, y: int, z: int) -> np.ndarray:
    """(1, 2) lng/lat of the centre of tile (z, x, y) in Mercator metres (not mid-latitude)."""
    b = mercantile.xy_bounds(x, y, z)
    c = mercantile.lnglat((b.left + b.right) / 2, (b.bottom + b.top) / 2)
    return np.array([[c.lng, c.lat]])


def test_doctests():
    result = doctest.testmod(tiles_module)
    assert result.attempted > 5 and result.failed == 0


def test_window_size_key_and_tiles_list():
    w = Window(z=10, x=100, y=200)
    assert (w.tiles, w.size, w.key()) == (4, 1024, (10, 100, 200, 1024))
    listed = w.tiles_list()
    assert len(listed) == 16
    assert listed[0] == mercantile.Tile(100, 200, 10)
    assert listed[1] == mercantile.Tile(101, 200, 10)  # row-major: east first
    assert listed[4] == mercantile.Tile(100, 201, 10)  # then one row south
    assert listed[-1] == mercantile.Tile(103, 203, 10)
    assert Window(z=10, x=0, y=0, tiles=2, tile_size=512).key() == (10, 0, 0, 1024)


@pytest.mark.parametrize("z, tiles, size", [(0, 1, 256), (1, 2, 512), (2, 4, 1024)])
def test_window_clamped_to_world_at_low_zoom(z, tiles, size):
    w = Window(z=z, x=0, y=0)
    assert (w.tiles, w.size) == (tiles, size)
    left, bottom, right, top = w.bounds_3857()
    world = mercantile.xy_bounds(0, 0, 0)
    assert (left, bottom, right, top) == pytest.approx(tuple(world))


@pytest.mark.parametrize("z, x, y", [(2, 1, 0), (3, 5, 0), (3, 0, 5), (3, -1, 0), (-1, 0, 0)])
def test_window_outside_grid_rejected(z, x, y):
    with pytest.raises(ValueError):
        Window(z=z, x=x, y=y)


def test_bounds_and_affine_from_mercantile():
    w = Window(z=12, x=2100, y=1400)
    nw = mercantile.xy_bounds(2100, 1400, 12)
    se = mercantile.xy_bounds(2103, 1403, 12)
    assert w.bounds_3857() == (nw.left, se.bottom, se.right, nw.top)
    a = w.affine()
    assert a @ (0, 0) == pytest.approx((nw.left, nw.top))
    assert a @ (1024, 1024) == pytest.approx((se.right, se.bottom))
    # One tile east and south of the origin: the NW corner of tile (2101, 1401).
    t = mercantile.xy_bounds(2101, 1401, 12)
    assert a @ (256, 256) == pytest.approx((t.left, t.top), abs=1e-6)
    assert a.a > 0 and a.e < 0 and a.b == 0 and a.d == 0  # north up, rasterio convention
    ll = w.bounds()
    assert ll.west == pytest.approx(mercantile.bounds(2100, 1400, 12).west)
    assert ll.south == pytest.approx(mercantile.bounds(2103, 1403, 12).south)


@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0, -70.0, 85.0, -85.0])
@pytest.mark.parametrize("z", [3, 9, 15, 19, 22])
def test_tile_corners_and_centres_map_to_exact_px(lat, z):
    x0, y0 = mercantile.tile(13.4, lat, z)[:2]
    x0, y0 = min(x0, 2**z - 4), min(y0, 2**z - 4)
    w = Window(z=z, x=x0, y=y0)
    for i, j in itertools.product(range(4), range(4)):
        px = w.lnglat_to_px(corner_lnglat(x0 + i, y0 + j, z))
        np.testing.assert_allclose(px, [[i * 256, j * 256]], rtol=0, atol=TOL_PX)
        px = w.lnglat_to_px(tile_centre_lnglat(x0 + i, y0 + j, z))
        np.testing.assert_allclose(px, [[i * 256 + 128, j * 256 + 128]], rtol=0, atol=TOL_PX)


@pytest.mark.parametrize("lat", [0.0, 70.0, -85.0])
def test_lnglat_to_px_agrees_with_affine(lat):
    z = 14
    x0, y0 = mercantile.tile(-122.4, lat, z)[:2]
    w = Window(z=z, x=x0 - 1, y=y0 - 1)
    rng = np.random.default_rng(0)
    b = w.bounds()
    pts = np.stack([rng.uniform(b.west, b.east, 20), rng.uniform(b.south, b.north, 20)], axis=1)
    px = w.lnglat_to_px(pts)
    assert px.shape == (20, 2) and px.dtype == np.float64
    assert ((px > 0) & (px < 1024)).all()
    metres = np.array([w.affine() @ tuple(p) for p in px])
    expect = np.array([mercantile.xy(*p) for p in pts])
    np.testing.assert_allclose(metres, expect, rtol=0, atol=1e-6)


def test_lnglat_to_px_at_the_world_edges_z0():
    w = Window(z=0, x=0, y=0)
    pts = np.array([[-180.0, MAX_LAT], [180.0, -MAX_LAT], [0.0, 0.0]])
    np.testing.assert_allclose(w.lnglat_to_px(pts), [[0, 0], [256, 256], [128, 128]], atol=1e-6)


def contains(w: Window, pts: np.ndarray) -> bool:
    px = w.lnglat_to_px(pts)
    return bool(((px > 0) & (px < w.size)).all())


def all_containing(pts: np.ndarray, z: int, tiles: int = 4) -> set[tuple[int, int]]:
    """Brute force: origins of every window at z that strictly contains pts.

    Only origins within 2 * tiles tiles of the first point are tried: a window further away
    cannot contain it.
    """
    n = min(tiles, 2**z)
    tx, ty = (int(v) for v in world_px(pts[:1], z)[0] // 256)
    near = range(-2 * n, 2 * n + 1)
    return {
        (x, y)
        for x in (tx + d for d in near)
        for y in (ty + d for d in near)
        if 0 <= x <= 2**z - n and 0 <= y <= 2**z - n and contains(Window(z, x, y, tiles=n), pts)
    }


CASES = {
    "one point": ([[13.41, 52.52]], 8),
    "two points": ([[13.40, 52.51], [13.45, 52.53]], 8),
    "near x=0": ([[-179.99, 10.0]], 6),
    "near x=max": ([[179.99, -10.0]], 6),
    "far north": ([[25.0, 70.0]], 7),
    "far south": ([[-60.0, -85.0]], 5),
    "at +85": ([[100.0, 85.0]], 6),
    "z1": ([[-100.0, 40.0], [100.0, -40.0]], 1),
    "z0": ([[10.0, 10.0]], 0),
}


@pytest.mark.parametrize("name", CASES)
def test_candidates_are_exactly_the_containing_windows(name):
    pts, z = np.array(CASES[name][0]), CASES[name][1]
    got = candidate_windows(pts, z)
    assert got, "points fit in a window at this zoom"
    assert {(w.x, w.y) for w in got} == all_containing(pts, z)
    assert len(got) == len({w.key() for w in got})
    for w in got:
        assert w.z == z and w.tiles == min(4, 2**z)
        assert 0 <= w.x <= 2**z - w.tiles and 0 <= w.y <= 2**z - w.tiles


def test_clamped_near_antimeridian():
    z = 6
    east = candidate_windows(np.array([[179.99, 0.5]]), z)
    assert {w.x for w in east} == {2**z - 4}  # only the window flush with the east edge
    west = candidate_windows(np.array([[-179.99, 0.5]]), z)
    assert {w.x for w in west} == {0}


def test_low_zoom_single_window():
    assert [w.key() for w in candidate_windows(np.array([[10.0, 10.0]]), 0)] == [(0, 0, 0, 256)]
    assert [w.key() for w in candidate_windows(np.array([[-100.0, 40.0]]), 1)] == [(1, 0, 0, 512)]


def test_preference_half_grid_first_then_nearest_centre():
    pts = np.array([[13.41, 52.52]])
    z = 12
    got = candidate_windows(pts, z)
    assert len(got) == 16  # a single point off tile edges fits in 4 x 4 origins
    on_grid = [(w.x % 2 == 0 and w.y % 2 == 0) for w in got]
    assert on_grid == sorted(on_grid, reverse=True) and sum(on_grid) == 4
    centre = world_px(pts, z)[0] / 256

    def dist(w):
        return float(np.hypot(w.x + 2 - centre[0], w.y + 2 - centre[1]))

    for group in (got[:4], got[4:]):
        d = [dist(w) for w in group]
        assert d == sorted(d)
    # The first window keeps the click at least one tile away from its edges.
    px = got[0].lnglat_to_px(pts)[0]
    assert (px >= 256).all() and (px <= 768).all()


def test_nearby_clicks_share_the_first_window():
    z = 15
    base = world_px(np.array([[2.35, 48.85]]), z)[0] / 256
    # Two clicks a quarter tile apart, inside the same tile.
    tile = np.floor(base)
    a = mercantile.lnglat(*_tile_frac_to_xy(tile + [0.3, 0.4], z))
    b = mercantile.lnglat(*_tile_frac_to_xy(tile + [0.6, 0.7], z))
    wa = candidate_windows(np.array([[a.lng, a.lat]]), z)[0]
    wb = candidate_windows(np.array([[b.lng, b.lat]]), z)[0]
    assert wa == wb


def _tile_frac_to_xy(t: np.ndarray, z: int) -> tuple[float, float]:
    """EPSG:3857 metres of fractional tile coordinates t = (tx, ty) at zoom z."""
    b = mercantile.xy_bounds(int(t[0]), int(t[1]), z)
    fx, fy = t[0] - int(t[0]), t[1] - int(t[1])
    return b.left + fx * (b.right - b.left), b.top - fy * (b.top - b.bottom)


def test_ties_broken_by_row_then_column():
    # A point on the corner shared by tiles (16..17, 16..17): the four on-grid windows that
    # contain it have centres at the same distance (sqrt 2 tiles); float rounding must not
    # decide their order.
    z = 5
    c = mercantile.ul(17, 17, z)
    got = candidate_windows(np.array([[c.lng, c.lat]]), z)
    assert [(w.x, w.y) for w in got[:4]] == [(14, 14), (16, 14), (14, 16), (16, 16)]
    assert all(w.x % 2 or w.y % 2 for w in got[4:])


def test_containment_is_strict_at_window_edges():
    z = 9
    b = mercantile.xy_bounds(200, 100, z)
    eps = 1e-3 * (b.right - b.left) / 256  # a thousandth of a pixel, in metres
    inside = mercantile.lnglat(b.left + eps, b.top - eps)  # just SE of the tile's NW corner
    outside = mercantile.lnglat(b.left - eps, b.top + eps)  # just NW of it
    got_in = {(w.x, w.y) for w in candidate_windows(np.array([[inside.lng, inside.lat]]), z)}
    got_out = {(w.x, w.y) for w in candidate_windows(np.array([[outside.lng, outside.lat]]), z)}
    assert got_in == {(x, y) for x in range(197, 201) for y in range(97, 101)}
    assert got_out == {(x, y) for x in range(196, 200) for y in range(96, 100)}


def test_points_too_far_apart_give_no_window():
    pts = np.array([[13.0, 52.0], [14.0, 52.0]])
    assert candidate_windows(pts, 14) == []
    # Stepping down the zoom eventually fits them.
    z = next(z for z in range(14, -1, -1) if candidate_windows(pts, z))
    assert z < 14 and all(contains(w, pts) for w in candidate_windows(pts, z))
    assert not candidate_windows(pts, z + 1)


def test_tiles_and_tile_size_parameters():
    pts = np.array([[13.41, 52.52]])
    got = candidate_windows(pts, 12, tiles=2, tile_size=512)
    assert got and all(w.tiles == 2 and w.size == 1024 for w in got)
    assert {(w.x, w.y) for w in got} == all_containing(pts, 12, tiles=2)
    assert all(w.lnglat_to_px(pts).max() < 1024 for w in got)


@pytest.mark.parametrize(
    "pts",
    [
        [[0.0, 85.06]],
        [[0.0, -86.0]],
        [[180.5, 0.0]],
        [[-181.0, 0.0]],
        [[0.0, float("nan")]],
        [[10.0, 10.0], [0.0, 90.0]],
        np.zeros((0, 2)),
        [1.0, 2.0, 3.0],
    ],
)
def test_points_off_the_map_raise_invalid_request(pts):
    with pytest.raises(InvalidRequest) as e:
        candidate_windows(np.array(pts), 10)
    assert e.value.field == "prompts"
