"""samgis.vector: masks → EPSG:4326 polygons, geodesic areas, GeoJSON / GeoPackage export."""

from __future__ import annotations

import doctest
import json

import affine
import geopandas as gpd
import mercantile
import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
from shapely.geometry import LinearRing, Polygon, box, shape

import samgis.vector.polygons
from samgis.errors import InvalidRequest
from samgis.vector import (
    feature_collection,
    geodesic_area_m2,
    geojson_bytes,
    geopackage_bytes,
    mask_to_geometry,
    masks_to_features,
    validate_feature_collection,
    write_geopackage,
)

TO_3857 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
# A 4x4-tile window at z=16 whose top-left tile is in central Europe (lng ~28.7, lat ~43.3).
ORIGIN = mercantile.Tile(x=38000, y=24000, z=16)


def window_transform(tile: mercantile.Tile = ORIGIN, size_px: int = 1024) -> affine.Affine:
    """Window px → EPSG:3857 for a tile-aligned window starting at `tile` (256 px tiles)."""
    ul = mercantile.xy_bounds(tile)
    res = (ul.right - ul.left) / 256
    return affine.Affine(res, 0.0, ul.left, 0.0, -res, ul.top)


def disk(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 < r**2


def to_3857(geom):
    return shapely.transform(geom, lambda xy: np.column_stack(TO_3857.transform(xy[:, 0], xy[:, 1])))


def square_fc(n: int = 2, **props) -> dict:
    masks = np.zeros((n, 64, 64), bool)
    for i in range(n):
        masks[i, 20 : 30 + i, 20:30] = True
    feats = masks_to_features(
        masks,
        np.linspace(0.9, 0.5, n),
        window_transform(),
        properties=props,
    )
    return feature_collection(feats)


# --- mask → geometry -----------------------------------------------------------------------


def test_square_bounds_exact_in_3857_and_lnglat_order():
    transform = window_transform()
    mask = np.zeros((1024, 1024), bool)
    mask[100:200, 300:450] = True  # rows 100..199, cols 300..449
    geom = mask_to_geometry(mask, transform, simplify_px=0)
    assert geom.geom_type == "Polygon" and geom.is_valid
    assert len(geom.exterior.coords) == 5

    x0, y1 = transform @ (300, 100)
    x1, y0 = transform @ (450, 200)
    # 1e-7 degree of rounding is at most ~1.1 cm of EPSG:3857 at this latitude.
    assert to_3857(geom).bounds == pytest.approx((x0, y0, x1, y1), abs=0.015)

    # lng/lat order: corners agree with mercantile's own inverse of the 3857 corners.
    west, south = mercantile.lnglat(x0, y0)
    east, north = mercantile.lnglat(x1, y1)
    assert geom.bounds == pytest.approx((west, south, east, north), abs=1.1e-7)
    lng, lat = np.asarray(geom.exterior.coords).T
    assert np.all((28 < lng) & (lng < 29)) and np.all((43 < lat) & (lat < 44))  # lng first, lat second


def test_pixel_edges_follow_window_tiles():
    """A mask covering exactly the window's second tile maps onto that tile's mercantile bounds."""
    mask = np.zeros((1024, 1024), bool)
    mask[0:256, 256:512] = True
    geom = mask_to_geometry(mask, window_transform(), simplify_px=1.0)
    b = mercantile.bounds(mercantile.Tile(ORIGIN.x + 1, ORIGIN.y, ORIGIN.z))
    assert geom.bounds == pytest.approx((b.west, b.south, b.east, b.north), abs=1.1e-7)


def test_coordinates_rounded_to_7_decimals_and_json_lists():
    mask = disk(256, 128.3, 100.7, 60)
    (feature,) = masks_to_features(mask[None], np.array([0.87654321]), window_transform(ORIGIN, 256))
    coords = np.array(feature["geometry"]["coordinates"][0])
    assert np.array_equal(coords, np.round(coords, 7))
    assert isinstance(feature["geometry"]["coordinates"][0][0], list)
    assert coords[0].tolist() == coords[-1].tolist()  # closed ring
    assert json.loads(json.dumps(feature)) == feature


def test_donut_keeps_hole_with_rfc7946_orientation():
    mask = disk(200, 100, 100, 80) & ~disk(200, 100, 100, 30)
    for simplify in (0, 1.0):
        geom = mask_to_geometry(mask, window_transform(ORIGIN, 200), simplify_px=simplify)
        assert geom.geom_type == "Polygon" and geom.is_valid
        assert len(geom.interiors) == 1
        assert geom.exterior.is_ccw
        assert not LinearRing(geom.interiors[0]).is_ccw


def test_two_blobs_give_one_multipolygon_with_ccw_parts():
    mask = disk(256, 60, 60, 30) | disk(256, 190, 180, 40)
    geom = mask_to_geometry(mask, window_transform(ORIGIN, 256))
    assert geom.geom_type == "MultiPolygon" and geom.is_valid
    assert len(geom.geoms) == 2
    assert all(p.exterior.is_ccw for p in geom.geoms)


def test_empty_mask_gives_no_geometry_and_no_feature():
    empty = np.zeros((64, 64), bool)
    assert mask_to_geometry(empty, window_transform()) is None
    full = np.zeros((64, 64), bool)
    full[10:20, 10:20] = True
    feats = masks_to_features(np.stack([empty, full, empty]), np.array([0.1, 0.2, 0.3]), window_transform())
    assert [f["properties"]["mask_index"] for f in feats] == [1]


def test_min_area_drops_small_parts_but_keeps_holes():
    mask = np.zeros((100, 100), bool)
    mask[10:60, 10:60] = True
    mask[30:32, 30:32] = False  # 4 px hole
    mask[80:83, 80:83] = True  # 9 px speck
    geom = mask_to_geometry(mask, window_transform(), simplify_px=0, min_area_px=10)
    assert geom.geom_type == "Polygon"
    assert len(geom.interiors) == 1
    assert mask_to_geometry(mask, window_transform(), simplify_px=0).geom_type == "MultiPolygon"
    assert mask_to_geometry(mask, window_transform(), min_area_px=10_000) is None


def test_simplify_reduces_vertices_and_keeps_shape():
    mask = disk(512, 256, 256, 150)
    transform = window_transform(ORIGIN, 512)
    exact = mask_to_geometry(mask, transform, simplify_px=0)
    simple = mask_to_geometry(mask, transform, simplify_px=1.0)
    n_exact, n_simple = shapely.get_num_coordinates(exact), shapely.get_num_coordinates(simple)
    assert n_simple < n_exact / 3
    iou = simple.intersection(exact).area / simple.union(exact).area
    assert iou > 0.98
    # Staircase outline: the exact area is the pixel count times the pixel area.
    px_area = transform.a * -transform.e
    assert to_3857(exact).area == pytest.approx(mask.sum() * px_area, rel=1e-5)


def test_random_masks_always_valid_and_oriented():
    rng = np.random.default_rng(1)
    for _ in range(5):
        noise = rng.random((128, 128)) < 0.45  # many diagonal touches, holes touching shells
        for simplify in (0, 1.0, 3.0):
            geom = mask_to_geometry(noise, window_transform(ORIGIN, 128), simplify_px=simplify)
            assert geom.is_valid, shapely.is_valid_reason(geom)
            assert geom.geom_type in ("Polygon", "MultiPolygon")
            for part in shapely.get_parts(geom):
                assert part.exterior.is_ccw
                assert not any(LinearRing(r).is_ccw for r in part.interiors)


def test_rounding_repairs_what_it_would_break():
    from samgis.vector.polygons import rounded

    # Two squares 3e-8 degrees apart: rounding to 1e-7 makes them share an edge (invalid MultiPolygon).
    near = shapely.MultiPolygon([box(10.0, 20.0, 10.00001, 20.00001), box(10.00001003, 20.0, 10.00002, 20.00001)])
    assert near.is_valid and not shapely.transform(near, lambda xy: np.round(xy, 7)).is_valid
    fixed = rounded(near)
    assert fixed.is_valid and fixed.area == pytest.approx(near.area, rel=1e-2)
    coords = shapely.get_coordinates(fixed)
    assert np.array_equal(coords, np.round(coords, 7))
    assert rounded(box(10.0, 20.0, 10.00000001, 20.00000001)) is None  # collapses below the grid


def test_features_properties_and_area():
    transform = window_transform()
    mask = np.zeros((1024, 1024), bool)
    mask[0:256, 0:256] = True  # exactly tile ORIGIN
    feats = masks_to_features(
        mask[None], np.array([0.912345678]), transform, properties={"zoom": 16, "model": "vit_b"}, first_index=3
    )
    (feat,) = feats
    assert feat["type"] == "Feature"
    props = feat["properties"]
    assert props["mask_index"] == 3 and props["score"] == 0.9123
    assert props["zoom"] == 16 and props["model"] == "vit_b"
    b = mercantile.bounds(ORIGIN)
    expected = geodesic_area_m2(box(b.west, b.south, b.east, b.north))
    assert props["area_m2"] == pytest.approx(expected, rel=1e-6)
    assert props["area_m2"] == round(props["area_m2"], 2)


def test_masks_to_features_rejects_mismatched_scores():
    with pytest.raises(ValueError):
        masks_to_features(np.zeros((2, 8, 8), bool), np.zeros(3), window_transform())


def test_doctests():
    result = doctest.testmod(samgis.vector.polygons)
    assert result.attempted >= 3 and result.failed == 0


# --- geodesic area --------------------------------------------------------------------------


@pytest.mark.parametrize("lat0", [0.0, 70.0])
def test_geodesic_area_of_one_square_km(lat0):
    geod = pyproj.Geod(ellps="WGS84")
    # Walk 1 km east and north along the ellipsoid from (10, lat0) to build a ~1 km square.
    lng_e, _, _ = geod.fwd(10.0, lat0, 90.0, 1000.0)
    _, lat_n, _ = geod.fwd(10.0, lat0, 0.0, 1000.0)
    square = Polygon([(10.0, lat0), (lng_e, lat0), (lng_e, lat_n), (10.0, lat_n)])
    assert geodesic_area_m2(square) == pytest.approx(1e6, rel=0.005)
    assert geodesic_area_m2(square.reverse()) == pytest.approx(geodesic_area_m2(square))


def test_feature_collection_foreign_members():
    fc = feature_collection([{"type": "Feature"}], samgis={"zoom": 17})
    assert fc == {"type": "FeatureCollection", "features": [{"type": "Feature"}], "samgis": {"zoom": 17}}


# --- export ---------------------------------------------------------------------------------


def test_geopackage_round_trip(tmp_path):
    fc = square_fc(3, zoom=16, source="OpenStreetMap.Mapnik")
    path = write_geopackage(fc, tmp_path / "out.gpkg", layer="segs")
    info = pyogrio.read_info(path, layer="segs")
    assert info["features"] == 3
    assert pyproj.CRS(info["crs"]) == pyproj.CRS("EPSG:4326")
    frame = gpd.read_file(path, layer="segs")
    assert frame.crs.to_epsg() == 4326
    assert frame["mask_index"].tolist() == [0, 1, 2]
    assert frame["score"].tolist() == [f["properties"]["score"] for f in fc["features"]]
    assert frame["area_m2"].tolist() == pytest.approx([f["properties"]["area_m2"] for f in fc["features"]])
    assert set(frame["source"]) == {"OpenStreetMap.Mapnik"}
    for geom, feat in zip(frame.geometry, fc["features"]):
        assert geom.equals_exact(shape(feat["geometry"]), tolerance=1e-9)


def test_geopackage_bytes_mixed_types_and_geometries(tmp_path):
    ring = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    fc = feature_collection(
        [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
             "properties": {"label": 1, "note": "a", "tags": {"k": [1, 2]}, "fid": 7, "Name": "x", "name": "y"}},
            {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[ring]]},
             "properties": {"label": "building", "flag": True}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [2.0, 3.0]}, "properties": None},
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
        ]
    )
    data = geopackage_bytes(fc, layer="edits")
    assert data[:16] == b"SQLite format 3\x00"
    path = tmp_path / "x.gpkg"
    path.write_bytes(data)
    frame = gpd.read_file(path, layer="edits")
    assert len(frame) == 4
    assert frame["label"].tolist()[:2] == ["1", "building"]  # mixed int/str column coerced to text
    assert json.loads(frame["tags"][0]) == {"k": [1, 2]}
    assert {"fid_", "Name", "name_2"} <= set(frame.columns)
    assert list(frame.geom_type) == ["Polygon", "MultiPolygon", "Point", "LineString"]


