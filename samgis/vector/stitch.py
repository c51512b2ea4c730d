"""Stitching automatic masks of overlapping windows into one set of whole objects.

An area larger than a window is covered by a `Lattice` of square windows of `size` px that overlap their
neighbours by `overlap` px, all on one global pixel grid (e.g. Web-Mercator px at zoom z: pixels of
different windows coincide exactly). Each window's automatic masks become `Piece`s (`window_pieces`);
`stitch` (or `Stitcher`, fed one window at a time) takes the windows row by row and yields
`StitchedObject`s:

- pieces of neighbouring windows (diagonals too) whose masks agree inside the two windows' overlap
  (IoU there ≥ `match_iou`, each the other's best match) are one object (union-find, so an object over a
  4-window corner is one);
- an object that some window holds whole (its mask touches no window edge that has a lattice neighbour)
  is that whole mask: an object cut by one window's edge but whole in the neighbour's overlap keeps the
  whole, and the same object found whole in two windows comes back once;
- an object no window holds whole is the union of its pieces, each cut to its window's *core* (the
  window less half the overlap on every side with a neighbour; cores tile the lattice without gaps or
  overlaps), so pieces from both sides of a seam join edge to edge into one polygon.

Memory: `stitch` keeps the masks of the current and the previous lattice row only; pieces of older rows
whose object is still open keep just their polygons (`Piece.freeze`). An object is yielded as soon as no
later window can reach it. Geometry is in global px (rasterio
convention, pixel i spans [i, i + 1)), pixel edges exact; moving it to a CRS is the caller's business.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from samgis.vector.polygons import pixel_polygons

MATCH_IOU = 0.5
"""Default IoU, inside the overlap of two windows, above which their pieces are one object."""


@dataclass(frozen=True)
class Lattice:
    """`nx` x `ny` windows of `size` px square; window (i, j) has its NW pixel at global px
    (x0 + i * stride, y0 + j * stride), stride = size - overlap.

    >>> lat = Lattice(x0=100, y0=0, nx=3, ny=2, size=1024, overlap=128)
    >>> lat.stride, lat.origin(1, 1), lat.core(1, 0)
    (896, (996, 896), (1060, 0, 1956, 960))
    """

    x0: int
    y0: int
    nx: int
    ny: int
    size: int = 1024
    overlap: int = 128

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.overlap < self.size or self.nx < 1 or self.ny < 1:
            raise ValueError(f"bad lattice {self!r}: need size ≥ 1, 0 ≤ overlap < size, nx, ny ≥ 1")

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @classmethod
    def cover(cls, bounds: tuple[float, float, float, float], size: int = 1024, overlap: int = 128) -> "Lattice":
        """The smallest lattice whose windows cover `bounds` (col0, row0, col1, row1) global px, starting at
        the whole pixel holding (col0, row0).

        >>> Lattice.cover((10.5, 20.0, 2000.0, 900.0), 1024, 128)
        Lattice(x0=10, y0=20, nx=3, ny=1, size=1024, overlap=128)
        """
        x0, y0 = int(np.floor(bounds[0])), int(np.floor(bounds[1]))
        stride = size - overlap

        def count(span: float) -> int:
            return max(1, int(np.ceil((span - overlap) / stride)))

        return cls(x0, y0, count(bounds[2] - x0), count(bounds[3] - y0), size, overlap)

    def origin(self, i: int, j: int) -> tuple[int, int]:
        """(col, row) global px of window (i, j)'s NW pixel."""
        return self.x0 + i * self.stride, self.y0 + j * self.stride

    def rect(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(col0, row0, col1, row1) global px of window (i, j), ends exclusive."""
        c, r = self.origin(i, j)
        return c, r, c + self.size, r + self.size

    def core(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(col0, row0, col1, row1) global px of window (i, j)'s core: the window less the first half of the
        overlap on each side with a neighbour (ends exclusive); the cores of a lattice tile it exactly."""
        c0, r0, c1, r1 = self.rect(i, j)
        lo, hi = self.overlap // 2, self.overlap - self.overlap // 2
        return (c0 + (hi if i > 0 else 0), r0 + (hi if j > 0 else 0),
                c1 - (lo if i < self.nx - 1 else 0), r1 - (lo if j < self.ny - 1 else 0))

    def windows(self) -> list[tuple[int, int]]:
        """Every (i, j), row-major (the order `stitch` takes them in)."""
        return [(i, j) for j in range(self.ny) for i in range(self.nx)]


@dataclass(eq=False)
class Piece:
    """One automatic mask of window `ij`: `mask` (h, w) bool cropped to `bbox` (col0, row0, col1, row1)
    global px, ends exclusive; `whole` when it touches no window edge that has a lattice neighbour."""

    ij: tuple[int, int]
    index: int
    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    score: float
    stability_score: float
    whole: bool
    _uid: int = field(default=-1, repr=False)
    _core: list | None = field(default=None, repr=False)  # polygons once the mask is dropped
    _full: list | None = field(default=None, repr=False)

    def freeze(self, lattice: "Lattice") -> None:
        """Keep only the polygons stitching may need (core cut; whole outline if whole) and drop the mask."""
        if self.mask is None:
            return
        self._core = _piece_polygons(self, lattice.core(*self.ij))
        self._full = _piece_polygons(self) if self.whole else None
        self.mask = None


def window_pieces(lattice: Lattice, ij: tuple[int, int], records: list[dict]) -> list[Piece]:
    """`Piece`s of window `ij` from `Engine.generate` records (`segmentation` (size, size) bool window px,
    `predicted_iou`, `stability_score`); empty masks are left out."""
    i, j = ij
    c0, r0 = lattice.origin(i, j)
    n = lattice.size
    out = []
    for k, rec in enumerate(records):
        seg = np.asarray(rec["segmentation"], bool)
        if seg.shape != (n, n):
            raise ValueError(f"window {ij}: mask {k} is {seg.shape}, expected ({n}, {n})")
        rows, cols = np.flatnonzero(seg.any(axis=1)), np.flatnonzero(seg.any(axis=0))
        if rows.size == 0:
            continue
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        cut = (x0 == 0 and i > 0) or (y0 == 0 and j > 0) or (x1 == n and i < lattice.nx - 1) \
            or (y1 == n and j < lattice.ny - 1)
        out.append(Piece(ij, k, (c0 + x0, r0 + y0, c0 + x1, r0 + y1), seg[y0:y1, x0:x1].copy(),
                         float(rec.get("predicted_iou", 0.0)), float(rec.get("stability_score", 0.0)), not cut))
    return out


def pieces_bytes(pieces: list[Piece]) -> bytes:
    """The pieces of one window as the bytes of an .npz (masks bit-packed), for resumable jobs."""
    buf = io.BytesIO()
    arrays = {"meta": np.array([[*p.ij, p.index, *p.bbox, int(p.whole)] for p in pieces], np.int64).reshape(-1, 8),
              "scores": np.array([[p.score, p.stability_score] for p in pieces], np.float64).reshape(-1, 2)}
    for k, p in enumerate(pieces):
        arrays[f"m{k}"] = np.packbits(p.mask, axis=None)
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def pieces_from_bytes(data: bytes) -> list[Piece]:
    """Inverse of `pieces_bytes`."""
    with np.load(io.BytesIO(data)) as z:
        meta, scores = z["meta"], z["scores"]
        out = []
        for k, (m, s) in enumerate(zip(meta, scores)):
            i, j, index, c0, r0, c1, r1, whole = (int(v) for v in m)
            h, w = r1 - r0, c1 - c0
            mask = np.unpackbits(z[f"m{k}"], count=h * w).astype(bool).reshape(h, w)
            out.append(Piece((i, j), index, (c0, r0, c1, r1), mask, float(s[0]), float(s[1]), bool(whole)))
        return out


@dataclass
class StitchedObject:
    """One object: `geometry` Polygon / MultiPolygon in global px (pixel edges exact), the best `score` and
    `stability_score` of its pieces, `window_count` (windows holding a piece of it), `key` (its first piece's
    (row, col, index) of window, for a stable order)."""

    geometry: Polygon | MultiPolygon
    score: float
    stability_score: float
    window_count: int
    key: tuple[int, int, int]


def _overlap_iou(a: Piece, b: Piece, region: tuple[int, int, int, int]) -> float:
    """IoU of the masks of `a` and `b` inside `region` (col0, row0, col1, row1) global px."""

    def crop(p: Piece, box):
        c0, r0, c1, r1 = box
        return p.mask[r0 - p.bbox[1]:r1 - p.bbox[1], c0 - p.bbox[0]:c1 - p.bbox[0]]

    def meet(u, v):
        box = (max(u[0], v[0]), max(u[1], v[1]), min(u[2], v[2]), min(u[3], v[3]))
        return box if box[0] < box[2] and box[1] < box[3] else None

    ra, rb = meet(a.bbox, region), meet(b.bbox, region)
    if ra is None or rb is None:
        return 0.0
    na, nb = int(crop(a, ra).sum()), int(crop(b, rb).sum())
    both = meet(ra, rb)
    inter = int((crop(a, both) & crop(b, both)).sum()) if both is not None else 0
    union = na + nb - inter
    return inter / union if union else 0.0


def _piece_polygons(p: Piece, box: tuple[int, int, int, int] | None = None) -> list[Polygon]:
    """Polygons (global px) of `p`'s mask, cut to `box` (col0, row0, col1, row1) global px when given."""
    mask = p.mask
    c0, r0 = p.bbox[0], p.bbox[1]
    if box is not None:
        x0, y0 = max(box[0], p.bbox[0]), max(box[1], p.bbox[1])
        x1, y1 = min(box[2], p.bbox[2]), min(box[3], p.bbox[3])
        if x0 >= x1 or y0 >= y1:
            return []
        mask = mask[y0 - r0:y1 - r0, x0 - c0:x1 - c0]
        c0, r0 = x0, y0
    return [shapely.transform(g, lambda xy: xy + (c0, r0)) for g in pixel_polygons(mask)]


def _geometry(members: list[Piece], lattice: Lattice) -> Polygon | MultiPolygon | None:
    whole = [p for p in members if p.whole]
    if whole:
        best = min(whole, key=lambda p: (-p.score, p.ij[1], p.ij[0], p.index))
        parts = best._full if best.mask is None else _piece_polygons(best)
    else:
        parts = [g for p in members
                 for g in (p._core if p.mask is None else _piece_polygons(p, lattice.core(*p.ij)))]
    if not parts:
        return None
    geom = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    geom = shapely.normalize(shapely.simplify(geom, 0.0))  # drop the vertices seams leave on straight edges
    return geom if geom.geom_type in ("Polygon", "MultiPolygon") and not geom.is_empty else None


class Stitcher:
    """`stitch` as a reduce fed one window at a time: `push` each window's pieces in row-major order (windows
    may be missing) and get back the objects no later window can reach; `close` returns the rest.

    Holds the masks of the current and the previous lattice row and the polygons of open objects only, so a
    caller that pushes windows as they finish never holds a whole area.
    """

    def __init__(self, lattice: Lattice, match_iou: float = MATCH_IOU):
        self.lattice = lattice
        self.match_iou = match_iou
        self._parent: dict[int, int] = {}
        self._seen: dict[tuple[int, int], list[Piece]] = {}  # windows of the current and previous row
        self._open: list[Piece] = []
        self._uid = 0
        self._row: int | None = None
        self._last = (-1, -1)

    def _find(self, u: int) -> int:
        parent = self._parent
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    def _union(self, u: int, v: int) -> None:
        ru, rv = self._find(u), self._find(v)
        if ru != rv:
            self._parent[max(ru, rv)] = min(ru, rv)

    def _flush(self, before_row: int | None) -> list[StitchedObject]:
        """The groups none of whose pieces lie in a row ≥ `before_row` (all when None), in the order of their
        first piece."""
        groups: dict[int, list[Piece]] = {}
        for p in self._open:
            groups.setdefault(self._find(p._uid), []).append(p)
        keep: list[Piece] = []
        done = []
        for members in groups.values():
            if before_row is not None and any(p.ij[1] >= before_row for p in members):
                keep.extend(members)
            else:
                done.append(members)
        self._open = keep
        out = []
        for members in sorted(done, key=lambda ms: min(p._uid for p in ms)):
            geom = _geometry(members, self.lattice)
            first = min(members, key=lambda p: p._uid)
            if geom is not None:
                out.append(StitchedObject(geom, max(p.score for p in members),
                                          max(p.stability_score for p in members), len({p.ij for p in members}),
                                          (first.ij[1], first.ij[0], first.index)))
        return out

    def push(self, ij: tuple[int, int], pieces: list[Piece]) -> list[StitchedObject]:
        """Add window `ij`'s pieces (after every window before it in row-major order that has any); returns
        the objects completed by it. Raises ValueError for a window out of order."""
        lattice = self.lattice
        i, j = ij
        if (j, i) <= self._last:
            raise ValueError(f"windows must come in row-major order: {ij} after {self._last[::-1]}")
        self._last = (j, i)
        done: list[StitchedObject] = []
        if self._row is not None and j != self._row:
            done = self._flush(j - 1)  # rows before j - 1 can no longer be reached
            for k, v in self._seen.items():
                if k[1] < j - 1:  # no window to come overlaps these: polygons are all they still need
                    for p in v:
                        p.freeze(lattice)
            self._seen = {k: v for k, v in self._seen.items() if k[1] >= j - 1}
        self._row = j
        for p in pieces:
            p._uid = self._uid
            self._parent[self._uid] = self._uid
            self._uid += 1
        rect = lattice.rect(i, j)
        for nij in ((i - 1, j), (i - 1, j - 1), (i, j - 1), (i + 1, j - 1)):
            others = self._seen.get(nij)
            if not others:
                continue
            r2 = lattice.rect(*nij)
            region = (max(rect[0], r2[0]), max(rect[1], r2[1]), min(rect[2], r2[2]), min(rect[3], r2[3]))
            if region[0] >= region[2] or region[1] >= region[3]:
                continue
            iou = np.array([[_overlap_iou(a, b, region) for b in others] for a in pieces]).reshape(len(pieces),
                                                                                                  len(others))
            if iou.size == 0:
                continue
            # mutual best matches only: nested masks of one window (a part and its whole) never both join
            # the same neighbour piece, which would chain two objects into one
            best_b, best_a = iou.argmax(axis=1), iou.argmax(axis=0)
            for ka, kb in enumerate(best_b):
                if best_a[kb] == ka and iou[ka, kb] >= self.match_iou:
                    self._union(pieces[ka]._uid, others[kb]._uid)
        self._seen[ij] = pieces
        self._open.extend(pieces)
        return done

    def close(self) -> list[StitchedObject]:
        """Every object still open (call once, after the last window)."""
        self._seen = {}
        return self._flush(None)


def stitch(lattice: Lattice, windows: Iterable[tuple[tuple[int, int], list[Piece]]],
           match_iou: float = MATCH_IOU) -> Iterator[StitchedObject]:
    """Whole objects from the pieces of every window (module docstring), as soon as each is complete.

    `windows`: ((i, j), pieces) in row-major order (`Lattice.windows`); windows may be missing (nothing
    there). Objects come out in the order of their first piece. (`Stitcher` is the same, pushed.)
    """
    s = Stitcher(lattice, match_iou)
    for ij, pieces in windows:
        yield from s.push(ij, pieces)
    yield from s.close()
