"""Vector post-processing (samgis.vector.postprocess): regularize squares raster-stepped building outlines,
smooth rounds pixel staircases of natural features; both in the px frame, both off by default."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely import affinity

from samgis.errors import InvalidRequest
from samgis.vector.polygons import mask_to_geometry, pixel_polygons
from samgis.vector.postprocess import Regularize, Smooth, apply, apply_many, choose, describe
from tests.support.geometry import interior_angles_deg, iou, turning_angles_deg


def raster(shape: shapely.Geometry, n: int) -> np.ndarray:
    """(n, n) bool: pixels whose centre lies in `shape` (px frame, rasterio convention)."""
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    return shapely.contains_xy(shape, xx, yy)


def rotated_rect(angle: float, w: float = 60, h: float = 36, c=(64.3, 61.7)) -> shapely.Polygon:
    return affinity.rotate(shapely.box(c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2), angle, origin=c)


@pytest.mark.parametrize("angle", [4.0, 13.0, 23.0, 37.0])
def test_regularize_squares_a_raster_stepped_rotated_rectangle(angle):
    truth = rotated_rect(angle)
    outline = pixel_polygons(raster(truth, 128))[0]
    assert len(outline.exterior.coords) > 12  # a staircase, not a rectangle
    got = apply(outline, Regularize())
    assert got.geom_type == "Polygon" and got.is_valid
    corners = interior_angles_deg(got)
    assert len(corners) == 4, corners
    assert np.all(np.abs(corners - 90) < 3), corners
    assert iou(got, truth) >= 0.9, iou(got, truth)
    # the long edge follows the true orientation
    c = np.asarray(got.exterior.coords)
    edges = np.diff(c, axis=0)
    longest = edges[np.argmax(np.linalg.norm(edges, axis=1))]
    direction = np.degrees(np.arctan2(longest[1], longest[0])) % 180
    assert min(abs(direction - angle % 180), 180 - abs(direction - angle % 180)) < 3, direction


def test_regularize_squares_a_simplified_outline_and_keeps_the_holes():
    """A Douglas-Peucker outline (not what mask_to_geometry hands it, but callers may) comes out square too,
    and a courtyard stays a hole."""
    truth = rotated_rect(17.0, w=80, h=56).difference(rotated_rect(17.0, w=30, h=20))
    outline = pixel_polygons(raster(truth, 128))[0]
    simplified = shapely.simplify(outline, 1.0, preserve_topology=True)
    got = apply(simplified, Regularize())
    assert got.is_valid and len(got.interiors) == 1
    assert np.all(np.abs(interior_angles_deg(got) - 90) < 3)
    assert iou(got, truth) >= 0.9


@pytest.mark.parametrize("radius", [10.0, 25.0, 45.0])
def test_smooth_rounds_a_pixelated_disc_with_fewer_vertices(radius):
    n = int(2 * radius + 20)
    truth = shapely.Point(n / 2 + 0.3, n / 2 - 0.2).buffer(radius, quad_segs=64)
    outline = pixel_polygons(raster(truth, n))[0]
    assert turning_angles_deg(outline).min() == pytest.approx(90)  # every vertex a stair step
    got = apply(outline, Smooth())
    assert got.geom_type == "Polygon" and got.is_valid
    assert len(got.exterior.coords) < len(outline.exterior.coords)
    turns = turning_angles_deg(got)
    assert turns.max() < 35, turns.max()  # no stair steps left
    assert iou(got, truth) >= 0.95 and iou(got, truth) >= iou(outline, truth) - 0.01
    assert got.area == pytest.approx(outline.area, rel=0.02)


def test_mask_to_geometry_applies_the_option_before_areas_and_lnglat():
    """Through the product path: window px mask → processed outline → EPSG:4326; area follows the result."""
    from samgis.geo.tiles import Window
    from samgis.vector.polygons import geodesic_area_m2

    truth = rotated_rect(13.0)
    mask = raster(truth, 128)
    transform = Window(17, 68000, 45000, tiles=1, tile_size=128).affine()
    plain = mask_to_geometry(mask, transform, simplify_px=1.0)
    square = mask_to_geometry(mask, transform, simplify_px=1.0, postprocess=Regularize())
    assert plain.is_valid and square.is_valid
    assert len(square.exterior.coords) == 5 < len(plain.exterior.coords)
    assert geodesic_area_m2(square) != geodesic_area_m2(plain)
    assert iou(square, plain) > 0.95


def test_multipolygons_keep_their_parts_and_stay_valid():
    a, b = rotated_rect(9.0, w=30, h=20, c=(30, 30)), rotated_rect(9.0, w=30, h=20, c=(90, 90))
    outline = shapely.multipolygons(pixel_polygons(raster(a.union(b), 128)))
    for op in (Regularize(), Smooth()):
        got = apply(outline, op)
        assert got.is_valid and got.geom_type == "MultiPolygon" and len(got.geoms) == 2, op
        assert iou(got, a.union(b)) >= 0.9


def test_apply_many_matches_apply_and_keeps_none():
    geoms = np.array([pixel_polygons(raster(rotated_rect(a), 128))[0] for a in (5.0, 30.0)] + [None], dtype=object)
    many = apply_many(geoms, Regularize())
    assert many[2] is None
    for g, m in zip(geoms[:2], many[:2]):
        assert m.equals(apply(g, Regularize()))


def test_options_default_off_and_refuse_bad_values():
    assert choose() is None and choose(False, False) is None and describe(None) is None
    assert choose(regularize=True) == Regularize()
    assert choose(smooth={"iterations": 5}) == Smooth(iterations=5)
    assert describe(Smooth())["library"] == "smoothify"
    cases = [
        ({"regularize": True, "smooth": True}, "smooth"),
        ({"regularize": {"tolerance_px": 0.1}}, "regularize.tolerance_px"),
        ({"smooth": {"iterations": 6}}, "smooth.iterations"),
        ({"regularize": {"diagonal_deg": 40}}, "regularize.diagonal_deg"),
        ({"regularize": {"angle": 3}}, "regularize.angle"),
        ({"smooth": {"iterations": 0}}, "smooth.iterations"),
        ({"smooth": {"iterations": 2.5}}, "smooth.iterations"),
        ({"smooth": {"tolerance_px": float("nan")}}, "smooth.tolerance_px"),
        ({"smooth": "yes"}, "smooth"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidRequest) as e:
            choose(**kwargs)
        assert e.value.field == field, kwargs


def test_library_fallbacks_go_to_the_log(caplog):
    """buildingregulariser returns a part unchanged (with a warning) when its result would overlap it with
    IoU < 0.1 (here a 2 × 1 px speck at the default 2 px tolerance); that warning reaches the samgis.vector log,
    and the part comes back as it was."""
    import logging

    speck = shapely.box(0, 0, 2, 1)
    with caplog.at_level(logging.WARNING, logger="samgis.vector"):
        got = apply(speck, Regularize())
    assert got.is_valid and got.equals(speck)
    assert any(r.getMessage().startswith("buildingregulariser: ") and "original" in r.getMessage()
               for r in caplog.records)


def test_interactive_answers_have_a_vertex_budget():
    """Outlines over the budget are refused (naming the option) before any library work; none when off."""
    from samgis.geo.tiles import Window
    from samgis.vector.polygons import px_geometries_to_features
    from samgis.vector.postprocess import ANSWER_MAX_VERTICES, check_budget

    outline = pixel_polygons(raster(rotated_rect(9.0), 128))[0]
    n = shapely.get_num_coordinates(outline)
    check_budget([outline, None], Smooth(), max_vertices=n)  # at the budget: fine
    check_budget([outline], None, max_vertices=1)  # no step: nothing to bound
    with pytest.raises(InvalidRequest) as e:
        check_budget([outline, outline], Regularize(), max_vertices=2 * n - 1)
    assert e.value.field == "regularize" and str(2 * n) in e.value.message
    transform = Window(17, 68000, 45000, tiles=1, tile_size=128).affine()
    with pytest.raises(InvalidRequest) as e:
        px_geometries_to_features([outline], [0.9], transform, postprocess=Smooth(), postprocess_max_vertices=n - 1)
    assert e.value.field == "smooth"
    assert len(px_geometries_to_features([outline], [0.9], transform, postprocess=Smooth(),
                                         postprocess_max_vertices=ANSWER_MAX_VERTICES)) == 1