def test_geojson_bytes_compact_utf8():
    fc = feature_collection([], samgis={"source": "Ørsted", "score": np.float32(0.5)})
    data = geojson_bytes(fc)
    assert b" " not in data
    assert "Ørsted".encode() in data
    expected = {"type": "FeatureCollection", "features": [], "samgis": {"source": "Ørsted", "score": 0.5}}
    assert json.loads(data) == expected
    with pytest.raises(ValueError):
        geojson_bytes({"x": float("nan")})


POLY = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}


def one(geometry, **members) -> dict:
    """A FeatureCollection holding one Feature with `geometry`."""
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": geometry, **members}]}


@pytest.mark.parametrize(
    ("fc", "field", "words"),
    [
        ([], "type", "FeatureCollection"),
        ({"type": "Feature", "geometry": POLY}, "type", "FeatureCollection"),
        ({"type": "FeatureCollection"}, "features", "array"),
        ({"type": "FeatureCollection", "features": []}, "features", "no features to export"),
        ({"type": "FeatureCollection", "features": [POLY]}, "features[0].type", "Feature"),
        (one(None), "features[0].geometry", "missing geometry"),
        (
            feature_collection([{"type": "Feature", "geometry": g} for g in (POLY, {"type": "Circle"})]),
            "features[1].geometry.type",
            "unsupported geometry type 'Circle'",
        ),
        (one({"type": "Point"}), "features[0].geometry.coordinates", "missing"),
        (one({"type": "Point", "coordinates": ["a", 1]}), "features[0].geometry.coordinates", "finite numbers"),
        (one({"type": "Point", "coordinates": [3e6, 5e6]}), "features[0].geometry.coordinates", "EPSG:4326"),
        (
            one({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}),
            "features[0].geometry.coordinates",
            "closed",
        ),
        (
            one({"type": "Polygon", "coordinates": [[0, 0], [1, 0]]}),
            "features[0].geometry.coordinates[0][0]",
            "position",
        ),
        (one({"type": "LineString", "coordinates": [[0, 0]]}), "features[0].geometry.coordinates", "at least 2"),
        (one(POLY, properties=[1]), "features[0].properties", "object"),
        (one(POLY, properties={"a": {"b": [1, float("nan")]}}), "features[0].properties.a.b[1]", "nan"),
        ({**one(POLY), "samgis": {"t": float("inf")}}, "samgis.t", "inf"),
    ],
)
def test_validate_feature_collection_rejects(fc, field, words):
    with pytest.raises(InvalidRequest) as err:
        validate_feature_collection(fc)
    assert err.value.field == field
    assert words in str(err.value)


