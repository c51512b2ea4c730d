"""Stitching automatic masks across overlapping windows (samgis.vector.stitch) on a labelled pixel world."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage

from samgis.vector.polygons import pixel_polygons
from samgis.vector.stitch import Lattice, pieces_bytes, pieces_from_bytes, stitch, window_pieces

SIZE, OVERLAP = 64, 16  # stride 48: windows at 0, 48, 96 → the world is 160 px square with 3 x 3 windows


def world() -> np.ndarray:
    """(160, 160) int labels, 0 background: shapes placed across seams, corners and in overlaps."""
    lab = np.zeros((160, 160), np.int32)
    lab[70:80, 5:155] = 1  # a long band across all three window columns
    lab[40:62, 40:62] = 2  # a field on the corner of four windows (overlaps 48–64 both ways)
    lab[3:9, 50:60] = 3  # a small building inside the overlap of windows (0, 0) and (1, 0)
    lab[100:110, 60:66] = 4  # cut by window (0, 2)'s right edge at 64, whole in window (1, 2)
    lab[120:150, 10:30] = 5  # inside one window's core only
    lab[20:30, 100:140] = 6  # an L across the x-seam at 112
    lab[20:60, 100:108] = 6
    return lab


def region_records(labels: np.ndarray) -> list[dict]:
    """Automatic-mask records: every 4-connected region of one label in a (size, size) window."""
    out = []
    for v in np.unique(labels):
        comp, n = ndimage.label(labels == v)
        for k in range(1, n + 1):
            out.append({"segmentation": comp == k, "predicted_iou": 0.9 + 0.001 * v, "stability_score": 0.97})
    return out


def run(lab: np.ndarray, lattice: Lattice, skip=()):
    def windows():
        for i, j in lattice.windows():
            if (i, j) in skip:
                continue
            c0, r0 = lattice.origin(i, j)
            yield (i, j), window_pieces(lattice, (i, j), region_records(lab[r0:r0 + SIZE, c0:c0 + SIZE]))

    return list(stitch(lattice, windows()))


def truth(lab: np.ndarray, v: int):
    parts = pixel_polygons(lab == v)
    return shapely.union_all(parts)


def test_lattice_cover_and_cores_tile_the_area():
    lat = Lattice.cover((0, 0, 160, 160), SIZE, OVERLAP)
    assert (lat.nx, lat.ny, lat.stride) == (3, 3, 48)
    cores = [shapely.box(*lat.core(i, j)) for i, j in lat.windows()]
    assert shapely.union_all(cores).equals(shapely.box(0, 0, 160, 160))
    assert sum(c.area for c in cores) == 160 * 160  # no overlaps
    with pytest.raises(ValueError):
        Lattice(0, 0, 1, 1, size=64, overlap=64)


def test_every_shape_comes_back_once_and_exact():
    lab = world()
    lat = Lattice.cover((0, 0, 160, 160), SIZE, OVERLAP)
    objects = run(lab, lat)
    shapes = {v: truth(lab, v) for v in range(1, 7)}
    matched = {}
    for obj in objects:
        hits = [v for v, t in shapes.items() if obj.geometry.intersects(t) and obj.geometry.intersection(t).area > 0]
        if not hits:
            assert obj.geometry.equals(truth(lab, 0))  # the background, once, whole
            continue
        assert len(hits) == 1
        assert hits[0] not in matched, f"shape {hits[0]} came back twice"
        matched[hits[0]] = obj
        assert obj.geometry.equals(shapes[hits[0]]), hits[0]
    assert set(matched) == set(shapes)
    assert len(objects) == len(shapes) + 1
    assert matched[1].window_count == 3 and matched[2].window_count == 4
    assert matched[3].window_count == 2 and matched[5].window_count == 1
    assert matched[2].geometry.geom_type == "Polygon" and matched[1].geometry.geom_type == "Polygon"
    assert matched[4].score == pytest.approx(0.904) and matched[4].stability_score == pytest.approx(0.97)


def test_pieces_joined_across_seams_when_no_window_holds_the_whole():
    lab = world()
    lat = Lattice.cover((0, 0, 160, 160), SIZE, OVERLAP)
    # the band (1) is whole in no window: its pieces are cut to cores and joined into one polygon
    band = next(o for o in run(lab, lat) if o.geometry.contains(shapely.Point(5.5, 70.5)))
    assert band.geometry.geom_type == "Polygon" and band.geometry.equals(truth(lab, 1))


def test_objects_stream_out_row_by_row_and_order_is_checked():
    lab = world()
    lat = Lattice.cover((0, 0, 160, 160), SIZE, OVERLAP)
    produced = []

    def windows():
        for i, j in lat.windows():
            produced.append((i, j))
            c0, r0 = lat.origin(i, j)
            yield (i, j), window_pieces(lat, (i, j), region_records(lab[r0:r0 + SIZE, c0:c0 + SIZE]))

    it = stitch(lat, windows())
    first = next(it)
    assert first.geometry.equals(truth(lab, 3)) and len(produced) < 9  # out before the last row was read
    with pytest.raises(ValueError, match="row-major"):
        list(stitch(lat, [((1, 0), []), ((0, 0), [])]))


def test_missing_windows_and_serialisation_round_trip():
    lab = world()
    lat = Lattice.cover((0, 0, 160, 160), SIZE, OVERLAP)
    pieces = window_pieces(lat, (1, 1), region_records(lab[48:112, 48:112]))
    back = pieces_from_bytes(pieces_bytes(pieces))
    assert [(p.ij, p.index, p.bbox, p.whole, p.score) for p in back] == \
        [(p.ij, p.index, p.bbox, p.whole, p.score) for p in pieces]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(back, pieces))
    assert pieces_from_bytes(pieces_bytes([])) == []
    objects = run(lab, lat, skip={(0, 2)})  # shape 5 lies in window (0, 2) alone
    geoms = [o.geometry for o in objects]
    assert not any(g.intersects(truth(lab, 5)) and g.intersection(truth(lab, 5)).area > 0 for g in geoms)
    for v in (1, 2, 3, 6):
        assert sum(g.equals(truth(lab, v)) for g in geoms) == 1


def test_nested_masks_do_not_chain_objects():
    """A field and a pond inside it (two masks, like SAM's part and whole) in two windows; in their overlap the
    pond covers 90 % of the field, so pond and field pieces match with IoU 0.9 across the seam. Only mutual
    best matches join: the field and the pond come back as two objects, each whole."""
    lat = Lattice(0, 0, 2, 1, size=SIZE, overlap=OVERLAP)
    field = np.zeros((64, 112), bool)
    field[10:50, 30:100] = True
    pond = np.zeros_like(field)
    pond[12:48, 40:64] = True
    recs = lambda c0: [{"segmentation": field[:, c0:c0 + 64], "predicted_iou": 0.9},  # noqa: E731
                       {"segmentation": pond[:, c0:c0 + 64], "predicted_iou": 0.8}]
    objects = list(stitch(lat, [((0, 0), window_pieces(lat, (0, 0), recs(0))),
                                ((1, 0), window_pieces(lat, (1, 0), recs(48)))]))
    assert len(objects) == 2
    assert objects[0].geometry.equals(shapely.box(30, 10, 100, 50)) and objects[0].window_count == 2
    assert objects[1].geometry.equals(shapely.box(40, 12, 64, 48)) and objects[1].window_count == 2