def test_validate_accepts_our_output_and_all_simple_types():
    validate_feature_collection(square_fc(2))
    for geometry in (
        {"type": "Point", "coordinates": [1, 2, 3]},
        {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
        {"type": "MultiLineString", "coordinates": [[[1, 2], [3, 4]]]},
        POLY,
        {"type": "MultiPolygon", "coordinates": [POLY["coordinates"]]},
    ):
        validate_feature_collection(feature_collection([{"type": "Feature", "geometry": geometry, "properties": {}}]))


def test_write_geopackage_validates_first(tmp_path):
    with pytest.raises(InvalidRequest, match="no features"):
        write_geopackage(feature_collection([]), tmp_path / "x.gpkg")
    assert not (tmp_path / "x.gpkg").exists()


def _random_masks(seed: int, n: int):
    """Small masks of every texture: sparse and dense noise (many corner-only touches), dilated blobs,
    their complements (holes touching the crop border)."""
    import cv2

    rng = np.random.default_rng(seed)
    for trial in range(n):
        h, w = rng.integers(1, 48, 2)
        m = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        if trial % 3 == 0:
            m = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if trial % 5 == 0:
            m = ~m
        if m.any():
            yield m


def test_pixel_polygons_equal_gdals_4_connected_outlines():
    """The OpenCV tracer (and its GDAL fallback for corner-touching regions) gives GDAL's polygons: same
    regions, same area, same corners."""
    from samgis.vector.polygons import _gdal_polygons, pixel_polygons

    for m in _random_masks(7, 400):
        ours, ref = pixel_polygons(m), _gdal_polygons(m, 0, 0)
        assert shapely.is_valid(ours).all()
        assert len(ours) == len(ref)
        assert shapely.area(ours).sum() == m.sum()
        assert shapely.union_all(ours).symmetric_difference(shapely.union_all(ref)).area == 0
        assert shapely.get_num_coordinates(ours).sum() == shapely.get_num_coordinates(ref).sum()


def test_pixel_polygons_fast_path_keeps_holes_and_offsets(monkeypatch):
    from samgis.vector import polygons

    mask = np.zeros((40, 50), bool)
    mask[5:25, 10:40] = True
    mask[10:15, 20:30] = False  # hole
    mask[30:35, 2:4] = True      # second part
    called = []
    real = polygons._gdal_polygons
    monkeypatch.setattr(polygons, "_gdal_polygons", lambda *a: called.append(a) or real(*a))
    parts = sorted(polygons.pixel_polygons(mask), key=lambda p: p.area)
    assert not called  # nothing touches at a corner: the OpenCV path answered
    assert [p.bounds for p in parts] == [(2.0, 30.0, 4.0, 35.0), (10.0, 5.0, 40.0, 25.0)]
    assert len(parts[1].interiors) == 1 and Polygon(parts[1].interiors[0]).bounds == (20.0, 10.0, 30.0, 15.0)
    assert shapely.get_num_coordinates(parts[1]) == 10  # 4 corners per ring, each closed


def test_simplify_parts_keeps_what_douglas_peucker_would_lose():
    from samgis.vector.polygons import pixel_polygons, simplify_parts

    mask = np.zeros((64, 64), bool)
    mask[10:11, 5:60] = True                  # one pixel thin: plain Douglas-Peucker collapses it
    mask[20:60, 10:50] = True
    mask[30:31, 30:31] = False                 # one-pixel hole
    parts = pixel_polygons(mask)
    plain = shapely.simplify(parts, 1.5, preserve_topology=False)
    assert shapely.is_empty(plain).any() or (shapely.get_num_interior_rings(plain) == 0).all()  # what it'd lose
    out = simplify_parts(parts, 1.5)
    assert len(out) == len(parts)
    assert shapely.is_valid(out).all() and not shapely.is_empty(out).any()
    assert (shapely.get_num_interior_rings(out) == shapely.get_num_interior_rings(parts)).all()
